//! The webhook source: the target of kube-apiserver's
//! `--audit-webhook-config-file`, which POSTs `EventList` batches; the same
//! listener takes EKS Firehose HTTP-endpoint deliveries and GKE Pub/Sub
//! push requests (the decoder knows each by its shape; gzip bodies too).
//!
//! - TLS (rustls), with client certificates required when `tls.client_ca`
//!   is set; a bearer token is the other way to say who is posting.
//! - Each client identity (certificate subject CN, or token) may post only
//!   for its own clusters; the cluster comes from the path
//!   (`/audit/{cluster}`) or the source's `cluster`.
//! - A body over `max_body_bytes` is answered 413; a full pipeline 429 and
//!   a store that refuses commits 503, both with Retry-After (the API
//!   server retries; it drops a batch answered 413, hence the high limit).
//! - 200 only once the batch is committed; a batch delivered twice adds
//!   nothing (findings are keyed by cluster, auditID and rule).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{RawBatch, Readiness, Tx, Work};
use crate::config::{Secret, WebhookSource, resolve_secret};
use crate::daemon::engine::StoreHealth;
use crate::metrics::{Metrics, SourceReason};

/// Request bodies held in memory at once, per webhook source.
const BUDGET: usize = 256 << 20;
/// How long a TLS handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// How long reading a request body may take.
const BODY_WAIT: Duration = Duration::from_secs(60);
/// How long a request waits for its batch to be committed.
const COMMIT_WAIT: Duration = Duration::from_secs(30);

/// A client and the clusters it may post for.
struct Client {
    subject: Option<String>,
    token: Option<Secret>,
    clusters: Vec<String>,
}

struct Shared {
    /// Bodies in memory at once, in MiB: a request takes its share before
    /// its body is read, and is answered 429 when there is none left.
    budget: Arc<tokio::sync::Semaphore>,
    name: Arc<str>,
    cfg: WebhookSource,
    clients: Vec<Client>,
    firehose_key: Option<Secret>,
    tx: Tx,
    metrics: Arc<Metrics>,
    store: Arc<StoreHealth>,
}

/// Checks what `bind` would need, without binding: TLS files, secrets.
///
/// # Errors
/// A sentence naming what is wrong.
pub fn check(name: &str, cfg: &WebhookSource) -> Result<(), String> {
    if let Some(t) = &cfg.tls {
        acceptor(t).map_err(|e| format!("source {name}: {e}"))?;
    }
    for (i, c) in cfg.clients.iter().enumerate() {
        resolve_secret(
            &format!("source {name}: clients[{i}].token"),
            c.token.as_ref(),
            c.token_env.as_deref(),
            c.token_file.as_deref(),
        )?;
    }
    resolve_secret(
        &format!("source {name}: firehose_access_key"),
        cfg.firehose_access_key.as_ref(),
        cfg.firehose_access_key_env.as_deref(),
        cfg.firehose_access_key_file.as_deref(),
    )?;
    Ok(())
}

/// Builds the TLS acceptor and the client table; binds the listener.
///
/// # Errors
/// A sentence naming what is wrong (a file, a secret, the address).
pub async fn bind(
    name: &str,
    cfg: WebhookSource,
    tx: Tx,
    metrics: Arc<Metrics>,
    store: Arc<StoreHealth>,
) -> Result<(TcpListener, Option<TlsAcceptor>, Arc<ServerState>), String> {
    let tls = match &cfg.tls {
        Some(t) => Some(acceptor(t).map_err(|e| format!("source {name}: {e}"))?),
        None => None,
    };
    let mut clients = Vec::new();
    for (i, c) in cfg.clients.iter().enumerate() {
        let token = resolve_secret(
            &format!("source {name}: clients[{i}].token"),
            c.token.as_ref(),
            c.token_env.as_deref(),
            c.token_file.as_deref(),
        )?;
        clients.push(Client {
            subject: c.subject.clone(),
            token,
            clusters: c.clusters.iter().map(|c| c.to_ascii_lowercase()).collect(),
        });
    }
    let firehose_key = resolve_secret(
        &format!("source {name}: firehose_access_key"),
        cfg.firehose_access_key.as_ref(),
        cfg.firehose_access_key_env.as_deref(),
        cfg.firehose_access_key_file.as_deref(),
    )?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| format!("source {name}: listen {}: {e}", cfg.listen))?;
    let budget_mib = (BUDGET.max(cfg.max_body_bytes) >> 20).max(1);
    let state = Arc::new(ServerState(Shared {
        budget: Arc::new(tokio::sync::Semaphore::new(budget_mib)),
        name: name.into(),
        cfg,
        clients,
        firehose_key,
        tx,
        metrics,
        store,
    }));
    Ok((listener, tls, state))
}

/// The state every connection shares.
pub struct ServerState(Shared);

