//! The console's JSON API: findings (filtered, newest first, keyset
//! pages), one finding in full with its related findings, alert states
//! and triage, coverage, alert delivery per sink; and its actions: triage
//! (acknowledge, false positive, a silence made from a finding, reopen),
//! and the signed evidence bundle of a filter. The HTML pages use the same
//! functions. [`openapi`] describes it.

use std::sync::Arc;

use serde_json::{Value, json};

use super::Console;
use crate::finding::Severity;
use crate::store::{Filter, StoredFinding};

/// Rows per page unless asked otherwise, and at most.
pub const PAGE: usize = 50;
const MAX_PAGE: usize = 500;
/// Related findings: within this many seconds either side, at most this many.
const RELATED_WINDOW: i64 = 6 * 3600;
const RELATED_MAX: usize = 50;

#[derive(Debug)]
pub enum ApiError {
    NotFound,
    /// A query the user can fix.
    Bad(String),
    Store(String),
}

/// A page of findings and where the next one starts.
pub struct Page {
    pub rows: Vec<StoredFinding>,
    pub next_before: Option<u64>,
}

/// A finding in full.
pub struct Detail {
    pub stored: StoredFinding,
    pub related: Vec<StoredFinding>,
    pub alerts: Vec<crate::store::AlertState>,
    pub triage: Vec<crate::store::Triage>,
}

/// The query string as a filter, the page start and size.
///
/// # Errors
/// A time, severity or number that cannot be read.
pub fn parse_query(query: &str) -> Result<(Filter, Paging), ApiError> {
    let now = crate::timespec::now();
    let mut f = Filter::default();
    let mut before = None;
    let mut after = None;
    let mut limit = PAGE;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        let list = |out: &mut Vec<String>| {
            out.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        };
        match k.as_ref() {
            "since" => f.since = Some(crate::timespec::parse(v, now).map_err(ApiError::Bad)?),
            "until" => f.until = Some(crate::timespec::parse(v, now).map_err(ApiError::Bad)?),
            "severity" => f.min_severity = Some(v.parse::<Severity>().map_err(ApiError::Bad)?),
            "rule" => list(&mut f.rule),
            "category" => list(&mut f.category),
            "cluster" => {
                list(&mut f.cluster);
                for c in &mut f.cluster {
                    c.make_ascii_lowercase();
                }
            }
            "namespace" => list(&mut f.namespace),
            "user" => list(&mut f.user),
            "before" => {
                before = Some(
                    v.parse()
                        .map_err(|_| ApiError::Bad(format!("before={v:?}: a chain position")))?,
                );
            }
            "after" => {
                after = Some(
                    v.parse()
                        .map_err(|_| ApiError::Bad(format!("after={v:?}: a chain position")))?,
                );
            }
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .map_err(|_| ApiError::Bad(format!("limit={v:?}: a number")))?
                    .clamp(1, MAX_PAGE);
            }
            _ => {}
        }
    }
    Ok((
        f,
        Paging {
            before,
            after,
            limit,
        },
    ))
}

/// Where a page starts and how long it is.
#[derive(Debug, Clone, Copy)]
pub struct Paging {
    /// Below this chain position (the next page).
    pub before: Option<u64>,
    /// Above this one (what is new since a page was shown).
    pub after: Option<u64>,
    pub limit: usize,
}

pub async fn list(
    console: &Arc<Console>,
    filter: Filter,
    paging: Paging,
) -> Result<Page, ApiError> {
    let Paging {
        before,
        after,
        limit,
    } = paging;
    let mut rows = console
        .with_store(move |s| s.page(&filter, before, after, limit + 1))
        .await
        .map_err(ApiError::Store)?;
    let next_before = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| r.seq)
    } else {
        None
    };
    Ok(Page { rows, next_before })
}

pub async fn detail(console: &Arc<Console>, id: &str) -> Result<Detail, ApiError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::NotFound);
    }
    let id = id.to_owned();
    console
        .with_store(move |s| {
            let Some(stored) = s.finding(&id)? else {
                return Ok(None);
            };
            let related = s.related(&stored.finding, RELATED_WINDOW, RELATED_MAX)?;
            let alerts = s.alert_states(&id)?;
            let triage = s.triage_of(&[id.as_str()])?;
            Ok(Some(Detail {
                stored,
                related,
                alerts,
                triage,
            }))
        })
        .await
        .map_err(ApiError::Store)?
        .ok_or(ApiError::NotFound)
}

