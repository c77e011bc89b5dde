//! Access and routing of the console: who is asking (a client
//! certificate, the bearer token, or a session from the login form), the
//! refusal of changes a page of another site asks for, the routes, and the
//! headers every answer carries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};

use super::api::{self, ApiError};
use super::{COOKIE, Console, SESSION_SECS, pages};

/// Who is asking, once let in.
#[derive(Debug, Clone)]
pub struct Who {
    /// The name triage is recorded under: the session's, the client
    /// certificate's; none for a bare bearer token (the request names one).
    pub actor: Option<String>,
    /// Let in by something a browser sends by itself (the session cookie,
    /// a client certificate): what its changes must be keyed to, the CSRF
    /// token being derived from it. None for the bearer token.
    pub session: Option<String>,
}

/// The CSRF token of a session: derived from it, so nothing more is kept;
/// the pages put it in their forms (`pages::CSRF_MARK`).
fn csrf_token(session: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("kaudit-csrf\0{session}").as_bytes());
    hex::encode(&d[..16])
}

/// A change made with a session cookie must carry its CSRF token (a form
/// field, or the `X-Kaudit-Csrf` header for scripts).
fn csrf_ok(who: &Who, given: Option<&str>) -> bool {
    match &who.session {
        None => true,
        Some(s) => {
            given.is_some_and(|g| super::constant_time_eq(g.as_bytes(), csrf_token(s).as_bytes()))
        }
    }
}

fn authorized(
    console: &Console,
    client_cert: Option<&str>,
    req: &Request<Incoming>,
) -> Option<Who> {
    if let Some(cn) = client_cert {
        return Some(Who {
            actor: Some(cn.to_owned()),
            session: Some(format!("cert:{cn}")),
        });
    }
    if let Some(token) =
        header(req, "authorization").and_then(|a| a.strip_prefix("Bearer ").map(str::to_owned))
        && console.token_matches(&token)
    {
        return Some(Who {
            actor: None,
            session: None,
        });
    }
    let session = session_of(req)?;
    let actor = console.session_actor(&session)?;
    Some(Who {
        actor: Some(actor),
        session: Some(session),
    })
}

fn session_of(req: &Request<Incoming>) -> Option<String> {
    header(req, "cookie")?.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == COOKIE).then(|| v.to_owned())
    })
}

/// A change asked for by a page of another site (as the browser says):
/// `Sec-Fetch-Site` when the browser sends it, else an `Origin` naming
/// another host (`null`, sent under `Referrer-Policy: no-referrer`, says
/// nothing).
fn cross_site(req: &Request<Incoming>) -> bool {
    if let Some(site) = header(req, "sec-fetch-site") {
        return site != "same-origin" && site != "none";
    }
    match (header(req, "origin"), header(req, "host")) {
        (Some(origin), _) if origin == "null" => false,
        (Some(origin), Some(host)) => {
            let origin_host = origin
                .split_once("://")
                .map_or(origin.as_str(), |(_, rest)| rest);
            origin_host != host
        }
        (Some(_), None) => true,
        _ => false,
    }
}

/// Answers one request; the pages' forms get the session's CSRF token.
pub async fn route(
    console: &Arc<Console>,
    client_cert: Option<String>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let token = match &client_cert {
        Some(cn) => csrf_token(&format!("cert:{cn}")),
        None => session_of(&req)
            .filter(|s| console.session_actor(s).is_some())
            .map(|s| csrf_token(&s))
            .unwrap_or_default(),
    };
    let r = route_inner(console, client_cert, req).await;
    let is_html = r
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    if !is_html {
        return r;
    }
    let (parts, body) = r.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).replace(pages::CSRF_MARK, &token);
    Response::from_parts(parts, Full::new(Bytes::from(text)))
}

