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
//! Content-Security-Policy (no script, the one stylesheet by hash),
//! `X-Content-Type-Options: nosniff`, `frame-ancestors 'none'` and
//! `Cache-Control: no-store`. This module owns the listener, access and
//! routing; [`api`] the JSON answers; [`pages`] the HTML.

pub mod api;
pub mod pages;

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
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
    store: Mutex<Store>,
    token: Option<Secret>,
    /// Session id → expiry (Unix seconds).
    sessions: Mutex<HashMap<String, i64>>,
    /// Cookies marked `Secure` (served over HTTPS).
    secure: bool,
}

impl Console {
    /// The console over the store at `db`.
    ///
    /// # Errors
    /// A store that cannot be opened, a token that cannot be read, or no way
    /// in configured (neither a token nor client certificates).
    pub fn new(cfg: &UiConfig, db: &Path) -> Result<Console, String> {
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
        Ok(Console {
            store: Mutex::new(Store::open(db).map_err(|e| e.to_string())?),
            token,
            sessions: Mutex::new(HashMap::new()),
            secure: cfg.tls.is_some(),
        })
    }

    /// Runs `f` on the store off the async threads.
    async fn with_store<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Store) -> Result<T, crate::store::Error> + Send + 'static,
    ) -> Result<T, String> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let store = me
                .store
                .lock()
                .map_err(|_| "the store connection is unusable".to_owned())?;
            f(&store).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    fn token_matches(&self, given: &str) -> bool {
        self.token
            .as_ref()
            .is_some_and(|t| constant_time_eq(given.as_bytes(), t.expose().as_bytes()))
    }

    fn new_session(&self) -> String {
        use rand_core::RngCore;
        let mut bytes = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut bytes);
        let id = hex::encode(bytes);
        let now = crate::timespec::now();
        if let Ok(mut s) = self.sessions.lock() {
            s.retain(|_, exp| *exp > now);
            if s.len() >= MAX_SESSIONS
                && let Some(oldest) = s.iter().min_by_key(|(_, e)| **e).map(|(k, _)| k.clone())
            {
                s.remove(&oldest);
            }
            s.insert(id.clone(), now + SESSION_SECS);
        }
        id
    }

    fn session_valid(&self, id: &str) -> bool {
        let now = crate::timespec::now();
        self.sessions
            .lock()
            .is_ok_and(|s| s.get(id).is_some_and(|exp| *exp > now))
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
) -> Result<(TcpListener, Option<TlsAcceptor>, Arc<Console>), String> {
    let console = Arc::new(Console::new(cfg, db)?);
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
    while let Some((conn, peer)) = crate::server::accept(&listener, &mut stop).await {
        let console = console.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(conn)).await
                    {
                        Ok(Ok(stream)) => {
                            let cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .is_some_and(|c| !c.is_empty());
                            serve_conn(TokioIo::new(stream), console, cert).await;
                        }
                        _ => tracing::debug!(%peer, "console TLS handshake refused"),
                    }
                }
                None => serve_conn(TokioIo::new(conn), console, false).await,
            }
        });
    }
}

async fn serve_conn<I>(io: I, console: Arc<Console>, client_cert: bool)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let console = console.clone();
        async move { Ok::<_, Infallible>(secured(route(&console, client_cert, req).await)) }
    });
    let _ = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(io, svc)
        .await;
}

/// Who is asking: let in, or not.
fn authorized(console: &Console, client_cert: bool, req: &Request<Incoming>) -> bool {
    if client_cert {
        return true; // verified against tls.client_ca by the handshake
    }
    if let Some(token) =
        header(req, "authorization").and_then(|a| a.strip_prefix("Bearer ").map(str::to_owned))
        && console.token_matches(&token)
    {
        return true;
    }
    session_of(req).is_some_and(|id| console.session_valid(&id))
}

fn session_of(req: &Request<Incoming>) -> Option<String> {
    header(req, "cookie")?.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == COOKIE).then(|| v.to_owned())
    })
}

