//! The email sink (lettre): one message per finding over SMTP (`tls:
//! none | starttls | tls`, optional authentication), multipart text and
//! HTML, subject `[kaudit][SEVERITY] rule — cluster`. Every string from the
//! event is HTML-escaped in the HTML part, and kept out of the headers
//! except the rule id and cluster name (which kaudit controls or
//! normalises). Permanent SMTP refusals dead-letter; the rest is retried.

use lettre::message::{MultiPart, SinglePart, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};
use serde_json::Value;

use super::Outcome;
use super::field_text as field;
use crate::config::{SinkConfig, resolve_secret};

pub struct EmailSink {
    subject_template: Option<String>,
    summary_template: Option<String>,
    transport: SmtpTransport,
    from: lettre::message::Mailbox,
    to: Vec<lettre::message::Mailbox>,
    base_url: Option<String>,
}

impl EmailSink {
    /// # Errors
    /// A bad address, an unreadable secret or CA file.
    pub fn new(cfg: &SinkConfig, base_url: Option<&str>) -> Result<EmailSink, String> {
        let what = format!("alerts sink {}", cfg.name);
        let smtp = cfg
            .smtp
            .as_ref()
            .ok_or_else(|| format!("{what}: needs smtp"))?;
        let tls_params = || -> Result<TlsParameters, String> {
            let mut b = TlsParameters::builder(smtp.host.clone());
            if let Some(ca) = &smtp.ca_file {
                let pem = std::fs::read(ca)
                    .map_err(|e| format!("{what}: smtp.ca_file {}: {e}", ca.display()))?;
                let cert = Certificate::from_pem(&pem)
                    .map_err(|e| format!("{what}: smtp.ca_file {}: {e}", ca.display()))?;
                b = b.add_root_certificate(cert);
            }
            b.build_rustls().map_err(|e| format!("{what}: {e}"))
        };
        let (tls, default_port) = match smtp.tls.as_str() {
            "none" => (Tls::None, 25),
            "tls" => (Tls::Wrapper(tls_params()?), 465),
            _ => (Tls::Required(tls_params()?), 587),
        };
        let mut b = SmtpTransport::builder_dangerous(&smtp.host)
            .port(smtp.port.unwrap_or(default_port))
            .tls(tls)
            .timeout(Some(std::time::Duration::from_millis(cfg.timeout_ms)));
        if let Some(user) = &smtp.username {
            let pw = resolve_secret(
                &format!("{what}: smtp.password"),
                smtp.password.as_ref(),
                smtp.password_env.as_deref(),
                smtp.password_file.as_deref(),
            )?
            .ok_or_else(|| format!("{what}: smtp.username needs a password"))?;
            b = b.credentials(Credentials::new(user.clone(), pw.expose().to_owned()));
        }
        let parse = |a: &str| {
            a.parse::<lettre::message::Mailbox>()
                .map_err(|e| format!("{what}: address {a:?}: {e}"))
        };
        Ok(EmailSink {
            subject_template: cfg.subject_template.clone(),
            summary_template: cfg.summary_template.clone(),
            transport: b.build(),
            from: parse(cfg.from.as_deref().unwrap_or(""))?,
            to: cfg.to.iter().map(|a| parse(a)).collect::<Result<_, _>>()?,
            base_url: base_url.map(str::to_owned),
        })
    }

    /// A digest: several findings in one mail.
    pub fn send_group(&self, findings: &[&str]) -> Outcome {
        let list: Vec<Value> = findings
            .iter()
            .filter_map(|f| serde_json::from_str(f).ok())
            .collect();
        let Some(first) = list.first() else {
            return Outcome::Delivered;
        };
        let (subject, _, _) = render(first, None);
        let subject = format!("{subject} ({} findings)", list.len());
        let mut text = String::new();
        let mut h = format!(
            "<!doctype html><html><body><h2>{}</h2><table>",
            html(&subject)
        );
        for f in &list {
            let (_, t, _) = render(f, self.base_url.as_deref());
            text.push_str(&t);
            text.push_str("\n----\n");
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                html(&field(f, "time")),
                html(&field(f, "cluster")),
                html(&field(f, "user")),
                html(&field(f, "summary"))
            ));
        }
        h.push_str("</table></body></html>");
        let mut b = Message::builder().from(self.from.clone()).subject(subject);
        for to in &self.to {
            b = b.to(to.clone());
        }
        let msg = match b.multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(text),
                )
                .singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(h)),
        ) {
            Ok(m) => m,
            Err(e) => return Outcome::Rejected(e.to_string()),
        };
        self.deliver(&msg)
    }

    /// Sends `msg` to every recipient. When the server refuses the mail
    /// for good and there are several recipients, each is tried on its own
    /// (one address the server refuses must not keep the alert from the
    /// others): delivered when any took it, the refused ones logged.
    fn deliver(&self, msg: &Message) -> Outcome {
        let outcome = |r: Result<_, lettre::transport::smtp::Error>| match r {
            Ok(_) => Outcome::Delivered,
            Err(e) if e.is_permanent() => Outcome::Rejected(format!("SMTP: {e}")),
            Err(e) => Outcome::Retry {
                error: format!("SMTP: {e}"),
                after: None,
            },
        };
        let all = outcome(self.transport.send(msg));
        if !matches!(all, Outcome::Rejected(_)) || self.to.len() < 2 {
            return all;
        }
        let raw = msg.formatted();
        let mut delivered = 0;
        let mut last = all;
        for to in &self.to {
            let envelope = match lettre::address::Envelope::new(
                Some(self.from.email.clone()),
                vec![to.email.clone()],
            ) {
                Ok(e) => e,
                Err(e) => {
                    last = Outcome::Rejected(format!("SMTP: {e}"));
                    continue;
                }
            };
            match outcome(self.transport.send_raw(&envelope, &raw)) {
                Outcome::Delivered => delivered += 1,
                other => {
                    tracing::warn!(recipient = %to.email, outcome = ?other, "a recipient did not take the alert");
                    last = other;
                }
            }
        }
        if delivered > 0 {
            Outcome::Delivered
        } else {
            last
        }
    }

    pub fn send(&self, finding: &str) -> Outcome {
        let Ok(f) = serde_json::from_str::<Value>(finding) else {
            return Outcome::Rejected("the stored finding is not JSON".into());
        };
        let msg = match self.message(&f) {
            Ok(m) => m,
            Err(e) => return Outcome::Rejected(e),
        };
        self.deliver(&msg)
    }

    fn message(&self, f: &Value) -> Result<Message, String> {
        let mut f = f.clone();
        if let Some(t) = &self.summary_template {
            f["summary"] = super::fill(t, &f).into();
        }
        let (mut subject, text, html) = render(&f, self.base_url.as_deref());
        if let Some(t) = &self.subject_template {
            // No header injection: line breaks and control characters out.
            subject = super::fill(t, &f)
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(200)
                .collect();
        }
        let f = &f;
        let mut b = Message::builder().from(self.from.clone()).subject(subject);
        for to in &self.to {
            b = b.to(to.clone());
        }
        if let Some(id) = f["id"].as_str() {
            // Threads a finding's mails; the id is hex.
            b = b.message_id(Some(format!("<{id}@kaudit>")));
        }
        b.multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(text),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(html),
                ),
        )
        .map_err(|e| e.to_string())
    }
}