pub async fn coverage(console: &Arc<Console>, query: &str) -> Result<Value, ApiError> {
    let (f, _) = parse_query(query)?;
    let (since, until) = (f.since, f.until);
    // Hours are listed one by one: the range is bounded.
    let span = until.unwrap_or_else(crate::timespec::now) - since.unwrap_or(0);
    if since.is_none() || span > COVERAGE_MAX {
        return Err(ApiError::Bad(
            "coverage: give since (and until), at most 400 days apart".into(),
        ));
    }
    console
        .with_store(move |s| {
            let rows = s.coverage(since, until)?;
            let clusters = s.coverage_clusters()?;
            Ok(crate::cli::evidence::coverage_json(
                &rows, &clusters, since, until,
            ))
        })
        .await
        .map_err(ApiError::Store)
}

pub async fn deliveries(
    console: &Arc<Console>,
) -> Result<Vec<crate::store::DeliverySummary>, ApiError> {
    console
        .with_store(|s| s.delivery_summary())
        .await
        .map_err(ApiError::Store)
}

/// A triage record as the API shows it.
pub fn triage_view(t: &crate::store::Triage) -> Value {
    json!({
        "action": t.action.as_str(),
        "comment": t.comment,
        "actor": t.actor,
        "at": crate::timespec::unix_to_rfc3339(t.at),
        "silence_id": t.silence_id,
    })
}

/// `s` without control characters, trimmed, at most `max` characters.
pub fn clean(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
        .collect::<String>()
        .trim()
        .chars()
        .take(max)
        .collect()
}

/// Silences made from a finding last this long unless asked otherwise.
const SILENCE_DEFAULT: i64 = 7 * 86_400;

/// Records triage on finding `id`: `action` (acknowledge, false_positive,
/// silence, reopen), `comment` (required), and for a silence `silence_for`
/// (a duration, default 7d): a silence of the finding's rule, cluster and
/// user (and namespace) until then. Returns the record.
pub async fn triage(
    console: &Arc<Console>,
    id: &str,
    form: &std::collections::HashMap<String, String>,
    actor: &str,
) -> Result<crate::store::Triage, ApiError> {
    use crate::store::{Silence, Triage, TriageAction};
    let action = form
        .get("action")
        .and_then(|a| TriageAction::parse(a))
        .ok_or_else(|| {
            ApiError::Bad("action: acknowledge, false_positive, silence or reopen".into())
        })?;
    let comment = clean(form.get("comment").map_or("", String::as_str), 2000);
    if comment.is_empty() {
        return Err(ApiError::Bad("comment: say why".into()));
    }
    let actor = clean(actor, 100);
    if actor.is_empty() {
        return Err(ApiError::Bad("actor: who is doing this".into()));
    }
    let until = match form
        .get("silence_for")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        Some(d) => crate::config::parse_duration(d)
            .map_err(|e| ApiError::Bad(format!("silence_for: {e}")))?,
        None => SILENCE_DEFAULT,
    };
    if !(1..=SILENCE_MAX).contains(&until) {
        return Err(ApiError::Bad(
            "silence_for: between a second and 30 days".into(),
        ));
    }
    let id = id.to_owned();
    console
        .with_store(move |s| {
            let Some(stored) = s.finding(&id)? else {
                return Ok(None);
            };
            let now = crate::timespec::now();
            let f = &stored.finding;
            let silence_id = if action == TriageAction::Silence {
                let text = |k: &str| f[k].as_str().filter(|v| !v.is_empty()).map(str::to_owned);
                // A silence "like this finding" must not turn into a
                // wildcard: a finding with no user (an attacker can send
                // events without one) cannot be silenced this way.
                if text("rule_id").is_none() || text("cluster").is_none() || text("user").is_none() {
                    return Ok(Some(Err(
                        "this finding names no user: silence it with `kaudit silence add` and the matchers you mean"
                            .to_owned(),
                    )));
                }
                Some(s.add_silence(&Silence {
                    rule: text("rule_id"),
                    cluster: text("cluster"),
                    namespace: text("namespace"),
                    user: text("user"),
                    expires_at: now + until,
                    comment: format!("from finding {id}: {comment}"),
                    created_by: actor.clone(),
                    created_at: now,
                    ..Silence::default()
                })?)
            } else {
                None
            };
            let mut t = Triage {
                id: 0,
                finding_id: id.clone(),
                action,
                comment,
                actor,
                at: now,
                silence_id,
            };
            t.id = s.add_triage(&t)?;
            tracing::info!(finding = %id, action = action.as_str(), actor = %t.actor, "console: triage");
            Ok(Some(Ok(t)))
        })
        .await
        .map_err(ApiError::Store)?
        .ok_or(ApiError::NotFound)?
        .map_err(ApiError::Bad)
}

