//! Health of the audit stream itself: per cluster, the wall-clock time the
//! last event arrived from a live source. A cluster that was sending and
//! then sends nothing for `silence_after` raises `audit-stream-silent` once;
//! when its events come back, `audit-stream-resumed`. (An attacker who
//! changes the audit policy, or stops the API server's log backend, looks
//! like this from outside; PCI DSS 10.7 asks for it to be noticed.)
//!
//! The clock of a silence only runs while kaudit could have heard the
//! cluster: after a restart (the state is saved with the store's commits)
//! and after a store outage (nothing was read meanwhile) each stream gets
//! a full `silence_after` again before it is called silent, and the
//! finding still says when its last event came.

use std::collections::HashMap;

use crate::detect::pipeline::{stream_resumed, stream_silent};
use crate::finding::Finding;

/// Clusters watched at most (the oldest silent ones are forgotten first).
const MAX_CLUSTERS: usize = 10_000;

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Stream {
    last: i64,
    /// Reported silent; holds the last event's time.
    silent_since: Option<i64>,
    /// Silence is counted from here when it is later than `last` (kaudit
    /// was not listening before).
    #[serde(skip)]
    listening_since: i64,
}

pub struct StreamWatch {
    after: i64,
    streams: HashMap<String, Stream>,
    resumed: Vec<Finding>,
}

impl StreamWatch {
    pub fn new(after: i64) -> Self {
        StreamWatch {
            after,
            streams: HashMap::new(),
            resumed: Vec::new(),
        }
    }

    /// A new threshold (configuration reload).
    pub fn set_after(&mut self, after: i64) {
        self.after = after;
    }

    /// kaudit heard nothing until `now` through no fault of the clusters
    /// (a store outage held all input): every stream gets a full threshold
    /// from `now`.
    pub fn listening_again(&mut self, now: i64) {
        for s in self.streams.values_mut() {
            s.listening_since = now;
        }
    }

    /// The streams, to be saved with a commit.
    pub fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&self.streams).unwrap_or_default()
    }

    /// Streams saved by an earlier run; kaudit has been listening since
    /// `now`.
    ///
    /// # Errors
    /// When `saved` is not a snapshot.
    pub fn restore(&mut self, saved: &[u8], now: i64) -> Result<(), serde_json::Error> {
        self.streams = serde_json::from_slice(saved)?;
        if self.streams.len() > MAX_CLUSTERS {
            self.streams.clear();
        }
        self.listening_again(now);
        Ok(())
    }

    /// An event from `cluster` arrived at `now` (Unix seconds).
    pub fn saw(&mut self, cluster: &str, now: i64) {
        match self.streams.get_mut(cluster) {
            Some(s) => {
                if let Some(last) = s.silent_since.take() {
                    self.resumed.push(stream_resumed(cluster, last, now));
                }
                s.last = now;
            }
            None => {
                if self.streams.len() >= MAX_CLUSTERS
                    && let Some(oldest) = self
                        .streams
                        .iter()
                        .min_by_key(|(_, s)| s.last)
                        .map(|(k, _)| k.clone())
                {
                    self.streams.remove(&oldest);
                }
                self.streams.insert(
                    cluster.to_owned(),
                    Stream {
                        last: now,
                        silent_since: None,
                        listening_since: now,
                    },
                );
            }
        }
    }

    /// Findings for streams that came back (taken once).
    pub fn take_resumed(&mut self) -> Vec<Finding> {
        std::mem::take(&mut self.resumed)
    }

    /// Findings for streams silent for longer than the threshold at `now`,
    /// each reported once per silence.
    pub fn check(&mut self, now: i64) -> Vec<Finding> {
        let mut out = Vec::new();
        for (cluster, s) in &mut self.streams {
            if s.silent_since.is_none() && now - s.last.max(s.listening_since) > self.after {
                s.silent_since = Some(s.last);
                out.push(stream_silent(cluster, s.last, self.after, now));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_once_then_resumed_once() {
        let mut w = StreamWatch::new(600);
        w.saw("prod", 1000);
        w.saw("dev", 1000);
        assert!(w.check(1500).is_empty());
        w.saw("dev", 1550);
        let silent = w.check(1700);
        assert_eq!(silent.len(), 1);
        assert_eq!(silent[0].rule_id, "audit-stream-silent");
        assert_eq!(silent[0].cluster, "prod");
        assert!(w.check(1800).is_empty(), "reported once");
        w.saw("prod", 1900);
        let back = w.take_resumed();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].rule_id, "audit-stream-resumed");
        assert!(w.take_resumed().is_empty());
        // A second silence is a second finding (another start time).
        let again = w.check(2600);
        assert_eq!(again.len(), 2, "dev and prod");
        assert_ne!(again[0].id, silent[0].id);
    }

    #[test]
    fn a_store_outage_or_a_restart_gives_a_full_threshold_again() {
        let mut w = StreamWatch::new(600);
        w.saw("prod", 1000);
        w.saw("dev", 1000);
        assert_eq!(w.check(1700).len(), 2);
        w.saw("prod", 1800); // prod resumes; dev stays silent
        let saved = w.snapshot();

        // kaudit was down from 1800 to 5000.
        let mut w = StreamWatch::new(600);
        w.restore(&saved, 5000).unwrap();
        assert!(
            w.check(5500).is_empty(),
            "a full threshold after the restart"
        );
        let silent = w.check(5601);
        assert_eq!(silent.len(), 1, "dev was reported before the restart");
        assert_eq!(silent[0].cluster, "prod");
        assert_eq!(
            silent[0].details["last_event_at"],
            crate::timespec::unix_to_rfc3339(1800)
        );

        // The store held all input from 6000 to 9000.
        let mut w = StreamWatch::new(600);
        w.saw("prod", 6000);
        w.listening_again(9000);
        assert!(w.check(9500).is_empty());
        assert_eq!(w.check(9700).len(), 1);
        assert!(StreamWatch::new(1).restore(b"not json", 0).is_err());
    }
}