/// Serves until `stop` fires.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<ServerState>,
    ready: Arc<Readiness>,
    mut stop: watch::Receiver<bool>,
) {
    ready.set(&state.0.name, Ok(()));
    tracing::info!(source = %state.0.name, listen = %state.0.cfg.listen, tls = tls.is_some(), "webhook listening");
    while let Some((conn, peer)) = crate::server::accept(&listener, &mut stop).await {
        let state = state.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => match tokio::time::timeout(HANDSHAKE, acceptor.accept(conn))
                    .await
                    .unwrap_or_else(|_| Err(std::io::Error::other("TLS handshake timed out")))
                {
                    Ok(stream) => {
                        let subject = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(|c| common_name(c.as_ref()));
                        serve_conn(TokioIo::new(stream), state, subject, stop).await;
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake refused");
                    }
                },
                None => serve_conn(TokioIo::new(conn), state, None, stop).await,
            }
        });
    }
}

/// Serves one connection; at shutdown, the request in progress finishes
/// and the connection closes (a kept-alive client cannot hold the daemon).
async fn serve_conn<I>(
    io: I,
    state: Arc<ServerState>,
    subject: Option<String>,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let state = state.clone();
        let subject = subject.clone();
        async move { Ok::<_, Infallible>(handle(&state.0, subject.as_deref(), req).await) }
    });
    // Slow clients (slowloris) are cut off: headers within 30 s.
    let conn = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

fn reply(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r
}

fn retry_after(status: StatusCode, secs: u32, body: &str) -> Response<Full<Bytes>> {
    let mut r = reply(status, body);
    r.headers_mut()
        .insert(hyper::header::RETRY_AFTER, secs.into());
    r
}

/// Answers one request. Firehose requires its JSON reply (`requestId`,
/// `timestamp`, `errorMessage`) on every answer, refusals included, or it
/// treats the answer as a failure of the endpoint.
async fn handle(
    s: &Shared,
    subject: Option<&str>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let Some(id) = header(&req, "x-amz-firehose-request-id") else {
        return answer(s, subject, req).await;
    };
    let r = answer(s, subject, req).await;
    let json = r
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json {
        return r;
    }
    let (parts, body) = r.into_parts();
    let text = body
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned())
        .unwrap_or_default();
    let mut out = firehose_reply(&id, parts.status, Some(&text));
    if let Some(v) = parts.headers.get(hyper::header::RETRY_AFTER) {
        out.headers_mut()
            .insert(hyper::header::RETRY_AFTER, v.clone());
    }
    out
}