async fn route_inner(
    console: &Arc<Console>,
    client_cert: Option<String>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    if req.method() == Method::POST && cross_site(&req) {
        return html(
            StatusCode::FORBIDDEN,
            pages::message("Refused: the request came from another site."),
        );
    }
    let who = authorized(console, client_cert.as_deref(), &req);
    match (req.method(), path.as_str()) {
        (&Method::GET, "/") => redirect_to("/ui"),
        (&Method::GET, "/ui/login") => html(StatusCode::OK, pages::login(None)),
        (&Method::POST, "/ui/login") => login(console, req).await,
        (&Method::POST, "/ui/logout") => {
            let session = session_of(&req);
            let body = match read_body(req, 4096).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let given = form_field(&body, "csrf");
            if let Some(id) = session {
                let who = Who {
                    actor: None,
                    session: Some(id.clone()),
                };
                if !csrf_ok(&who, given.as_deref()) {
                    return csrf_refused();
                }
                console.end_session(&id);
            }
            let mut r = redirect_to("/ui/login");
            r.headers_mut().insert(
                hyper::header::SET_COOKIE,
                hyper::header::HeaderValue::from_static(
                    "kaudit_session=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict",
                ),
            );
            r
        }
        (&Method::GET, "/api/openapi.json") => json(StatusCode::OK, &api::openapi()),
        (&Method::GET, "/ui/app.js") => {
            let mut r = Response::new(Full::new(Bytes::from_static(pages::APP_JS.as_bytes())));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/javascript; charset=utf-8"),
            );
            r
        }
        _ if who.is_none() => {
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
                redirect_to("/ui/login")
            }
        }
        (&Method::POST, p) if p.starts_with("/api/findings/") && p.ends_with("/triage") => {
            let id = middle(p, "/api/findings/", "/triage");
            // A client certificate also serves API clients, which no page
            // could have made the request for: only a request a browser
            // marks (Origin, Sec-Fetch-Site) needs the token then.
            let from_browser =
                header(&req, "origin").is_some() || header(&req, "sec-fetch-site").is_some();
            if who.as_ref().is_some_and(|w| {
                let cert = w.session.as_deref().is_some_and(|s| s.starts_with("cert:"));
                (!cert || from_browser) && !csrf_ok(w, header(&req, "x-kaudit-csrf").as_deref())
            }) {
                return csrf_refused();
            }
            let body = match read_body(req, 16 * 1024).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let actor = who.and_then(|w| w.actor);
            match api::triage_json(console, &id, &body, actor).await {
                Ok(v) => json(StatusCode::CREATED, &v),
                Err(e) => api_error(e),
            }
        }
        (&Method::POST, p) if p.starts_with("/ui/findings/") && p.ends_with("/triage") => {
            let id = middle(p, "/ui/findings/", "/triage");
            let body = match read_body(req, 16 * 1024).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let form: HashMap<String, String> =
                form_urlencoded::parse(&body).into_owned().collect();
            if who
                .as_ref()
                .is_some_and(|w| !csrf_ok(w, form.get("csrf").map(String::as_str)))
            {
                return csrf_refused();
            }
            let actor = who.and_then(|w| w.actor).unwrap_or_else(|| "token".into());
            match api::triage(console, &id, &form, &actor).await {
                Ok(_) => redirect_to(&format!("/ui/findings/{id}")),
                Err(e) => page_error(e),
            }
        }
        // A browser (cookie, certificate) exports through the form, whose
        // POST carries the CSRF token; the GET is for API clients.
        (&Method::GET, "/api/export")
            if who.as_ref().is_some_and(|w| match w.session.as_deref() {
                None => false,
                // An API client with a certificate; a browser marks its requests.
                Some(s) if s.starts_with("cert:") => header(&req, "sec-fetch-site").is_some(),
                Some(_) => true,
            }) =>
        {
            page_error(ApiError::Bad(
                "export from the Export page (or with the bearer token)".into(),
            ))
        }
        (&Method::POST, "/ui/export") | (&Method::GET, "/api/export") => {
            let q = if req.method() == Method::POST {
                let body = match read_body(req, 16 * 1024).await {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                if who
                    .as_ref()
                    .is_some_and(|w| !csrf_ok(w, form_field(&body, "csrf").as_deref()))
                {
                    return csrf_refused();
                }
                String::from_utf8_lossy(&body).into_owned()
            } else {
                query
            };
            match api::export(console, &q).await {
                Ok((name, bytes)) => download(&name, bytes),
                Err(e) => page_error(e),
            }
        }
        (&Method::GET, p) if p.starts_with("/api/") => {
            match api::answer(console, p, &query).await {
                Ok(v) => json(StatusCode::OK, &v),
                Err(e) => api_error(e),
            }
        }
        (&Method::GET, p) if p == "/ui" || p.starts_with("/ui/") => {
            match pages::page(console, p, &query).await {
                Ok(body) => html(StatusCode::OK, body),
                Err(e) => page_error(e),
            }
        }
        _ => html(StatusCode::NOT_FOUND, pages::message("Not found")),
    }
}

