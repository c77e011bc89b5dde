//! Reads: filtered findings ([`Store::query`]), the chain rows of a time
//! range ([`Store::chain_rows`], what an export proves completeness with)
//! and coverage ([`Store::coverage`]).
//!
//! Time ranges are unix seconds, `since` inclusive, `until` exclusive,
//! either open. Filters combine with AND; the values of one list filter
//! combine with OR. Rendering the results is `output`'s and `export`'s job.

use super::db::{Conn, Dialect, Param, ToParam, params};

use super::error::sql;
use super::{Error, Store};
use crate::finding::Severity;

/// Which findings to return. `Default` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Finding time at or after, unix seconds.
    pub since: Option<i64>,
    /// Finding time before, unix seconds.
    pub until: Option<i64>,
    pub rule: Vec<String>,
    /// At least this severity.
    pub min_severity: Option<Severity>,
    pub category: Vec<String>,
    pub cluster: Vec<String>,
    pub user: Vec<String>,
    pub namespace: Vec<String>,
}

/// A stored finding with its place in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFinding {
    pub seq: u64,
    pub hash: String,
    pub prev_hash: String,
    /// The finding JSON (parsed from `canonical`).
    pub finding: serde_json::Value,
    /// The exact canonical JSON the chain hashes.
    pub canonical: String,
}

/// One chain row, without the finding: an export lists these for its whole
/// time range so an auditor can see that nothing is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRow {
    pub seq: u64,
    pub hash: String,
    pub prev_hash: String,
    pub cluster: String,
    pub rule_id: String,
    /// `None` when the finding has no parseable time.
    pub time_unix: Option<i64>,
}

/// Events seen for a cluster, hour and source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoverageRow {
    pub cluster: String,
    /// Unix time of the hour's start.
    pub hour: i64,
    pub source: String,
    pub events: u64,
    pub malformed: u64,
    pub truncated: u64,
}

/// A parameter of a built query.
#[derive(Debug, Clone)]
enum Value {
    Integer(i64),
    Text(String),
}

impl ToParam for Value {
    fn to_param(&self) -> Param<'_> {
        match self {
            Value::Integer(i) => Param::Int(*i),
            Value::Text(t) => Param::Text(t),
        }
    }
}

fn as_params(v: &[Value]) -> Vec<&dyn ToParam> {
    v.iter().map(|p| p as &dyn ToParam).collect()
}

/// Builds a WHERE clause and its parameters.
#[derive(Default)]
struct Where {
    clauses: Vec<String>,
    params: Vec<Value>,
}

impl Where {
    fn cmp(&mut self, column: &str, op: &str, v: Value) {
        self.params.push(v);
        self.clauses
            .push(format!("{column} {op} ?{}", self.params.len()));
    }

    fn any_of(&mut self, column: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        let mut marks = Vec::with_capacity(values.len());
        for v in values {
            self.params.push(Value::Text(v.clone()));
            marks.push(format!("?{}", self.params.len()));
        }
        self.clauses
            .push(format!("{column} IN ({})", marks.join(", ")));
    }

    fn time(&mut self, since: Option<i64>, until: Option<i64>) {
        if let Some(s) = since {
            self.cmp("time_unix", ">=", Value::Integer(s));
        }
        if let Some(u) = until {
            self.cmp("time_unix", "<", Value::Integer(u));
        }
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }
}

