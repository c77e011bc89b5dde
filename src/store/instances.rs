//! Which instance stored events of which cluster, and when: several
//! instances share a store (one Kafka consumer group), and a topic keyed by
//! cluster keeps each cluster on one of them, which the stateful token
//! detectors rely on. Each instance notes the clusters it heard every few
//! seconds; a cluster that two instances keep hearing in turn (not one
//! after the other, as a rebalance moves it) is reported as split.
//!
//! What it owns: the `cluster_instances` table. The daemon's engine calls
//! it and turns a split into a warning and `kaudit_cluster_split_total`.

use super::db::{OptionalExt, params};
use super::error::sql;
use super::{Error, Store};

/// Another instance heard a cluster this long ago at most: still "now".
pub const SPLIT_WINDOW: i64 = 60;

impl Store {
    /// Notes that `instance` stored events of `clusters` at `now` (unix
    /// seconds). Returns (cluster, other instance) for each cluster that
    /// another instance heard after this one last did, while this one
    /// still hears it: the cluster's events reach both at once.
    pub fn note_clusters(
        &self,
        instance: &str,
        clusters: &[String],
        now: i64,
    ) -> Result<Vec<(String, String)>, Error> {
        let mut split = Vec::new();
        for cluster in clusters {
            let prev: Option<i64> = self
                .conn
                .query_row(
                    "SELECT last_seen FROM cluster_instances WHERE cluster = ?1 AND instance = ?2",
                    params![cluster, instance],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql("read cluster instances"))?;
            if let Some(prev) = prev {
                let others: Vec<String> = self
                    .conn
                    .query_map(
                        "SELECT instance FROM cluster_instances
                         WHERE cluster = ?1 AND instance != ?2 AND last_seen > ?3 AND last_seen > ?4
                         ORDER BY instance",
                        params![cluster, instance, prev, now - SPLIT_WINDOW],
                        |r| r.get(0),
                    )
                    .map_err(sql("read cluster instances"))?;
                split.extend(others.into_iter().map(|o| (cluster.clone(), o)));
            }
            self.conn
                .execute(
                    "INSERT INTO cluster_instances (cluster, instance, last_seen) VALUES (?1, ?2, ?3)
                     ON CONFLICT (cluster, instance) DO UPDATE SET last_seen = excluded.last_seen",
                    params![cluster, instance, now],
                )
                .map_err(sql("note cluster instances"))?;
        }
        Ok(split)
    }

    /// When an instance other than `instance` last stored events of
    /// `cluster` (unix seconds): a stream silent here may have moved there.
    pub fn cluster_heard_elsewhere(
        &self,
        cluster: &str,
        instance: &str,
    ) -> Result<Option<i64>, Error> {
        self.conn
            .query_row(
                "SELECT MAX(last_seen) FROM cluster_instances WHERE cluster = ?1 AND instance != ?2",
                params![cluster, instance],
                |r| r.get(0),
            )
            .map_err(sql("read cluster instances"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn a_rebalance_is_not_a_split_but_interleaving_is() {
        let (_dir, store) = temp_store();
        // a hears c1 and c2; then c1 moves to b (a rebalance): no split.
        assert!(
            store
                .note_clusters("a", &v(&["c1", "c2"]), 100)
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .note_clusters("b", &v(&["c1"]), 110)
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .note_clusters("a", &v(&["c2"]), 120)
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .note_clusters("b", &v(&["c1"]), 130)
                .unwrap()
                .is_empty()
        );
        // Now a hears c1 again while b still does: split, seen by both.
        assert_eq!(
            store.note_clusters("a", &v(&["c1"]), 140).unwrap(),
            [("c1".to_owned(), "b".to_owned())]
        );
        assert_eq!(
            store.note_clusters("b", &v(&["c1"]), 150).unwrap(),
            [("c1".to_owned(), "a".to_owned())]
        );
        assert_eq!(store.cluster_heard_elsewhere("c1", "a").unwrap(), Some(150));
        assert_eq!(store.cluster_heard_elsewhere("c2", "a").unwrap(), None);
        // Long after, an old note of another instance is not "at once".
        assert!(
            store
                .note_clusters("a", &v(&["c1"]), 150 + 10 * super::SPLIT_WINDOW)
                .unwrap()
                .is_empty()
        );
    }
}
