//! The webhook sink: a signed POST of the finding's JSON.
//!
//! Headers: `X-Kaudit-Timestamp` (Unix seconds), `X-Kaudit-Signature:
//! sha256=<hex HMAC-SHA256 of "timestamp.body">` when a secret is set, and
//! `Idempotency-Key` (the finding id): a receiver that saw the key already
//! drops the copy a crash between sending and recording may cause.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Outcome;
use crate::config::{Secret, SinkConfig, resolve_secret};

pub struct WebhookSink {
    url: Secret,
    secret: Option<Secret>,
    headers: Vec<(String, String)>,
    client: reqwest::blocking::Client,
}

impl WebhookSink {
    /// # Errors
    /// A secret that cannot be read, or a client that cannot be built.
    pub fn new(cfg: &SinkConfig) -> Result<WebhookSink, String> {
        let what = format!("alerts sink {}", cfg.name);
        let url = resolve_secret(
            &format!("{what}: url"),
            cfg.url.as_ref(),
            cfg.url_env.as_deref(),
            cfg.url_file.as_deref(),
        )?
        .ok_or_else(|| format!("{what}: needs url, url_env or url_file"))?;
        let secret = resolve_secret(
            &format!("{what}: hmac_secret"),
            cfg.hmac_secret.as_ref(),
            cfg.hmac_secret_env.as_deref(),
            cfg.hmac_secret_file.as_deref(),
        )?;
        let mut builder = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .user_agent(concat!("kaudit/", env!("CARGO_PKG_VERSION")));
        match (&cfg.client_cert, &cfg.client_key) {
            (Some(cert), Some(key)) => {
                let mut pem = std::fs::read(cert)
                    .map_err(|e| format!("{what}: client_cert {}: {e}", cert.display()))?;
                pem.extend(
                    std::fs::read(key)
                        .map_err(|e| format!("{what}: client_key {}: {e}", key.display()))?,
                );
                let id = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| format!("{what}: client_cert/client_key: {e}"))?;
                builder = builder.identity(id);
            }
            (None, None) => {}
            _ => return Err(format!("{what}: client_cert and client_key go together")),
        }
        if let Some(ca) = &cfg.ca_file {
            let pem =
                std::fs::read(ca).map_err(|e| format!("{what}: ca_file {}: {e}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| format!("{what}: ca_file {}: {e}", ca.display()))?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder.build().map_err(|e| format!("{what}: {e}"))?;
        Ok(WebhookSink {
            url,
            secret,
            headers: cfg
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            client,
        })
    }

    /// Sends several findings as one message: `{"kind": "group", "count",
    /// "findings": [...]}` under the group's Idempotency-Key.
    pub fn send_group(&self, group_id: &str, findings: &[&str], now: i64) -> Outcome {
        let body = format!(
            r#"{{"kind":"group","count":{},"findings":[{}]}}"#,
            findings.len(),
            findings.join(",")
        );
        self.send(group_id, &body, now)
    }

    /// Sends one finding (`body`, its JSON).
    pub fn send(&self, finding_id: &str, body: &str, now: i64) -> Outcome {
        let mut req = self
            .client
            .post(self.url.expose())
            .header("Content-Type", "application/json")
            .header("X-Kaudit-Timestamp", now.to_string())
            .header("Idempotency-Key", finding_id);
        if let Some(s) = &self.secret {
            req = req.header("X-Kaudit-Signature", signature(s.expose(), now, body));
        }
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        classify(req.body(body.to_owned()).send())
    }
}

/// `Retry-After` in seconds from `now`: delay-seconds or an HTTP-date
/// (RFC 9110 §10.2.3); a date in the past is 0.
pub fn retry_after(value: &str, now: std::time::SystemTime) -> Option<i64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<i64>() {
        return Some(secs.max(0));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(now)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
    )
}

/// What an HTTP answer (or its absence) means for a delivery: 2xx
/// delivered; 429, 408 and 5xx later (after Retry-After when given);
/// another status rejected for good; no answer later.
pub fn classify(r: reqwest::Result<reqwest::blocking::Response>) -> Outcome {
    match r {
        Ok(r) if r.status().is_success() => Outcome::Delivered,
        Ok(r) => {
            let status = r.status().as_u16();
            let retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after(v, std::time::SystemTime::now()));
            if status == 429 || status == 408 || status >= 500 {
                Outcome::Retry {
                    error: format!("HTTP {status}"),
                    after: retry_after,
                }
            } else {
                // The receiver refuses this payload: retrying will not help.
                Outcome::Rejected(format!("HTTP {status}"))
            }
        }
        // Never the URL in the error: it may hold a token.
        Err(e) => Outcome::Retry {
            error: if e.is_timeout() {
                "timed out".to_owned()
            } else if e.is_connect() {
                "cannot connect".to_owned()
            } else {
                "request failed".to_owned()
            },
            after: None,
        },
    }
}

/// `sha256=<hex HMAC-SHA256(secret, "timestamp.body")>`.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    // HMAC takes a key of any length: this cannot fail.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(retry_after("120", now), Some(120));
        assert_eq!(retry_after(" 5 ", now), Some(5));
        assert_eq!(retry_after("-3", now), Some(0));
        assert_eq!(retry_after("Sun, 06 Nov 1994 08:51:37 GMT", now), Some(120));
        assert_eq!(retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(0));
        assert_eq!(retry_after("soon", now), None);
    }

    /// RFC 4231 test case 2 shape: a known HMAC-SHA256 value.
    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // HMAC-SHA256("Jefe", "what do ya want for nothing?") per RFC 4231.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let s = signature("k", 1_793_000_000, "{}");
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"k").unwrap();
        mac.update(b"1793000000.{}");
        assert_eq!(
            s,
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
    }
}
