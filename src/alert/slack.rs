//! The Slack sink: a Block Kit message per finding, through an incoming
//! webhook, or a bot token and `chat.postMessage`.
//!
//! Every string from the audit event is escaped for mrkdwn (`&`, `<`, `>`:
//! no link, mention or `<!channel>` can be smuggled in) and cut to Slack's
//! limits (section text 3000 characters, fields 2000, header 150, at most
//! 50 blocks and 10 fields). 429 answers are retried after Retry-After.

use std::time::Duration;

use serde_json::{Value, json};

use super::Outcome;
use super::field_text as text;
use super::webhook::classify;
use crate::config::{Secret, SinkConfig, resolve_secret};

const SLACK_API: &str = "https://slack.com/api/chat.postMessage";

pub struct SlackSink {
    subject_template: Option<String>,
    summary_template: Option<String>,
    target: Target,
    base_url: Option<String>,
    client: reqwest::blocking::Client,
}

enum Target {
    Webhook(Secret),
    Bot {
        token: Secret,
        channel: String,
        api: String,
    },
}

impl SlackSink {
    /// # Errors
    /// Neither or both of a webhook URL and a bot token, or a secret that
    /// cannot be read.
    pub fn new(cfg: &SinkConfig, base_url: Option<&str>) -> Result<SlackSink, String> {
        let what = format!("alerts sink {}", cfg.name);
        let hook = resolve_secret(
            &format!("{what}: webhook_url"),
            cfg.webhook_url.as_ref(),
            cfg.webhook_url_env.as_deref(),
            cfg.webhook_url_file.as_deref(),
        )?;
        let token = resolve_secret(
            &format!("{what}: bot_token"),
            cfg.bot_token.as_ref(),
            cfg.bot_token_env.as_deref(),
            cfg.bot_token_file.as_deref(),
        )?;
        let target = match (hook, token, &cfg.channel) {
            (Some(h), None, _) => Target::Webhook(h),
            (None, Some(t), Some(c)) => Target::Bot {
                token: t,
                channel: c.clone(),
                api: cfg.api_url.clone().unwrap_or_else(|| SLACK_API.to_owned()),
            },
            _ => {
                return Err(format!(
                    "{what}: give webhook_url, or bot_token with channel"
                ));
            }
        };
        let client = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .build()
            .map_err(|e| format!("{what}: {e}"))?;
        Ok(SlackSink {
            subject_template: cfg.subject_template.clone(),
            summary_template: cfg.summary_template.clone(),
            target,
            base_url: base_url.map(str::to_owned),
            client,
        })
    }

    /// Several findings as one message listing them (at most 20 shown, the
    /// rest counted).
    pub fn send_group(&self, findings: &[&str]) -> Outcome {
        let list: Vec<Value> = findings
            .iter()
            .filter_map(|f| serde_json::from_str(f).ok())
            .collect();
        let Some(first) = list.first() else {
            return Outcome::Delivered;
        };
        let severity = list
            .iter()
            .filter_map(|f| f["severity"].as_str())
            .max_by_key(|s| {
                crate::finding::Severity::ALL
                    .iter()
                    .position(|x| x.as_str() == *s)
            })
            .unwrap_or("info")
            .to_uppercase();
        let mut blocks = vec![
            json!({"type": "header", "text": {"type": "plain_text", "text": cut(format!("[{severity}] {} — {} findings", text(first, "rule_title"), list.len()), 150)}}),
        ];
        for f in list.iter().take(20) {
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(escape(&format!("{} · {} · {}", text(f, "time"), text(f, "cluster"), text(f, "summary"))), 3000)}}));
        }
        if list.len() > 20 {
            blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("and {} more", list.len() - 20)}]}));
        }
        let msg = json!({
            "text": cut(escape(&format!("[{severity}] {} findings of {}", list.len(), text(first, "rule_id"))), 3000),
            "blocks": blocks,
        });
        self.post(msg)
    }

    fn post(&self, mut msg: Value) -> Outcome {
        match &self.target {
            Target::Webhook(url) => classify(self.client.post(url.expose()).json(&msg).send()),
            Target::Bot {
                token,
                channel,
                api,
            } => {
                msg["channel"] = channel.clone().into();
                let r = self
                    .client
                    .post(api)
                    .bearer_auth(token.expose())
                    .json(&msg)
                    .send();
                match r {
                    // chat.postMessage answers 200 with {"ok": false} on errors.
                    Ok(r) if r.status().is_success() => match r.json::<Value>() {
                        Ok(v) if v["ok"] == true => Outcome::Delivered,
                        Ok(v) if v["error"] == "ratelimited" => Outcome::Retry {
                            error: "ratelimited".into(),
                            after: None,
                        },
                        Ok(v) => Outcome::Rejected(format!(
                            "slack: {}",
                            v["error"].as_str().unwrap_or("not ok")
                        )),
                        Err(_) => Outcome::Retry {
                            error: "slack answered no JSON".into(),
                            after: None,
                        },
                    },
                    other => classify(other),
                }
            }
        }
    }

    pub fn send(&self, finding: &str) -> Outcome {
        let Ok(mut f) = serde_json::from_str::<Value>(finding) else {
            return Outcome::Rejected("the stored finding is not JSON".into());
        };
        if let Some(t) = &self.summary_template {
            f["summary"] = super::fill(t, &f).into();
        }
        if let Some(t) = &self.subject_template {
            f["rule_title"] = super::fill(t, &f).into();
        }
        let msg = message(&f, self.base_url.as_deref());
        self.post(msg)
    }
}