/// `POST /api/findings/{id}/triage` with a JSON body (`action`,
/// `comment`, `actor` unless the caller is known, `silence_for`).
pub async fn triage_json(
    console: &Arc<Console>,
    id: &str,
    body: &[u8],
    actor: Option<String>,
) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::Bad(format!("the body is not JSON: {e}")))?;
    let mut form = std::collections::HashMap::new();
    for k in ["action", "comment", "silence_for", "actor"] {
        if let Some(s) = v[k].as_str() {
            form.insert(k.to_owned(), s.to_owned());
        }
    }
    let actor = actor
        .or_else(|| form.get("actor").cloned())
        .ok_or_else(|| ApiError::Bad("actor: who is doing this".into()))?;
    let t = triage(console, id, &form, &actor).await?;
    Ok(triage_view(&t))
}

/// The evidence bundle of a filter (the query string of the findings
/// list, plus `format` lists), packed as `.tar.gz`: its file name and
/// bytes. Signed with `server.ui.sign_key` when set.
pub async fn export(console: &Arc<Console>, query: &str) -> Result<(String, Vec<u8>), ApiError> {
    // One export at a time: each reads the store and writes a bundle.
    let Ok(permit) = console.exporting.clone().try_acquire_owned() else {
        return Err(ApiError::Bad(
            "another export is being made; try again when it is done".into(),
        ));
    };
    let (filter, _) = parse_query(query)?;
    let mut formats = Vec::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k == "format" {
            for f in v.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                formats.push(match f {
                    "jsonl" => crate::export::Format::Jsonl,
                    "csv" => crate::export::Format::Csv,
                    "ocsf" => crate::export::Format::Ocsf,
                    other => {
                        return Err(ApiError::Bad(format!(
                            "format {other:?}: jsonl, csv or ocsf"
                        )));
                    }
                });
            }
        }
    }
    // The filters as given, in the shape `kaudit export` records (the
    // verifier reads them back).
    let given = |k: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(n, v)| n == k && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_owned())
    };
    let asked = json!({
        "since": given("since"), "until": given("until"), "rule": filter.rule,
        "severity": filter.min_severity, "category": filter.category, "cluster": filter.cluster,
        "user": filter.user, "namespace": filter.namespace,
    });
    let key = console.signing_key.clone();
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let name = format!("kaudit-evidence-{stamp}");
    let scratch = std::env::temp_dir().join(format!(
        "kaudit-console-{}-{}",
        std::process::id(),
        hex::encode(rand_bytes())
    ));
    let dir = scratch.join(&name);
    let archive = scratch.join(format!("{name}.tar.gz"));
    let (d, a) = (dir.clone(), archive.clone());
    let result = console
        .with_store_any(move |s| {
            crate::cli::evidence::bundle(s, &filter, asked, &formats, key, &d, Some(MAX_ROWS))
                .map_err(|e| format!("{e:#}"))?;
            crate::export::pack(&d, &a).map_err(|e| e.to_string())?;
            let size = std::fs::metadata(&a).map_err(|e| e.to_string())?.len();
            if size > MAX_DOWNLOAD as u64 {
                return Err(format!(
                    "the bundle is {} MB, more than the console hands out ({} MB): run `kaudit export` on the host",
                    size >> 20,
                    MAX_DOWNLOAD >> 20
                ));
            }
            std::fs::read(&a).map_err(|e| e.to_string())
        })
        .await;
    let _ = std::fs::remove_dir_all(&scratch);
    drop(permit);
    // What the user can do about a refusal is said; store details are not.
    let bytes = result.map_err(|e| {
        if e.contains("kaudit export") {
            ApiError::Bad(e)
        } else {
            ApiError::Store(e)
        }
    })?;
    Ok((format!("{name}.tar.gz"), bytes))
}

/// The largest bundle the console hands out (it is held in memory), and
/// the most findings it puts in one.
const MAX_DOWNLOAD: usize = 256 << 20;
const MAX_ROWS: usize = 200_000;
/// Silences made from a finding last at most this long.
const SILENCE_MAX: i64 = 30 * 86_400;
/// Coverage ranges asked for span at most this long.
const COVERAGE_MAX: i64 = 400 * 86_400;

fn rand_bytes() -> [u8; 8] {
    use rand_core::RngCore;
    let mut b = [0u8; 8];
    rand_core::OsRng.fill_bytes(&mut b);
    b
}

/// A finding's row in a list.
pub fn summary(r: &StoredFinding) -> Value {
    let f = &r.finding;
    json!({
        "seq": r.seq,
        "id": f["id"],
        "time": f["time"],
        "severity": f["severity"],
        "rule_id": f["rule_id"],
        "category": f["category"],
        "cluster": f["cluster"],
        "namespace": f["namespace"],
        "user": f["user"],
        "summary": f["summary"],
    })
}