async fn answer(
    s: &Shared,
    subject: Option<&str>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let refuse = |reason: &str| {
        s.metrics
            .webhook_rejected
            .get_or_create(&SourceReason {
                source: s.name.to_string(),
                reason: reason.to_owned(),
            })
            .inc();
    };
    if req.method() != Method::POST {
        refuse("method");
        return reply(StatusCode::METHOD_NOT_ALLOWED, "POST audit events here\n");
    }
    let Some(path_cluster) = match_path(&s.cfg.path, req.uri().path()) else {
        refuse("path");
        return reply(StatusCode::NOT_FOUND, "no such path\n");
    };
    let cluster = path_cluster
        .or_else(|| s.cfg.cluster.clone())
        .map(|c| c.to_ascii_lowercase());
    let firehose_request = header(&req, "x-amz-firehose-request-id");
    // Who is posting, and may they post for this cluster?
    if let Some(key) = &s.firehose_key
        && header(&req, "x-amz-firehose-access-key")
            .is_none_or(|k| !constant_time_eq(k.as_bytes(), key.expose().as_bytes()))
    {
        refuse("firehose-key");
        return firehose_or(firehose_request, StatusCode::UNAUTHORIZED, "bad access key");
    }
    if !s.clients.is_empty() {
        let token = header(&req, "authorization")
            .and_then(|a| a.strip_prefix("Bearer ").map(str::to_owned));
        let client = s.clients.iter().find(|c| match (&c.subject, &c.token) {
            (Some(want), _) => subject == Some(want.as_str()),
            (None, Some(t)) => token
                .as_deref()
                .is_some_and(|got| constant_time_eq(got.as_bytes(), t.expose().as_bytes())),
            (None, None) => false,
        });
        let Some(client) = client else {
            refuse("unauthenticated");
            return firehose_or(firehose_request, StatusCode::UNAUTHORIZED, "who are you?");
        };
        let allowed = client
            .clusters
            .iter()
            .any(|c| c == "*" || Some(c.as_str()) == cluster.as_deref());
        if !allowed {
            refuse("cluster");
            tracing::warn!(source = %s.name, subject, cluster = ?cluster, "a client posted for a cluster it is not bound to");
            return firehose_or(
                firehose_request,
                StatusCode::FORBIDDEN,
                "not allowed to post for this cluster",
            );
        }
    }
    if !s.store.writable.load(Ordering::Relaxed) {
        refuse("store");
        return retry_after(
            StatusCode::SERVICE_UNAVAILABLE,
            5,
            "the store is not writable\n",
        );
    }
    // The body, within the limit.
    let limit = s.cfg.max_body_bytes;
    if req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > limit)
    {
        refuse("too-large");
        return reply(StatusCode::PAYLOAD_TOO_LARGE, "body over the limit\n");
    }
    // This body's share of the memory budget (its announced length, or the
    // limit when it announces none), held until it is answered.
    let announced = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(limit);
    let mib = u32::try_from(announced.div_ceil(1 << 20).max(1)).unwrap_or(u32::MAX);
    let Ok(_share) = s.budget.clone().try_acquire_many_owned(mib) else {
        refuse("memory");
        return retry_after(StatusCode::TOO_MANY_REQUESTS, 1, "busy, retry\n");
    };
    let body = match tokio::time::timeout(BODY_WAIT, Limited::new(req.into_body(), limit).collect())
        .await
        .unwrap_or_else(|_| Err("body read timed out".into()))
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                refuse("too-large");
                return reply(StatusCode::PAYLOAD_TOO_LARGE, "body over the limit\n");
            }
            refuse("read");
            return reply(StatusCode::BAD_REQUEST, "could not read the body\n");
        }
    };
    let (done, wait) = oneshot::channel();
    let mut batch = RawBatch::one(
        s.name.clone(),
        cluster,
        body.to_vec(),
        format!("POST {}", subject.unwrap_or("-")),
    );
    batch.done = Some(done);
    batch.request_received = s.cfg.request_received;
    match s.tx.try_send(Work::Batch(batch)) {
        Ok(()) => {}
        Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
            refuse("busy");
            return retry_after(StatusCode::TOO_MANY_REQUESTS, 1, "busy, retry\n");
        }
        Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
            return retry_after(StatusCode::SERVICE_UNAVAILABLE, 5, "shutting down\n");
        }
    }
    match tokio::time::timeout(COMMIT_WAIT, wait).await {
        Ok(Ok(_)) => match firehose_request {
            Some(id) => firehose_reply(&id, StatusCode::OK, None),
            None => reply(StatusCode::OK, "{}\n"),
        },
        _ => {
            refuse("commit-timeout");
            retry_after(
                StatusCode::SERVICE_UNAVAILABLE,
                5,
                "not committed yet, retry\n",
            )
        }
    }
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Firehose wants JSON `{"requestId", "timestamp"[, "errorMessage"]}` in
/// every answer; other clients get plain text.
fn firehose_or(request: Option<String>, status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    match request {
        Some(id) => firehose_reply(&id, status, Some(msg)),
        None => reply(status, &format!("{msg}\n")),
    }
}

fn firehose_reply(id: &str, status: StatusCode, error: Option<&str>) -> Response<Full<Bytes>> {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut v = serde_json::json!({"requestId": id, "timestamp": ms});
    if let Some(e) = error {
        v["errorMessage"] = e.into();
    }
    let mut r = reply(status, &v.to_string());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Matches `path` against the template (`/audit/{cluster}`): `None` when it
/// does not match, `Some(cluster)` when it does.
fn match_path(template: &str, path: &str) -> Option<Option<String>> {
    match template.split_once("{cluster}") {
        None => (template == path).then_some(None),
        Some((pre, post)) => {
            let rest = path.strip_prefix(pre)?;
            let cluster = rest.strip_suffix(post)?;
            let ok = !cluster.is_empty()
                && cluster.len() <= 253
                && cluster
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            ok.then(|| Some(cluster.to_owned()))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The subject common name of a DER certificate.
pub(crate) fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

pub(crate) fn acceptor(t: &crate::config::TlsServer) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&t.cert)
        .map_err(|e| format!("tls.cert {}: {e}", t.cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.cert {}: {e}", t.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&t.key)
        .map_err(|e| format!("tls.key {}: {e}", t.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &t.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("tls.client_ca {}: {e}", ca.display()))?
            {
                let c = c.map_err(|e| format!("tls.client_ca {}: {e}", ca.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("tls.client_ca {}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("tls.client_ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls.cert/tls.key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            match_path("/audit/{cluster}", "/audit/prod"),
            Some(Some("prod".into()))
        );
        assert_eq!(match_path("/audit/{cluster}", "/audit/"), None);
        assert_eq!(match_path("/audit/{cluster}", "/audit/a/b"), None);
        assert_eq!(match_path("/audit", "/audit"), Some(None));
        assert_eq!(match_path("/audit", "/other"), None);
        assert_eq!(
            match_path("/c/{cluster}/events", "/c/eu-1/events"),
            Some(Some("eu-1".into()))
        );
    }

    #[test]
    fn constant_time() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
