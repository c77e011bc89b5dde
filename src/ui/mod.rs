//! The findings console: kaudit's own web UI (`/ui`) and JSON API (`/api`)
//! over the findings store, for security operations and auditors.
//!
//! It listens on its own address (`server.ui.listen`, loopback unless
//! told otherwise), over HTTPS when `server.ui.tls` is set, and is off
//! unless `server.ui.enabled`. Access takes the configured token: as a
//! bearer header for the API, or typed once into the login form, which
//! sets an `HttpOnly`, `SameSite=Strict` session cookie; with
//! `tls.client_ca`, a verified client certificate lets a client in too.
//!
//! Every audit-event string is attacker-chosen: pages escape everything
//! they render ([`pages`]), and every answer carries a strict
//! Content-Security-Policy (only the console's own script, which builds
//! rows with `textContent`; the one stylesheet by hash),
//! `X-Content-Type-Options: nosniff`, `frame-ancestors 'none'` and
//! `Cache-Control: no-store`. Changes (triage) are POSTs a page of another
//! site cannot make: the session cookie is `SameSite=Strict`, and a request
//! that says it comes from another site is refused. This module owns the
//! listener and sessions; `routes` access and routing; [`api`] the JSON
//! answers and the triage and export actions; [`pages`] the HTML.

pub mod api;
pub mod pages;
mod routes;

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::{Secret, UiConfig, resolve_secret};
use crate::store::Store;

/// How long a browser session lasts.
const SESSION_SECS: i64 = 12 * 3600;
/// Sessions kept at most (the oldest go first).
const MAX_SESSIONS: usize = 1000;
const COOKIE: &str = "kaudit_session";

/// What every request of the console shares.
pub struct Console {
    /// One read connection, used from blocking tasks.
    /// Reader connections (`storage.postgres.pool`, default 2): one page
    /// or export does not hold up the others.
    stores: Vec<Mutex<Store>>,
    next_store: std::sync::atomic::AtomicUsize,
    token: Option<Secret>,
    /// Session id → (expiry in Unix seconds, who signed in).
    sessions: Mutex<HashMap<String, (i64, String)>>,
    /// Cookies marked `Secure` (served over HTTPS).
    secure: bool,
    /// Signs exported bundles.
    signing_key: Option<ed25519_dalek::SigningKey>,
    /// One export at a time.
    exporting: Arc<tokio::sync::Semaphore>,
}

/// Connections served at once at most (more wait to be accepted).
const MAX_CONNECTIONS: usize = 256;

impl Console {
    /// The console over the store at `db`.
    ///
    /// # Errors
    /// A store that cannot be opened, a token that cannot be read, or no way
    /// in configured (neither a token nor client certificates).
    pub fn new(cfg: &UiConfig, db: &Path, pool: usize) -> Result<Console, String> {
        let token = resolve_secret(
            "server.ui.token",
            cfg.token.as_ref(),
            cfg.token_env.as_deref(),
            cfg.token_file.as_deref(),
        )?;
        let mtls = cfg.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        if token.as_ref().is_none_or(|t| t.expose().len() < 16) && !mtls {
            return Err(
                "server.ui needs a token of at least 16 characters (token, token_env or token_file) or tls.client_ca"
                    .into(),
            );
        }
        let signing_key = cfg
            .sign_key
            .as_deref()
            .map(|p| {
                crate::store::keys::read_signing_key(p)
                    .map_err(|e| format!("server.ui.sign_key {}: {e}", p.display()))
            })
            .transpose()?;
        let stores = (0..pool.clamp(1, 16))
            .map(|_| Store::open(db).map(Mutex::new).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Console {
            stores,
            next_store: std::sync::atomic::AtomicUsize::new(0),
            token,
            sessions: Mutex::new(HashMap::new()),
            secure: cfg.tls.is_some() || cfg.secure_cookie,
            signing_key,
            exporting: Arc::new(tokio::sync::Semaphore::new(1)),
        })
    }