impl Store {
    /// The findings matching `filter`, ordered by time then chain position,
    /// at most `limit` of them. Findings without a parseable time come first
    /// and are left out by any time bound.
    pub fn query(
        &self,
        filter: &Filter,
        limit: Option<usize>,
    ) -> Result<Vec<StoredFinding>, Error> {
        let mut w = Where::default();
        w.time(filter.since, filter.until);
        w.any_of("rule_id", &filter.rule);
        if let Some(s) = filter.min_severity {
            w.cmp("severity", ">=", Value::Integer(s as i64));
        }
        w.any_of("category", &filter.category);
        w.any_of("cluster", &filter.cluster);
        w.any_of("\"user\"", &filter.user);
        w.any_of("namespace", &filter.namespace);
        let limit = limit.map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX));
        w.params.push(Value::Integer(limit));
        let text = format!(
            "SELECT seq, hash, prev_hash, finding FROM findings {} ORDER BY time_unix NULLS FIRST, seq LIMIT ?{}",
            w.sql(),
            w.params.len()
        );
        self.read_findings(&text, &w.params)
    }

    /// Every chain row whose finding time is in the range, plus every row
    /// with no parseable time (it could belong to any range), in chain
    /// order.
    pub fn chain_rows(
        &self,
        since: Option<i64>,
        until: Option<i64>,
    ) -> Result<Vec<ChainRow>, Error> {
        let mut out = Vec::new();
        self.for_each_chain_row(since, until, |r| {
            out.push(r);
            Ok(())
        })?;
        Ok(out)
    }

    /// [`Store::chain_rows`], streamed: `f` sees each row in chain order;
    /// its error stops the walk and is returned.
    pub fn for_each_chain_row(
        &self,
        since: Option<i64>,
        until: Option<i64>,
        mut f: impl FnMut(ChainRow) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut w = Where::default();
        w.time(since, until);
        let cond = if w.clauses.is_empty() {
            String::new()
        } else {
            format!("({}) OR time_unix IS NULL", w.clauses.join(" AND "))
        };
        // `f` may be slow (it writes an export): rows are read in pages
        // of seq so that no query stays open across calls to it.
        let mut after = i64::MIN;
        loop {
            let mut params = w.params.clone();
            params.push(Value::Integer(after));
            let n = params.len();
            let text = format!(
                "SELECT seq, hash, prev_hash, cluster, rule_id, time_unix FROM findings
                 WHERE seq > ?{n} {} ORDER BY seq LIMIT {CHAIN_PAGE}",
                if cond.is_empty() {
                    String::new()
                } else {
                    format!("AND ({cond})")
                }
            );
            let page = self
                .conn
                .query_map(&text, &as_params(&params), |r| {
                    Ok(ChainRow {
                        seq: r.get(0)?,
                        hash: r.get(1)?,
                        prev_hash: r.get(2)?,
                        cluster: r.get(3)?,
                        rule_id: r.get(4)?,
                        time_unix: r.get(5)?,
                    })
                })
                .map_err(sql("read chain rows"))?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = i64::try_from(last.seq).unwrap_or(i64::MAX);
            let full = page.len() >= CHAIN_PAGE;
            for row in page {
                f(row)?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Coverage rows whose hour starts in the range, by cluster, hour, source.
    pub fn coverage(
        &self,
        since: Option<i64>,
        until: Option<i64>,
    ) -> Result<Vec<CoverageRow>, Error> {
        coverage(&self.conn, since, until)
    }

    /// One page of the findings that match, newest first (by chain
    /// position): at most `limit`, below `before` when given (keyset
    /// pagination: the next page starts below the last row's `seq`), above
    /// `after` when given (what arrived since a page was shown).
    pub fn page(
        &self,
        filter: &Filter,
        before: Option<u64>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredFinding>, Error> {
        let mut w = Where::default();
        w.time(filter.since, filter.until);
        w.any_of("rule_id", &filter.rule);
        if let Some(s) = filter.min_severity {
            w.cmp("severity", ">=", Value::Integer(s as i64));
        }
        w.any_of("category", &filter.category);
        w.any_of("cluster", &filter.cluster);
        w.any_of("\"user\"", &filter.user);
        w.any_of("namespace", &filter.namespace);
        if let Some(b) = before {
            w.cmp(
                "seq",
                "<",
                Value::Integer(i64::try_from(b).unwrap_or(i64::MAX)),
            );
        }
        if let Some(a) = after {
            w.cmp(
                "seq",
                ">",
                Value::Integer(i64::try_from(a).unwrap_or(i64::MAX)),
            );
        }
        w.params
            .push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        let text = format!(
            "SELECT seq, hash, prev_hash, finding FROM findings {} ORDER BY seq DESC LIMIT ?{}",
            w.sql(),
            w.params.len()
        );
        self.read_findings(&text, &w.params)
    }

    /// The finding with id `id`.
    pub fn finding(&self, id: &str) -> Result<Option<StoredFinding>, Error> {
        let params = [Value::Text(id.to_owned())];
        Ok(self
            .read_findings(
                "SELECT seq, hash, prev_hash, finding FROM findings WHERE id = ?1",
                &params,
            )?
            .pop())
    }

    /// Findings near `f` in time (within `window` seconds either side) that
    /// share its user, its credential id or a source address: what the same
    /// actor did around it, oldest first, at most `limit`.
    pub fn related(
        &self,
        f: &serde_json::Value,
        window: i64,
        limit: usize,
    ) -> Result<Vec<StoredFinding>, Error> {
        let Some(t) = f["time"]
            .as_str()
            .and_then(crate::timespec::rfc3339_to_unix)
        else {
            return Ok(Vec::new());
        };
        let id = f["id"].as_str().unwrap_or_default().to_owned();
        let user = f["user"].as_str().unwrap_or_default().to_owned();
        let credential = f["details"]["credential_id"]
            .as_str()
            .or_else(|| {
                f["evidence"]["user"]["extra"]["authentication.kubernetes.io/credential-id"][0]
                    .as_str()
            })
            .unwrap_or_default()
            .to_owned();
        let ips: Vec<String> = f["source_ips"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let ips = serde_json::to_string(&ips).unwrap_or_else(|_| "[]".into());
        let params = [
            Value::Integer(t - window),
            Value::Integer(t + window),
            Value::Text(id),
            Value::Text(user),
            Value::Text(credential),
            Value::Text(ips),
            Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)),
        ];
        let text = match self.conn.dialect() {
            Dialect::Sqlite => RELATED_SQLITE,
            Dialect::Postgres => RELATED_POSTGRES,
        };
        self.read_findings(text, &params)
    }

    fn read_findings(&self, text: &str, params: &[Value]) -> Result<Vec<StoredFinding>, Error> {
        let rows: Vec<(u64, String, String, String)> = self
            .conn
            .query_map(text, &as_params(params), |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .map_err(sql("query findings"))?;
        rows.into_iter()
            .map(|(seq, hash, prev_hash, canonical)| {
                let finding = serde_json::from_str(&canonical).map_err(|e| Error::Corrupt {
                    seq,
                    what: format!("its finding is not JSON: {e}"),
                })?;
                Ok(StoredFinding {
                    seq,
                    hash,
                    prev_hash,
                    finding,
                    canonical,
                })
            })
            .collect()
    }

    /// Every cluster events ever came from, with the first and last hour
    /// (Unix time) in which any did.
    pub fn coverage_clusters(&self) -> Result<Vec<(String, i64, i64)>, Error> {
        self.conn
            .query_map(
                "SELECT cluster, MIN(hour), MAX(hour) FROM coverage WHERE events > 0
                 GROUP BY cluster ORDER BY cluster",
                params![],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(sql("read coverage"))
    }
}

/// Chain rows read per query by [`Store::for_each_chain_row`].
const CHAIN_PAGE: usize = 10_000;

/// Related findings (`Store::related`), in SQLite's JSON functions.
const RELATED_SQLITE: &str = "SELECT seq, hash, prev_hash, finding FROM findings
     WHERE time_unix BETWEEN ?1 AND ?2 AND id != ?3 AND (
        (?4 != '' AND \"user\" = ?4)
        OR (?5 != '' AND (json_extract(finding, '$.details.credential_id') = ?5
            OR json_extract(finding, '$.evidence.user.extra.\"authentication.kubernetes.io/credential-id\"[0]') = ?5))
        OR EXISTS (SELECT 1 FROM json_each(json_extract(finding, '$.source_ips')) a
                   JOIN json_each(?6) b ON a.value = b.value))
     ORDER BY time_unix, seq LIMIT ?7";

/// The same in PostgreSQL's.
const RELATED_POSTGRES: &str = "SELECT seq, hash, prev_hash, finding FROM findings
     WHERE time_unix BETWEEN ?1 AND ?2 AND id != ?3 AND (
        (?4 != '' AND \"user\" = ?4)
        OR (?5 != '' AND (CAST(finding AS json) #>> '{details,credential_id}' = ?5
            OR CAST(finding AS json) #>> '{evidence,user,extra,authentication.kubernetes.io/credential-id,0}' = ?5))
        OR EXISTS (SELECT 1 FROM json_array_elements_text(CAST(finding AS json) -> 'source_ips') a
                   WHERE a IN (SELECT json_array_elements_text(CAST(CAST(?6 AS TEXT) AS json)))))
     ORDER BY time_unix, seq LIMIT ?7";

fn coverage(
    conn: &Conn,
    since: Option<i64>,
    until: Option<i64>,
) -> Result<Vec<CoverageRow>, Error> {
    let mut w = Where::default();
    if let Some(s) = since {
        w.cmp("hour", ">=", Value::Integer(s));
    }
    if let Some(u) = until {
        w.cmp("hour", "<", Value::Integer(u));
    }
    let text = format!(
        "SELECT cluster, hour, source, events, malformed, truncated FROM coverage {} ORDER BY cluster, hour, source",
        w.sql()
    );
    conn.query_map(&text, &as_params(&w.params), |r| {
        Ok(CoverageRow {
            cluster: r.get(0)?,
            hour: r.get(1)?,
            source: r.get(2)?,
            events: r.get::<i64>(3)? as u64,
            malformed: r.get::<i64>(4)? as u64,
            truncated: r.get::<i64>(5)? as u64,
        })
    })
    .map_err(sql("read coverage"))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Batch, CoverageDelta};
    use super::*;
    use crate::finding::Finding;

    /// 2 clusters x 3 rules x 4 days x 2 users x 2 namespaces, severities
    /// and categories by rule; one finding without a time.
    fn corpus() -> Vec<Finding> {
        let rules = [
            ("pod-exec", "exec", Severity::Medium),
            ("impersonate-masters", "impersonation", Severity::Critical),
            ("k8s-deployment-created", "workload", Severity::Info),
        ];
        let mut out = Vec::new();
        let mut n = 0;
        for cluster in ["prod", "dev"] {
            for (rule, category, sev) in rules {
                for day in 1..=4 {
                    for user in ["alice", "bob"] {
                        for ns in ["payments", "kube-system"] {
                            n += 1;
                            let mut f = finding_at(
                                cluster,
                                &format!("a{n}"),
                                rule,
                                &format!("2026-01-0{day}T10:00:0{}+00:00", n % 10),
                            );
                            f.category = category.into();
                            f.severity = sev;
                            f.user = user.into();
                            f.namespace = Some(ns.into());
                            out.push(f);
                        }
                    }
                }
            }
        }
        let mut untimed = finding("prod", "untimed", "pod-exec");
        untimed.time = Some("yesterday".into());
        out.push(untimed);
        out
    }

    fn day(d: u32) -> i64 {
        super::super::chain::parse_time(&format!("2026-01-0{d}T00:00:00Z")).unwrap()
    }

    /// The query's answer must be exactly the naive filter's.
    fn check(store: &Store, all: &[Finding], filter: &Filter) {
        let got: Vec<String> = store
            .query(filter, None)
            .unwrap()
            .into_iter()
            .map(|s| s.finding["id"].as_str().unwrap().to_owned())
            .collect();
        let t = |f: &Finding| f.time.as_deref().and_then(super::super::chain::parse_time);
        let any = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        let mut want: Vec<&Finding> = all
            .iter()
            .filter(|f| filter.since.is_none_or(|s| t(f).is_some_and(|t| t >= s)))
            .filter(|f| filter.until.is_none_or(|u| t(f).is_some_and(|t| t < u)))
            .filter(|f| any(&filter.rule, &f.rule_id))
            .filter(|f| filter.min_severity.is_none_or(|s| f.severity >= s))
            .filter(|f| any(&filter.category, &f.category))
            .filter(|f| any(&filter.cluster, &f.cluster))
            .filter(|f| any(&filter.user, &f.user))
            .filter(|f| any(&filter.namespace, f.namespace.as_deref().unwrap_or("")))
            .collect();
        // Stable sort by time keeps chain order within a second.
        want.sort_by_key(|f| t(f));
        let want: Vec<String> = want.into_iter().map(|f| f.id.clone()).collect();
        assert!(
            !want.is_empty()
                || *filter
                    == Filter {
                        since: Some(day(9)),
                        ..Filter::default()
                    }
        );
        assert_eq!(got, want, "{filter:?}");
    }

    #[test]
    fn each_filter_returns_exactly_what_matches() {
        let (_dir, mut store) = temp_store();
        let all = corpus();
        store
            .commit(&Batch {
                findings: all.clone(),
                ..Batch::default()
            })
            .unwrap();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let filters = [
            Filter::default(),
            Filter {
                since: Some(day(2)),
                ..Filter::default()
            },
            Filter {
                until: Some(day(3)),
                ..Filter::default()
            },
            Filter {
                since: Some(day(2)),
                until: Some(day(3)),
                ..Filter::default()
            },
            Filter {
                since: Some(day(9)),
                ..Filter::default()
            },
            Filter {
                rule: s(&["pod-exec"]),
                ..Filter::default()
            },
            Filter {
                rule: s(&["pod-exec", "impersonate-masters"]),
                ..Filter::default()
            },
            Filter {
                min_severity: Some(Severity::Medium),
                ..Filter::default()
            },
            Filter {
                min_severity: Some(Severity::Critical),
                ..Filter::default()
            },
            Filter {
                category: s(&["workload"]),
                ..Filter::default()
            },
            Filter {
                cluster: s(&["dev"]),
                ..Filter::default()
            },
            Filter {
                user: s(&["bob"]),
                ..Filter::default()
            },
            Filter {
                namespace: s(&["kube-system"]),
                ..Filter::default()
            },
            Filter {
                since: Some(day(1)),
                until: Some(day(3)),
                rule: s(&["pod-exec"]),
                cluster: s(&["prod"]),
                user: s(&["alice"]),
                namespace: s(&["payments"]),
                min_severity: Some(Severity::Low),
                category: s(&["exec"]),
            },
        ];
        for f in &filters {
            check(&store, &all, f);
        }
        // The untimed finding is stored and returned first when unbounded.
        let everything = store.query(&Filter::default(), None).unwrap();
        assert_eq!(everything.len(), all.len());
        assert_eq!(everything[0].finding["audit_id"], "untimed");
        // Limit, and the stored finding carries its chain link.
        let two = store.query(&Filter::default(), Some(2)).unwrap();
        assert_eq!(two.len(), 2);
        let one = &everything[1];
        assert_eq!(
            super::super::link_hash(&one.prev_hash, &one.canonical).as_deref(),
            Some(one.hash.as_str())
        );
        // Hostile-looking values are parameters, not SQL.
        let evil = Filter {
            user: s(&["' OR 1=1 --"]),
            ..Filter::default()
        };
        assert!(store.query(&evil, None).unwrap().is_empty());
    }

    #[test]
    fn chain_rows_cover_every_row_in_range() {
        let (_dir, mut store) = temp_store();
        let all = corpus();
        store
            .commit(&Batch {
                findings: all.clone(),
                ..Batch::default()
            })
            .unwrap();
        let rows = store.chain_rows(None, None).unwrap();
        assert_eq!(rows.len(), all.len());
        assert!(
            rows.windows(2)
                .all(|w| w[0].seq + 1 == w[1].seq && w[1].prev_hash == w[0].hash)
        );
        let day2 = store.chain_rows(Some(day(2)), Some(day(3))).unwrap();
        // 2 clusters x 3 rules x 2 users x 2 namespaces on day 2, plus the untimed row.
        assert_eq!(day2.len(), 24 + 1);
        assert_eq!(day2.iter().filter(|r| r.time_unix.is_none()).count(), 1);
        assert!(
            day2.iter()
                .all(|r| r.time_unix.is_none_or(|t| (day(2)..day(3)).contains(&t)))
        );
    }

    #[test]
    fn coverage_is_read_by_hour_range() {
        let (_dir, mut store) = temp_store();
        let h = day(1);
        let delta = |cluster: &str, hour: i64| CoverageDelta {
            cluster: cluster.into(),
            hour,
            source: "webhook".into(),
            events: 3,
            malformed: 0,
            truncated: 0,
        };
        store
            .commit(&Batch {
                coverage: vec![delta("a", h), delta("a", h + 3600), delta("b", h + 7200)],
                ..Batch::default()
            })
            .unwrap();
        assert_eq!(store.coverage(None, None).unwrap().len(), 3);
        let r = store.coverage(Some(h + 3600), Some(h + 7200)).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].cluster.as_str(), r[0].hour, r[0].events),
            ("a", h + 3600, 3)
        );
    }
}
