//! Health of the audit stream itself: per cluster, the wall-clock time the
//! last event arrived from a live source. A cluster that was sending and
//! then sends nothing for `silence_after` raises `audit-stream-silent` once;
//! when its events come back, `audit-stream-resumed`. (An attacker who
//! changes the audit policy, or stops the API server's log backend, looks
//! like this from outside; PCI DSS 10.7 asks for it to be noticed.)

use std::collections::HashMap;

use crate::detect::pipeline::{stream_resumed, stream_silent};
use crate::finding::Finding;

/// Clusters watched at most (the oldest silent ones are forgotten first).
const MAX_CLUSTERS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Stream {
    last: i64,
    /// Reported silent; holds the last event's time.
    silent_since: Option<i64>,
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
            if s.silent_since.is_none() && now - s.last > self.after {
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
}