    /// Runs `f` on the store off the async threads.
    async fn with_store<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Store) -> Result<T, crate::store::Error> + Send + 'static,
    ) -> Result<T, String> {
        self.with_store_any(move |s| f(s).map_err(|e| e.to_string()))
            .await
    }

    /// Runs `f` on the store off the async threads; `f`'s errors are
    /// messages.
    async fn with_store_any<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Store) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let n = me.stores.len();
            let first = me
                .next_store
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                % n;
            // A free connection if there is one, else wait for ours.
            let store = (0..n)
                .find_map(|k| me.stores[(first + k) % n].try_lock().ok())
                .map_or_else(|| me.stores[first].lock(), Ok)
                .map_err(|_| "the store connection is unusable".to_owned())?;
            f(&store)
        })
        .await
        .map_err(|e| e.to_string())?
    }

    fn token_matches(&self, given: &str) -> bool {
        self.token
            .as_ref()
            .is_some_and(|t| constant_time_eq(given.as_bytes(), t.expose().as_bytes()))
    }

    fn new_session(&self, actor: String) -> String {
        use rand_core::RngCore;
        let mut bytes = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut bytes);
        let id = hex::encode(bytes);
        let now = crate::timespec::now();
        if let Ok(mut s) = self.sessions.lock() {
            s.retain(|_, (exp, _)| *exp > now);
            if s.len() >= MAX_SESSIONS
                && let Some(oldest) = s.iter().min_by_key(|(_, e)| e.0).map(|(k, _)| k.clone())
            {
                s.remove(&oldest);
            }
            s.insert(id.clone(), (now + SESSION_SECS, actor));
        }
        id
    }

    /// Who signed in with session `id`, while it lasts.
    fn session_actor(&self, id: &str) -> Option<String> {
        let now = crate::timespec::now();
        self.sessions
            .lock()
            .ok()?
            .get(id)
            .filter(|(exp, _)| *exp > now)
            .map(|(_, a)| a.clone())
    }

    fn end_session(&self, id: &str) {
        if let Ok(mut s) = self.sessions.lock() {
            s.remove(id);
        }
    }
}

/// Binds the console's listener.
///
/// # Errors
/// The address, the TLS files or the console's settings.
pub async fn bind(
    cfg: &UiConfig,
    db: &Path,
    pool: usize,
) -> Result<(TcpListener, Option<TlsAcceptor>, Arc<Console>), String> {
    let console = Arc::new(Console::new(cfg, db, pool)?);
    let tls = match &cfg.tls {
        Some(t) => {
            Some(crate::source::webhook::acceptor(t).map_err(|e| format!("server.ui: {e}"))?)
        }
        None => None,
    };
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| format!("server.ui.listen {}: {e}", cfg.listen))?;
    Ok((listener, tls, console))
}

/// Serves until `stop` fires.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    console: Arc<Console>,
    mut stop: watch::Receiver<bool>,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, tls = tls.is_some(), "findings console listening");
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    while let Some((conn, peer)) = crate::server::accept(&listener, &mut stop).await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let console = console.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(conn)).await
                    {
                        Ok(Ok(stream)) => {
                            // Verified against tls.client_ca by the handshake.
                            let cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(|c| {
                                    crate::source::webhook::common_name(c.as_ref())
                                        .unwrap_or_else(|| "client certificate".into())
                                });
                            serve_conn(TokioIo::new(stream), console, cert).await;
                        }
                        _ => tracing::debug!(%peer, "console TLS handshake refused"),
                    }
                }
                None => serve_conn(TokioIo::new(conn), console, None).await,
            }
        });
    }
}

async fn serve_conn<I>(io: I, console: Arc<Console>, client_cert: Option<String>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let console = console.clone();
        let cert = client_cert.clone();
        async move { Ok::<_, Infallible>(routes::secured(routes::route(&console, cert, req).await)) }
    });
    let _ = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(io, svc)
        .await;
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