async fn route(
    console: &Arc<Console>,
    client_cert: bool,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/") => redirect("/ui"),
        (&Method::GET, "/ui/login") => html(StatusCode::OK, pages::login(None)),
        (&Method::POST, "/ui/login") => login(console, req).await,
        (&Method::POST, "/ui/logout") => {
            if let Some(id) = session_of(&req) {
                console.end_session(&id);
            }
            let mut r = redirect("/ui/login");
            r.headers_mut().insert(
                hyper::header::SET_COOKIE,
                hyper::header::HeaderValue::from_static(
                    "kaudit_session=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict",
                ),
            );
            r
        }
        (&Method::GET, "/api/openapi.json") => json(StatusCode::OK, &api::openapi()),
        _ if !authorized(console, client_cert, &req) => {
            if path.starts_with("/api/") {
                let mut r = json(
                    StatusCode::UNAUTHORIZED,
                    &serde_json::json!({"error": "a bearer token is required"}),
                );
                r.headers_mut().insert(
                    hyper::header::WWW_AUTHENTICATE,
                    hyper::header::HeaderValue::from_static("Bearer"),
                );
                r
            } else {
                redirect("/ui/login")
            }
        }
        (&Method::GET, p) if p.starts_with("/api/") => {
            match api::answer(console, p, &query).await {
                Ok(v) => json(StatusCode::OK, &v),
                Err(api::ApiError::NotFound) => json(
                    StatusCode::NOT_FOUND,
                    &serde_json::json!({"error": "no such resource"}),
                ),
                Err(api::ApiError::Bad(e)) => {
                    json(StatusCode::BAD_REQUEST, &serde_json::json!({"error": e}))
                }
                Err(api::ApiError::Store(e)) => {
                    tracing::warn!(error = %e, "console: store read failed");
                    json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &serde_json::json!({"error": "the store cannot be read now"}),
                    )
                }
            }
        }
        (&Method::GET, p) if p == "/ui" || p.starts_with("/ui/") => {
            match pages::page(console, p, &query).await {
                Ok(body) => html(StatusCode::OK, body),
                Err(api::ApiError::NotFound) => {
                    html(StatusCode::NOT_FOUND, pages::message("Not found"))
                }
                Err(api::ApiError::Bad(e)) => html(StatusCode::BAD_REQUEST, pages::message(&e)),
                Err(api::ApiError::Store(e)) => {
                    tracing::warn!(error = %e, "console: store read failed");
                    html(
                        StatusCode::SERVICE_UNAVAILABLE,
                        pages::message("The store cannot be read now."),
                    )
                }
            }
        }
        _ => html(StatusCode::NOT_FOUND, pages::message("Not found")),
    }
}

/// The login form: the token, once; a session cookie in return.
async fn login(console: &Arc<Console>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match Limited::new(req.into_body(), 4096).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return html(
                StatusCode::BAD_REQUEST,
                pages::login(Some("The form could not be read.")),
            );
        }
    };
    let token = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if !console.token_matches(&token) {
        // Slows guessing down; the token itself is long.
        tokio::time::sleep(Duration::from_millis(500)).await;
        tracing::warn!("console: a login with a wrong token");
        return html(StatusCode::UNAUTHORIZED, pages::login(Some("Wrong token.")));
    }
    let id = console.new_session();
    let mut r = redirect("/ui");
    let cookie = format!(
        "{COOKIE}={id}; Max-Age={SESSION_SECS}; Path=/; HttpOnly; SameSite=Strict{}",
        if console.secure { "; Secure" } else { "" }
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(hyper::header::SET_COOKIE, v);
    }
    r
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn redirect(to: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut().insert(
        hyper::header::LOCATION,
        hyper::header::HeaderValue::from_static(to),
    );
    r
}

fn html(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// The headers every answer carries.
fn secured(mut r: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let csp = format!(
        "default-src 'none'; style-src '{}'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        pages::style_hash()
    );
    let h = r.headers_mut();
    if let Ok(v) = hyper::header::HeaderValue::from_str(&csp) {
        h.insert(hyper::header::CONTENT_SECURITY_POLICY, v);
    }
    for (k, v) in [
        (hyper::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (hyper::header::X_FRAME_OPTIONS, "DENY"),
        (hyper::header::REFERRER_POLICY, "no-referrer"),
        (hyper::header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(k, hyper::header::HeaderValue::from_static(v));
    }
    r
}