/// `s` safe for mrkdwn: no link, mention or special command survives.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            // Control characters could break the layout.
            c if c.is_control() && c != '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters, marked when cut (and never in the middle of
/// an escape).
fn cut(s: String, max: usize) -> String {
    if s.chars().count() <= max {
        return s;
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    if let Some(amp) = out.rfind('&')
        && !out[amp..].contains(';')
    {
        out.truncate(amp);
    }
    out.push('…');
    out
}

/// The Block Kit message for a finding.
pub fn message(f: &Value, base_url: Option<&str>) -> Value {
    let severity = text(f, "severity").to_uppercase();
    let what = match f["subresource"].as_str() {
        Some(sub) => format!("{} {}/{}", text(f, "verb"), text(f, "resource"), sub),
        None => format!("{} {}", text(f, "verb"), text(f, "resource")),
    };
    let target = match (f["namespace"].as_str(), f["name"].as_str()) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        (Some(ns), None) => ns.to_owned(),
        (None, Some(n)) => n.to_owned(),
        (None, None) => "-".to_owned(),
    };
    let field = |label: &str, value: String| json!({"type": "mrkdwn", "text": cut(format!("*{label}*\n{}", escape(&value)), 2000)});
    let mut fields = vec![
        field("Who", text(f, "user")),
        field("What", what),
        field("Where", format!("{} · {}", text(f, "cluster"), target)),
        field("When", text(f, "time")),
        field("From", text(f, "source_ips")),
    ];
    if let Some(cmd) = f["details"]["command"].as_array() {
        let cmd: Vec<String> = cmd
            .iter()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect();
        fields.push(field("Command", cmd.join(" ")));
    }
    if let Some(ports) = f["details"]["ports"].as_array() {
        fields.push(field(
            "Ports",
            ports
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ));
    }
    fields.truncate(10);
    let mut context = vec![json!({"type": "mrkdwn", "text": escape(&format!(
        "{} · {} · finding {}",
        text(f, "rule_id"),
        text(f, "category"),
        text(f, "id")
    ))})];
    if let (Some(base), Some(id)) = (base_url, f["id"].as_str()) {
        // The base URL is configuration, the id is hex: a real link.
        context.push(json!({"type": "mrkdwn", "text": format!("<{}/findings/{id}|Open in kaudit>", base.trim_end_matches('/'))}));
    }
    let title = cut(format!("[{severity}] {}", text(f, "rule_title")), 150);
    json!({
        "text": cut(escape(&format!("[{severity}] {}", text(f, "summary"))), 3000),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title}},
            {"type": "section", "text": {"type": "mrkdwn", "text": cut(escape(&text(f, "summary")), 3000)}},
            {"type": "section", "fields": fields},
            {"type": "context", "elements": context},
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attacker_strings_cannot_mention_or_link() {
        let f = json!({
            "id": "0123", "rule_id": "pod-exec", "rule_title": "Exec into a pod", "severity": "high",
            "category": "exec", "cluster": "prod", "user": "<!channel> & <https://evil|click>",
            "verb": "create", "resource": "pods", "subresource": "exec", "namespace": "shop",
            "name": "web", "time": "2026-11-03T10:00:00Z", "source_ips": ["203.0.113.9"],
            "summary": "x".repeat(5000), "details": {"command": ["sh", "-c", "<@U123>"]}
        });
        let m = message(&f, Some("https://kaudit.example/"));
        let text = m.to_string();
        assert!(
            !text.contains("<!channel>")
                && !text.contains("<@U123>")
                && !text.contains("<https://evil"),
            "{text}"
        );
        assert!(text.contains("&lt;!channel&gt; &amp; &lt;https://evil|click&gt;"));
        assert!(text.contains("<https://kaudit.example/findings/0123|Open in kaudit>"));
        let section = m["blocks"][1]["text"]["text"].as_str().unwrap();
        assert_eq!(section.chars().count(), 3000);
        assert!(m["blocks"][2]["fields"].as_array().unwrap().len() <= 10);
    }

    #[test]
    fn cutting_never_splits_an_escape() {
        let s = cut(escape(&"<".repeat(10)), 7);
        assert!(s.ends_with('…'));
        assert!(!s.trim_end_matches('…').ends_with('&'));
        assert!(
            s.trim_end_matches('…')
                .split('&')
                .skip(1)
                .all(|e| e.starts_with("lt;"))
        );
    }
}
