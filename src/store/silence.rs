//! Silences: "do not alert on findings like these until then", by rule,
//! category, cluster, namespace, user or one finding, with an expiry, a
//! comment and who set it. A silenced finding is still stored, and marked
//! (`silenced`): only its alerts are held back.

use super::db::{OptionalExt, params};

use super::error::sql;
use super::{Error, Store};
use crate::finding::Finding;

/// One silence. An empty matcher matches anything; all given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Silence {
    pub id: i64,
    pub rule: Option<String>,
    pub category: Option<String>,
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub user: Option<String>,
    pub finding: Option<String>,
    pub expires_at: i64,
    pub comment: String,
    pub created_by: String,
    pub created_at: i64,
    /// Set when expired by hand before its time.
    pub expired_at: Option<i64>,
}

impl Silence {
    /// Whether it holds back `f` at `now`.
    pub fn matches(&self, f: &Finding, now: i64) -> bool {
        let ok = |want: &Option<String>, got: &str| want.as_deref().is_none_or(|w| w == got);
        self.active(now)
            && ok(&self.rule, &f.rule_id)
            && ok(&self.category, &f.category)
            && ok(&self.cluster, &f.cluster)
            && ok(&self.namespace, f.namespace.as_deref().unwrap_or(""))
            && ok(&self.user, &f.user)
            && ok(&self.finding, &f.id)
    }

    pub fn active(&self, now: i64) -> bool {
        now < self.expires_at && self.expired_at.is_none()
    }
}

impl Store {
    /// Adds a silence; returns its id.
    pub fn add_silence(&self, s: &Silence) -> Result<i64, Error> {
        self.conn
            .query_row(
                "INSERT INTO silences (rule, category, cluster, namespace, \"user\", finding,
                     expires_at, comment, created_by, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING id",
                params![
                    s.rule,
                    s.category,
                    s.cluster,
                    s.namespace,
                    s.user,
                    s.finding,
                    s.expires_at,
                    s.comment,
                    s.created_by,
                    s.created_at
                ],
                |r| r.get(0),
            )
            .map_err(sql("add a silence"))
    }

    /// Every silence (active only unless `all`), newest first.
    pub fn silences(&self, now: i64, all: bool) -> Result<Vec<Silence>, Error> {
        self.conn
            .query_map(
                "SELECT id, rule, category, cluster, namespace, \"user\", finding, expires_at,
                     comment, created_by, created_at, expired_at
                 FROM silences
                 WHERE ?2 = 1 OR (expires_at > ?1 AND expired_at IS NULL)
                 ORDER BY id DESC",
                params![now, all],
                |r| {
                    Ok(Silence {
                        id: r.get(0)?,
                        rule: r.get(1)?,
                        category: r.get(2)?,
                        cluster: r.get(3)?,
                        namespace: r.get(4)?,
                        user: r.get(5)?,
                        finding: r.get(6)?,
                        expires_at: r.get(7)?,
                        comment: r.get(8)?,
                        created_by: r.get(9)?,
                        created_at: r.get(10)?,
                        expired_at: r.get(11)?,
                    })
                },
            )
            .map_err(sql("read silences"))
    }

    /// Ends silence `id` at `now`; false when there is no active one.
    pub fn expire_silence(&self, id: i64, now: i64) -> Result<bool, Error> {
        let n = self
            .conn
            .execute(
                "UPDATE silences SET expired_at = ?2 WHERE id = ?1 AND expired_at IS NULL AND expires_at > ?2",
                params![id, now],
            )
            .map_err(sql("expire a silence"))?;
        Ok(n == 1)
    }

    /// The silence that held back finding `id`'s alerts, if any.
    pub fn silenced_by(&self, id: &str) -> Result<Option<i64>, Error> {
        self.conn
            .query_row(
                "SELECT silence_id FROM silenced WHERE finding_id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql("read silenced"))
    }
}