fn form_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn csrf_refused() -> Response<Full<Bytes>> {
    html(
        StatusCode::FORBIDDEN,
        pages::message("Refused: the form's CSRF token is missing or stale; reload the page."),
    )
}

/// `/api/findings/ID/triage` → `ID`.
fn middle(path: &str, prefix: &str, suffix: &str) -> String {
    path.strip_prefix(prefix)
        .and_then(|p| p.strip_suffix(suffix))
        .unwrap_or_default()
        .to_owned()
}

/// The login form: a name (what triage is recorded under) and the token,
/// once; a session cookie in return.
async fn login(console: &Arc<Console>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match read_body(req, 4096).await {
        Ok(b) => b,
        Err(_) => {
            return html(
                StatusCode::BAD_REQUEST,
                pages::login(Some("The form could not be read.")),
            );
        }
    };
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let token = form.get("token").cloned().unwrap_or_default();
    let name = api::clean(form.get("name").map_or("", String::as_str), 100);
    if !console.token_matches(&token) {
        // Slows guessing down; the token itself is long.
        tokio::time::sleep(Duration::from_millis(500)).await;
        tracing::warn!("console: a sign-in with a wrong token");
        return html(StatusCode::UNAUTHORIZED, pages::login(Some("Wrong token.")));
    }
    if name.is_empty() {
        return html(
            StatusCode::BAD_REQUEST,
            pages::login(Some("Give your name: triage is recorded under it.")),
        );
    }
    tracing::info!(actor = %name, "console: signed in");
    let id = console.new_session(name);
    let mut r = redirect_to("/ui");
    let cookie = format!(
        "{COOKIE}={id}; Max-Age={SESSION_SECS}; Path=/; HttpOnly; SameSite=Strict{}",
        if console.secure { "; Secure" } else { "" }
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(hyper::header::SET_COOKIE, v);
    }
    r
}

fn api_error(e: ApiError) -> Response<Full<Bytes>> {
    match e {
        ApiError::NotFound => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "no such resource"}),
        ),
        ApiError::Bad(e) => json(StatusCode::BAD_REQUEST, &serde_json::json!({"error": e})),
        ApiError::Store(e) => {
            tracing::warn!(error = %e, "console: store access failed");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"error": "the store cannot be used now"}),
            )
        }
    }
}

fn page_error(e: ApiError) -> Response<Full<Bytes>> {
    match e {
        ApiError::NotFound => html(StatusCode::NOT_FOUND, pages::message("Not found")),
        ApiError::Bad(e) => html(StatusCode::BAD_REQUEST, pages::message(&e)),
        ApiError::Store(e) => {
            tracing::warn!(error = %e, "console: store access failed");
            html(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::message("The store cannot be used now."),
            )
        }
    }
}

/// A request body of at most `limit` bytes, within 10 seconds (a client
/// that trickles a body does not hold a connection).
async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, Response<Full<Bytes>>> {
    let body = tokio::time::timeout(
        Duration::from_secs(10),
        Limited::new(req.into_body(), limit).collect(),
    )
    .await;
    match body {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        _ => Err(html(
            StatusCode::PAYLOAD_TOO_LARGE,
            pages::message("The request could not be read (too large, or too slow)."),
        )),
    }
}

fn download(name: &str, bytes: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/gzip"),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
    {
        r.headers_mut()
            .insert(hyper::header::CONTENT_DISPOSITION, v);
    }
    r
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn redirect_to(to: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = hyper::header::HeaderValue::from_str(to) {
        r.headers_mut().insert(hyper::header::LOCATION, v);
    }
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
pub fn secured(mut r: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let csp = format!(
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src '{}'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
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
