//! The console's HTML pages, rendered on the server: the findings list
//! with its filters, one finding in full, coverage, alert delivery, and
//! the login form. Every value from the store goes through [`esc`]; the
//! pages carry one script (`APP_JS`, new findings on the list) and one
//! stylesheet, allowed by its hash.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use serde_json::Value;

use super::Console;
use super::api::{self, ApiError};

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1b1f23}\
header{background:#1b1f23;color:#fff;padding:.5em 1em;display:flex;gap:1.5em;align-items:center}\
header a{color:#fff}main{padding:1em}table{border-collapse:collapse;width:100%}\
td,th{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}\
pre{background:#f6f8fa;padding:1em;overflow:auto;white-space:pre-wrap;word-break:break-all}\
form.filters{display:flex;flex-wrap:wrap;gap:.5em;margin-bottom:1em}form.filters input{width:9em}\
.critical,.high{color:#b00020;font-weight:bold}tr.new{background:#fff8c5}.medium{color:#b35900}.error{color:#b00020}";

/// Where a form's CSRF token goes: replaced with the session's token (or
/// nothing) when the page is sent. `<` cannot come from the data (every
/// value is escaped), so only the pages' own forms carry it.
pub const CSRF_MARK: &str = "<kaudit-csrf>";
const CSRF_FIELD: &str = "<input type=\"hidden\" name=\"csrf\" value=\"<kaudit-csrf>\">";

/// The CSP source for [`STYLE`]: `sha256-BASE64`.
pub fn style_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        use base64::Engine;
        use sha2::Digest;
        let digest = sha2::Sha256::digest(STYLE.as_bytes());
        format!(
            "sha256-{}",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    })
}

/// HTML-escapes a value for element content and quoted attributes.
pub fn esc(s: &str) -> String {
    crate::alert::email::html(s)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn layout(title: &str, body: &str, signed_in: bool) -> String {
    let nav = if signed_in {
        "<a href=\"/ui\">Findings</a><a href=\"/ui/coverage\">Coverage</a><a href=\"/ui/deliveries\">Alert delivery</a><a href=\"/ui/export\">Export</a>\
         <form method=\"post\" action=\"/ui/logout\"><input type=\"hidden\" name=\"csrf\" value=\"<kaudit-csrf>\"><button>Sign out</button></form>"
    } else {
        ""
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · kaudit</title>\
         <style>{STYLE}</style><script src=\"/ui/app.js\" defer></script></head><body><header><strong>kaudit</strong>{nav}</header><main>{body}</main></body></html>",
        esc(title)
    )
}

/// The login form.
pub fn login(error: Option<&str>) -> String {
    let error = error.map_or(String::new(), |e| {
        format!("<p class=\"error\">{}</p>", esc(e))
    });
    layout(
        "Sign in",
        &format!(
            "<h1>Sign in</h1>{error}<form method=\"post\" action=\"/ui/login\">\
             <label>Your name <input name=\"name\" autocomplete=\"username\" required></label> \
             <label>Access token <input type=\"password\" name=\"token\" autocomplete=\"current-password\" required></label> \
             <button>Sign in</button></form>"
        ),
        false,
    )
}

/// A page that only says something.
pub fn message(text: &str) -> String {
    layout(text, &format!("<p>{}</p>", esc(text)), true)
}

/// `GET /ui...`.
pub async fn page(console: &Arc<Console>, path: &str, query: &str) -> Result<String, ApiError> {
    match path {
        "/ui" | "/ui/" => findings(console, query).await,
        "/ui/coverage" => coverage(console, query).await,
        "/ui/deliveries" => deliveries(console).await,
        "/ui/export" => Ok(export_form(query)),
        p => match p.strip_prefix("/ui/findings/") {
            Some(id) => finding(console, id).await,
            None => Err(ApiError::NotFound),
        },
    }
}

async fn findings(console: &Arc<Console>, query: &str) -> Result<String, ApiError> {
    let (filter, paging) = api::parse_query(query)?;
    let live = paging.before.is_none();
    let page = api::list(console, filter, paging).await?;
    // The form keeps what was asked.
    let asked: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut b =
        String::from("<h1>Findings</h1><form class=\"filters\" method=\"get\" action=\"/ui\">");
    filter_inputs(&mut b, &asked);
    b.push_str("<button>Filter</button></form>");
    // The first page follows new findings (app.js polls the API).
    let top = page.rows.first().map_or(0, |r| r.seq);
    let _ = write!(
        b,
        "<table class=\"findings\" data-live=\"{}\" data-top=\"{top}\"><thead><tr><th>Time</th><th>Severity</th><th>Rule</th><th>Cluster</th><th>Namespace</th><th>User</th><th>Summary</th></tr></thead><tbody>",
        u8::from(live)
    );
    for r in &page.rows {
        let f = &r.finding;
        let sev = text(&f["severity"]);
        let _ = write!(
            b,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><a href=\"/ui/findings/{}\">{}</a></td></tr>",
            esc(&text(&f["time"])),
            esc(&sev),
            esc(&sev),
            esc(&text(&f["rule_id"])),
            esc(&text(&f["cluster"])),
            esc(&text(&f["namespace"])),
            esc(&text(&f["user"])),
            esc(&text(&f["id"])),
            esc(&text(&f["summary"])),
        );
    }
    b.push_str("</tbody></table>");
    if page.rows.is_empty() {
        b.push_str("<p>No finding matches.</p>");
    }
    let mut same = form_urlencoded::Serializer::new(String::new());
    for (k, v) in asked.iter().filter(|(k, _)| k != "before" && k != "limit") {
        same.append_pair(k, v);
    }
    let _ = write!(
        b,
        "<p><a href=\"/ui/export?{}\">Export these findings as evidence</a></p>",
        esc(&same.finish())
    );
    if let Some(next) = page.next_before {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in asked.iter().filter(|(k, _)| k != "before") {
            q.append_pair(k, v);
        }
        q.append_pair("before", &next.to_string());
        let _ = write!(
            b,
            "<p><a href=\"/ui?{}\">Older findings</a></p>",
            esc(&q.finish())
        );
    }
    Ok(layout("Findings", &b, true))
}

async fn finding(console: &Arc<Console>, id: &str) -> Result<String, ApiError> {
    let d = api::detail(console, id).await?;
    let f = &d.stored.finding;
    let mut b = format!("<h1>{}</h1>", esc(&text(&f["summary"])));
    b.push_str("<table>");
    let who = match f["impersonated_user"].as_str() {
        Some(i) => format!("{} (impersonating {i})", text(&f["user"])),
        None => text(&f["user"]),
    };
    let what = format!(
        "{} {}{}",
        text(&f["verb"]),
        text(&f["resource"]),
        f["subresource"]
            .as_str()
            .map_or(String::new(), |s| format!("/{s}"))
    );
    let where_ = format!(
        "{} / {} / {}",
        text(&f["cluster"]),
        text(&f["namespace"]),
        text(&f["name"])
    );
    for (k, v) in [
        (
            "Rule",
            format!("{} ({})", text(&f["rule_id"]), text(&f["rule_title"])),
        ),
        ("Severity", text(&f["severity"])),
        ("Category", text(&f["category"])),
        ("When", text(&f["time"])),
        ("Who", who),
        ("From", text(&f["source_ips"])),
        ("User agent", text(&f["user_agent"])),
        ("What", what),
        ("Where", where_),
        ("Request", text(&f["request_uri"])),
        ("Audit ID", text(&f["audit_id"])),
        ("Chain position", d.stored.seq.to_string()),
    ] {
        let _ = write!(b, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    }
    b.push_str("</table><h2>Details</h2>");
    let _ = write!(
        b,
        "<pre>{}</pre>",
        esc(&serde_json::to_string_pretty(&f["details"]).unwrap_or_default())
    );
    b.push_str("<h2>Alerts</h2>");
    if d.alerts.is_empty() {
        b.push_str("<p>None.</p>");
    } else {
        b.push_str(
            "<table><tr><th>Sink</th><th>State</th><th>Attempts</th><th>Last error</th></tr>",
        );
        for a in &d.alerts {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&a.sink),
                esc(&a.state),
                a.attempts,
                esc(a.last_error.as_deref().unwrap_or(""))
            );
        }
        b.push_str("</table>");
    }
    b.push_str("<h2>Triage</h2>");
    if d.triage.is_empty() {
        b.push_str("<p>No one has triaged this finding yet.</p>");
    } else {
        b.push_str("<table class=\"triage\"><tr><th>When</th><th>Who</th><th>Action</th><th>Comment</th></tr>");
        for t in &d.triage {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&crate::timespec::unix_to_rfc3339(t.at)),
                esc(&t.actor),
                esc(t.action.as_str()),
                esc(&t.comment)
            );
        }
        b.push_str("</table>");
    }
    let _ = write!(
        b,
        "<form class=\"triage\" method=\"post\" action=\"/ui/findings/{}/triage\">{CSRF_FIELD}\
         <label>Action <select name=\"action\"><option value=\"acknowledge\">Acknowledge</option>\
         <option value=\"false_positive\">False positive</option>\
         <option value=\"silence\">Silence findings like it (rule, cluster, user)</option>\
         <option value=\"reopen\">Reopen</option></select></label> \
         <label>For <input name=\"silence_for\" placeholder=\"7d\" size=\"5\"></label> \
         <label>Comment <input name=\"comment\" required size=\"50\"></label> \
         <button>Record</button></form>",
        esc(&text(&f["id"]))
    );
    b.push_str("<h2>Related findings</h2><p>Same user, credential id or source address within six hours.</p>");
    if d.related.is_empty() {
        b.push_str("<p>None.</p>");
    } else {
        b.push_str("<table><tr><th>Time</th><th>Rule</th><th>User</th><th>Summary</th></tr>");
        for r in &d.related {
            let g = &r.finding;
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><a href=\"/ui/findings/{}\">{}</a></td></tr>",
                esc(&text(&g["time"])),
                esc(&text(&g["rule_id"])),
                esc(&text(&g["user"])),
                esc(&text(&g["id"])),
                esc(&text(&g["summary"]))
            );
        }
        b.push_str("</table>");
    }
    b.push_str("<h2>Evidence (the audit event, redacted)</h2>");
    let _ = write!(
        b,
        "<pre>{}</pre>",
        esc(&serde_json::to_string_pretty(&f["evidence"]).unwrap_or_default())
    );
    Ok(layout("Finding", &b, true))
}