/// HTML-escapes `s` (element content and quoted attributes).
pub fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Subject, plain text and HTML of the mail for `f`.
pub fn render(f: &Value, base_url: Option<&str>) -> (String, String, String) {
    let severity = field(f, "severity").to_uppercase();
    // Rule ids are kaudit's; cluster names are lower-cased, and stripped of
    // anything that could break a header.
    let cluster: String = field(f, "cluster")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    let subject = format!("[kaudit][{severity}] {} — {cluster}", field(f, "rule_id"));
    let mut rows = vec![
        ("Summary", field(f, "summary")),
        ("Who", field(f, "user")),
        (
            "What",
            format!(
                "{} {}{}",
                field(f, "verb"),
                field(f, "resource"),
                f["subresource"]
                    .as_str()
                    .map(|s| format!("/{s}"))
                    .unwrap_or_default()
            ),
        ),
        (
            "Where",
            format!(
                "{} {}/{}",
                field(f, "cluster"),
                field(f, "namespace"),
                field(f, "name")
            ),
        ),
        ("When", field(f, "time")),
        ("From", field(f, "source_ips")),
        ("User agent", field(f, "user_agent")),
    ];
    if let Some(cmd) = f["details"]["command"].as_array() {
        rows.push((
            "Command",
            cmd.iter()
                .filter_map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        ));
    }
    rows.push((
        "Rule",
        format!("{} ({})", field(f, "rule_id"), field(f, "rule_title")),
    ));
    rows.push(("Finding", field(f, "id")));
    let link = base_url
        .zip(f["id"].as_str())
        .map(|(b, id)| format!("{}/findings/{id}", b.trim_end_matches('/')));
    let mut text = String::new();
    for (k, v) in &rows {
        // Control characters out of the plain part (a terminal reads it).
        let v: String = v
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        text.push_str(&format!("{k}: {v}\n"));
    }
    if let Some(l) = &link {
        text.push_str(&format!("\n{l}\n"));
    }
    let mut h = format!(
        "<!doctype html><html><body><h2>[{}] {}</h2><table>",
        html(&severity),
        html(&field(f, "rule_title"))
    );
    for (k, v) in &rows {
        h.push_str(&format!(
            "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
            html(k),
            html(v)
        ));
    }
    h.push_str("</table>");
    if let Some(l) = &link {
        h.push_str(&format!(
            "<p><a href=\"{}\">Open in kaudit</a></p>",
            html(l)
        ));
    }
    h.push_str("</body></html>");
    (subject, text, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_strings_are_escaped_in_html() {
        let f = serde_json::json!({
            "id": "ab12", "rule_id": "pod-exec", "rule_title": "Exec into a pod", "severity": "high",
            "cluster": "prod\r\nBcc: x@evil", "user": "<script>alert(1)</script>",
            "summary": "a \"quoted\" & <b>bold</b>", "details": {"command": ["sh", "-c", "<img src=x>"]}
        });
        let (subject, text, h) = render(&f, Some("https://k.example"));
        assert_eq!(subject, "[kaudit][HIGH] pod-exec — prodBccxevil");
        assert!(
            !h.contains("<script>") && !h.contains("<img") && !h.contains("<b>"),
            "{h}"
        );
        assert!(h.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(text.contains("Who: <script>alert(1)</script>"));
        assert!(h.contains("https://k.example/findings/ab12"));
    }
}
