//! Triage: what people did about a finding (acknowledged it, called it a
//! false positive, silenced findings like it, reopened it), with a comment,
//! who and when. Findings never change (the chain hashes them): triage is
//! kept beside them, shown in the console and exported with them.

use super::db::{OptionalExt, params};

use super::error::sql;
use super::{Error, Store};

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriageAction {
    Acknowledge,
    FalsePositive,
    Silence,
    Reopen,
}

impl TriageAction {
    pub fn as_str(self) -> &'static str {
        match self {
            TriageAction::Acknowledge => "acknowledge",
            TriageAction::FalsePositive => "false_positive",
            TriageAction::Silence => "silence",
            TriageAction::Reopen => "reopen",
        }
    }

    pub fn parse(s: &str) -> Option<TriageAction> {
        [
            TriageAction::Acknowledge,
            TriageAction::FalsePositive,
            TriageAction::Silence,
            TriageAction::Reopen,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

/// One triage record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Triage {
    pub id: i64,
    pub finding_id: String,
    pub action: TriageAction,
    pub comment: String,
    pub actor: String,
    /// Unix seconds.
    pub at: i64,
    /// The silence it created (`silence`).
    pub silence_id: Option<i64>,
}

impl Store {
    /// Records a triage action on an existing finding; its id.
    ///
    /// # Errors
    /// No such finding, or the store refused.
    pub fn add_triage(&self, t: &Triage) -> Result<i64, Error> {
        let id: Option<i64> = self
            .conn
            .query_row(
                "INSERT INTO triage (finding_id, action, comment, actor, at, silence_id)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM findings WHERE id = ?1)
                 RETURNING id",
                params![
                    t.finding_id,
                    t.action.as_str(),
                    t.comment,
                    t.actor,
                    t.at,
                    t.silence_id
                ],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql("record triage"))?;
        id.ok_or_else(|| Error::Corrupt {
            seq: 0,
            what: format!("no finding {}", t.finding_id),
        })
    }

    /// The triage of the findings `ids`, oldest first.
    pub fn triage_of(&self, ids: &[&str]) -> Result<Vec<Triage>, Error> {
        let mut out = Vec::new();
        for id in ids {
            let rows = self
                .conn
                .query_map(
                    "SELECT id, finding_id, action, comment, actor, at, silence_id FROM triage
                     WHERE finding_id = ?1 ORDER BY id",
                    params![id],
                    |r| {
                        let action: String = r.get(2)?;
                        Ok(Triage {
                            id: r.get(0)?,
                            finding_id: r.get(1)?,
                            action: TriageAction::parse(&action)
                                .unwrap_or(TriageAction::Acknowledge),
                            comment: r.get(3)?,
                            actor: r.get(4)?,
                            at: r.get(5)?,
                            silence_id: r.get(6)?,
                        })
                    },
                )
                .map_err(sql("read triage"))?;
            out.extend(rows);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Batch, Store};
    use super::*;

    #[test]
    fn triage_is_kept_beside_the_finding() {
        let (_dir, mut store) = temp_store();
        let f = finding("prod", "a1", "pod-exec");
        store
            .commit(&Batch {
                findings: vec![f.clone()],
                ..Batch::default()
            })
            .unwrap();
        let t = Triage {
            id: 0,
            finding_id: f.id.clone(),
            action: TriageAction::FalsePositive,
            comment: "the CI runner".into(),
            actor: "alice".into(),
            at: 100,
            silence_id: None,
        };
        store.add_triage(&t).unwrap();
        let got = store.triage_of(&[f.id.as_str()]).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].action, TriageAction::FalsePositive);
        assert_eq!(got[0].actor, "alice");
        let missing = Triage {
            finding_id: "nope".into(),
            ..t
        };
        assert!(store.add_triage(&missing).is_err());
        let _: &Store = &store;
    }
}