/// `GET /api/...`.
pub async fn answer(console: &Arc<Console>, path: &str, query: &str) -> Result<Value, ApiError> {
    match path {
        "/api/findings" => {
            let (f, paging) = parse_query(query)?;
            let page = list(console, f, paging).await?;
            Ok(json!({
                "findings": page.rows.iter().map(summary).collect::<Vec<_>>(),
                "next_before": page.next_before,
            }))
        }
        "/api/coverage" => coverage(console, query).await,
        "/api/deliveries" => Ok(json!({"sinks": deliveries(console).await?})),
        p => {
            let id = p.strip_prefix("/api/findings/").ok_or(ApiError::NotFound)?;
            let d = detail(console, id).await?;
            Ok(json!({
                "seq": d.stored.seq,
                "hash": d.stored.hash,
                "prev_hash": d.stored.prev_hash,
                "finding": d.stored.finding,
                "related": d.related.iter().map(summary).collect::<Vec<_>>(),
                "alerts": d.alerts.iter().map(|a| json!({
                    "sink": a.sink, "state": a.state, "attempts": a.attempts,
                    "last_error": a.last_error, "repeats": a.repeats,
                })).collect::<Vec<_>>(),
                "triage": d.triage.iter().map(triage_view).collect::<Vec<_>>(),
            }))
        }
    }
}

/// The API, described (OpenAPI 3.1).
pub fn openapi() -> Value {
    let filters = [
        (
            "since",
            "RFC 3339 time, date, or a duration back from now (24h)",
        ),
        ("until", "RFC 3339 time, date, or a duration back from now"),
        (
            "severity",
            "at least this severity: info, low, medium, high, critical",
        ),
        ("rule", "rule ids, comma-separated"),
        ("category", "categories, comma-separated"),
        ("cluster", "clusters, comma-separated"),
        ("namespace", "namespaces, comma-separated"),
        ("user", "users, comma-separated"),
    ];
    let mut params: Vec<Value> = filters
        .iter()
        .map(|(n, d)| json!({"name": n, "in": "query", "required": false, "description": d, "schema": {"type": "string"}}))
        .collect();
    params.push(json!({"name": "before", "in": "query", "required": false,
        "description": "the next page: the `next_before` of the previous one", "schema": {"type": "integer"}}));
    params.push(json!({"name": "after", "in": "query", "required": false,
        "description": "only findings stored after this chain position (what is new since a page was read)", "schema": {"type": "integer"}}));
    params.push(json!({"name": "limit", "in": "query", "required": false,
        "description": "rows per page (default 50, at most 500)", "schema": {"type": "integer"}}));
    json!({
        "openapi": "3.1.0",
        "info": {"title": "kaudit findings console API", "version": env!("CARGO_PKG_VERSION")},
        "components": {"securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}},
        "security": [{"token": []}],
        "paths": {
            "/api/findings": {"get": {
                "summary": "Findings, newest first, filtered, one page at a time",
                "parameters": params,
                "responses": {"200": {"description": "`findings` (seq, id, time, severity, rule_id, category, cluster, namespace, user, summary) and `next_before`"}}
            }},
            "/api/findings/{id}": {"get": {
                "summary": "One finding in full: the stored finding with its evidence, its chain position, related findings and alert states",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the finding"}, "404": {"description": "no such finding"}}
            }},
            "/api/coverage": {"get": {
                "summary": "Events per cluster and hour, with silent hours and stretches",
                "parameters": [params[0].clone(), params[1].clone()],
                "responses": {"200": {"description": "`clusters` and `hourly`, as in an evidence bundle's manifest"}}
            }},
            "/api/deliveries": {"get": {
                "summary": "Alert delivery per sink: delivered, retrying, waiting, dead, last error",
                "responses": {"200": {"description": "`sinks`"}}
            }},
            "/api/findings/{id}/triage": {"post": {
                "summary": "Records triage of a finding: acknowledge, false_positive, silence (a silence of its rule, cluster, user and namespace for `silence_for`, default 7d) or reopen, with a comment",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["action", "comment"],
                    "properties": {
                        "action": {"type": "string", "enum": ["acknowledge", "false_positive", "silence", "reopen"]},
                        "comment": {"type": "string"},
                        "actor": {"type": "string", "description": "who; required with a bare bearer token"},
                        "silence_for": {"type": "string", "description": "a duration (30m, 24h, 7d)"}
                    }}}}},
                "responses": {"201": {"description": "the record"}, "400": {"description": "a field to fix"}, "404": {"description": "no such finding"}}
            }},
            "/api/export": {"get": {
                "summary": "The signed evidence bundle (.tar.gz) of the findings a filter selects; `kaudit verify` checks it",
                "parameters": [params[0].clone(), params[1].clone(), params[2].clone(), params[3].clone(), params[4].clone(), params[5].clone(), params[6].clone(), params[7].clone(),
                    {"name": "format", "in": "query", "required": false, "description": "jsonl, csv, ocsf (comma-separated; default all)", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "application/gzip"}}
            }}
        }
    })
}