async fn coverage(console: &Arc<Console>, query: &str) -> Result<String, ApiError> {
    // The last two days unless a range is asked for.
    let ranged = form_urlencoded::parse(query.as_bytes())
        .any(|(k, v)| (k == "since" || k == "until") && !v.trim().is_empty());
    let query = if ranged {
        query.to_owned()
    } else {
        let until = crate::timespec::unix_to_rfc3339((crate::timespec::now() / 3600 + 1) * 3600);
        format!("since=48h&until={until}&{query}")
    };
    let c = api::coverage(console, &query).await?;
    let mut b = String::from(
        "<h1>Coverage</h1><p>Hours in which no event at all arrived from a cluster: kaudit was blind then. \
         Truncated events were cut short by the log pipeline.</p>\
         <form class=\"filters\" method=\"get\" action=\"/ui/coverage\"><label>Since <input name=\"since\" placeholder=\"48h\"></label>\
         <label>Until <input name=\"until\"></label><button>Show</button></form>\
         <table><tr><th>Cluster</th><th>Hours with events</th><th>Silent hours</th><th>Silent stretches</th><th>Hours with truncated events</th><th>First seen</th><th>Last seen</th></tr>",
    );
    // Per cluster and hour: events, malformed, truncated (all sources).
    let mut hourly: std::collections::BTreeMap<(String, String), (u64, u64, u64)> =
        std::collections::BTreeMap::new();
    for h in c["hourly"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let e = hourly
            .entry((text(&h["cluster"]), text(&h["hour"])))
            .or_default();
        e.0 += h["events"].as_u64().unwrap_or(0);
        e.1 += h["malformed"].as_u64().unwrap_or(0);
        e.2 += h["truncated"].as_u64().unwrap_or(0);
    }
    let clusters = c["clusters"].as_object().cloned().unwrap_or_default();
    for (name, v) in &clusters {
        let stretches: Vec<String> = v["silent_stretches"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| {
                        format!(
                            "{} → {} ({} h)",
                            text(&s["from"]),
                            text(&s["to"]),
                            text(&s["hours"])
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let truncated = hourly
            .iter()
            .filter(|((c, _), v)| c == name && v.2 > 0)
            .count();
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            esc(&text(&v["hours_with_events"])),
            if v["silent_hours_total"].as_u64().unwrap_or(0) > 0 {
                "high"
            } else {
                ""
            },
            esc(&text(&v["silent_hours_total"])),
            esc(&stretches.join("; ")),
            if truncated > 0 { "medium" } else { "" },
            truncated,
            esc(&text(&v["ever_first_hour"])),
            esc(&text(&v["ever_last_hour"])),
        );
    }
    b.push_str("</table>");
    // Hour by hour, silent hours included, per cluster (at most 500 rows).
    for (name, v) in &clusters {
        let _ = write!(
            b,
            "<h2>{}</h2><table class=\"hours\"><tr><th>Hour</th><th>Events</th><th>Malformed</th><th>Truncated</th></tr>",
            esc(name)
        );
        let silent: std::collections::BTreeSet<String> = v["silent_hours"]
            .as_array()
            .map(|a| a.iter().map(text).collect())
            .unwrap_or_default();
        let mut rows: Vec<(String, (u64, u64, u64))> = hourly
            .iter()
            .filter(|((c, _), _)| c == name)
            .map(|((_, h), v)| (h.clone(), *v))
            .chain(silent.iter().map(|h| (h.clone(), (0, 0, 0))))
            .collect();
        rows.sort();
        rows.dedup_by(|a, b| a.0 == b.0);
        for (hour, (events, malformed, truncated)) in rows.iter().rev().take(500) {
            let class = if *events == 0 {
                "high"
            } else if *truncated > 0 {
                "medium"
            } else {
                ""
            };
            let _ = write!(
                b,
                "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(hour),
                events,
                malformed,
                truncated
            );
        }
        b.push_str("</table>");
    }
    Ok(layout("Coverage", &b, true))
}

async fn deliveries(console: &Arc<Console>) -> Result<String, ApiError> {
    let sinks = api::deliveries(console).await?;
    let mut b = String::from(
        "<h1>Alert delivery</h1><table><tr><th>Sink</th><th>Delivered</th><th>Retrying</th><th>Waiting</th><th>Dead</th><th>Last error</th></tr>",
    );
    for s in &sinks {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            esc(&s.sink),
            s.delivered,
            s.retrying,
            s.waiting,
            if s.dead > 0 { "high" } else { "" },
            s.dead,
            esc(s.last_error.as_deref().unwrap_or("")),
        );
    }
    b.push_str("</table>");
    if sinks.is_empty() {
        b.push_str("<p>No alert was queued.</p>");
    }
    Ok(layout("Alert delivery", &b, true))
}

/// The export form: the findings list's filters and the formats; the
/// answer is the bundle (`.tar.gz`) that `kaudit verify` checks.
fn export_form(query: &str) -> String {
    let asked: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut b = String::from(
        "<h1>Export evidence</h1><p>A bundle of the findings that match, with the hash chain of the \
         range, coverage and triage; signed when the console has a signing key. Check it with \
         <code>kaudit verify BUNDLE.tar.gz</code>.</p><form class=\"filters\" method=\"post\" action=\"/ui/export\"><input type=\"hidden\" name=\"csrf\" value=\"<kaudit-csrf>\">",
    );
    filter_inputs(&mut b, &asked);
    b.push_str("<button>Download bundle</button></form>");
    layout("Export", &b, true)
}

/// The console's one script: the first page of the findings list follows
/// new findings by polling the API (every 5 s), adding rows built with
/// `textContent` (never markup from the data).
pub const APP_JS: &str = r#"// kaudit console: new findings appear at the top of the list.
(function () {
  "use strict";
  var table = document.querySelector("table.findings");
  if (!table || table.getAttribute("data-live") !== "1") { return; }
  var top = Number(table.getAttribute("data-top") || "0");
  var body = table.querySelector("tbody");
  var params = new URLSearchParams(window.location.search);
  params.delete("before");
  params.set("limit", "500");
  var known = ["info", "low", "medium", "high", "critical"];
  function cell(tr, text, cls) {
    var td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (cls && known.indexOf(cls) >= 0) { td.className = cls; }
    tr.appendChild(td);
  }
  function poll() {
    params.set("after", String(top));
    fetch("/api/findings?" + params.toString(), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (v) {
        if (!v || !v.findings) { return; }
        for (var i = v.findings.length - 1; i >= 0; i--) {
          var f = v.findings[i];
          var tr = document.createElement("tr");
          tr.className = "new";
          cell(tr, f.time); cell(tr, f.severity, f.severity); cell(tr, f.rule_id);
          cell(tr, f.cluster); cell(tr, f.namespace); cell(tr, f.user);
          var td = document.createElement("td");
          var a = document.createElement("a");
          a.href = "/ui/findings/" + encodeURIComponent(String(f.id));
          a.textContent = f.summary === null || f.summary === undefined ? "" : String(f.summary);
          td.appendChild(a);
          tr.appendChild(td);
          body.insertBefore(tr, body.firstChild);
          if (f.seq > top) { top = f.seq; }
        }
      })
      .catch(function () {});
  }
  window.setInterval(poll, 5000);
})();
"#;

/// The filter fields of the findings list and the export form, holding
/// what was asked.
fn filter_inputs(b: &mut String, asked: &[(String, String)]) {
    for (name, label) in [
        ("since", "Since"),
        ("until", "Until"),
        ("severity", "Min severity"),
        ("rule", "Rule"),
        ("category", "Category"),
        ("cluster", "Cluster"),
        ("namespace", "Namespace"),
        ("user", "User"),
    ] {
        let value = asked
            .iter()
            .find(|(n, _)| n == name)
            .map_or(String::new(), |(_, v)| esc(v));
        let _ = write!(
            b,
            "<label>{label} <input name=\"{name}\" value=\"{value}\"></label>"
        );
    }
}
