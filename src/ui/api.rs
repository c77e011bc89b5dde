//! The console's JSON API: findings (filtered, newest first, keyset
//! pages), one finding in full with its related findings and alert
//! states, coverage, and alert delivery per sink. The HTML pages read the
//! same functions. [`openapi`] describes it.

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
}

/// The query string as a filter, the page start and size.
///
/// # Errors
/// A time, severity or number that cannot be read.
pub fn parse_query(query: &str) -> Result<(Filter, Option<u64>, usize), ApiError> {
    let now = crate::timespec::now();
    let mut f = Filter::default();
    let mut before = None;
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
            "cluster" => list(&mut f.cluster),
            "namespace" => list(&mut f.namespace),
            "user" => list(&mut f.user),
            "before" => {
                before = Some(
                    v.parse()
                        .map_err(|_| ApiError::Bad(format!("before={v:?}: a chain position")))?,
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
    Ok((f, before, limit))
}

pub async fn list(
    console: &Arc<Console>,
    filter: Filter,
    before: Option<u64>,
    limit: usize,
) -> Result<Page, ApiError> {
    let mut rows = console
        .with_store(move |s| s.page(&filter, before, limit + 1))
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
            Ok(Some(Detail {
                stored,
                related,
                alerts,
            }))
        })
        .await
        .map_err(ApiError::Store)?
        .ok_or(ApiError::NotFound)
}

pub async fn coverage(console: &Arc<Console>, query: &str) -> Result<Value, ApiError> {
    let (f, _, _) = parse_query(query)?;
    let (since, until) = (f.since, f.until);
    let (rows, clusters) = console
        .with_store(move |s| Ok((s.coverage(since, until)?, s.coverage_clusters()?)))
        .await
        .map_err(ApiError::Store)?;
    Ok(crate::cli::evidence::coverage_json(
        &rows, &clusters, since, until,
    ))
}

pub async fn deliveries(
    console: &Arc<Console>,
) -> Result<Vec<crate::store::DeliverySummary>, ApiError> {
    console
        .with_store(|s| s.delivery_summary())
        .await
        .map_err(ApiError::Store)
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
            let (f, before, limit) = parse_query(query)?;
            let page = list(console, f, before, limit).await?;
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
            }}
        }
    })
}
