//! The operations server (`server.listen`): `/healthz` (the process is up),
//! `/readyz` (every source connected and the store writable; the reasons
//! when not), `/metrics` (Prometheus text). Nothing sensitive is served
//! here; the webhook intake has its own listeners (`source::webhook`).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::daemon::engine::StoreHealth;
use crate::metrics::Metrics;
use crate::source::Readiness;

#[derive(Clone)]
pub struct Ops {
    pub metrics: Arc<Metrics>,
    pub store: Arc<StoreHealth>,
    pub sources: Arc<Readiness>,
}

/// The next connection, or `None` once `stop` fires (accept errors, such
/// as running out of file descriptors, are logged and waited out).
pub async fn accept(
    listener: &TcpListener,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    loop {
        tokio::select! {
            c = listener.accept() => match c {
                Ok(c) => return Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = stop.changed() => return None,
        }
    }
}

/// Serves on `listener` until `stop` fires.
pub async fn serve(listener: TcpListener, ops: Ops, mut stop: tokio::sync::watch::Receiver<bool>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "operations server listening");
    }
    while let Some((conn, _)) = accept(&listener, &mut stop).await {
        let ops = ops.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let ops = ops.clone();
                async move { Ok::<_, Infallible>(route(&ops, &req)) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(conn), svc)
                .await;
        });
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn route(ops: &Ops, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            let mut problems = Vec::new();
            if !ops.store.writable.load(Ordering::Relaxed) {
                let why = ops
                    .store
                    .last_error
                    .lock()
                    .ok()
                    .and_then(|e| e.clone())
                    .unwrap_or_else(|| "not writable".into());
                problems.push(format!("store: {why}"));
            }
            let mut fine = Vec::new();
            for (name, state) in ops.sources.all() {
                match state {
                    Ok(()) => fine.push(format!("source {name}: ok")),
                    Err(why) => problems.push(format!("source {name}: {why}")),
                }
            }
            if problems.is_empty() {
                text(StatusCode::OK, format!("ready\n{}\n", fine.join("\n")))
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready\n{}\n", problems.join("\n")),
                )
            }
        }
        "/metrics" => {
            let mut r = text(StatusCode::OK, ops.metrics.encode());
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}
