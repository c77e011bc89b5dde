//! The two JSON-lines files an auditor recomputes the hash chain from:
//! `findings.jsonl` (each finding as RFC 8785 canonical JSON, the exact
//! bytes the chain hashed) and `chain.jsonl` (every chain row in the time
//! range, exported or not).
//!
//! The chain rule: `hash = hex(sha256(hex_decode(prev_hash) ‖ line))`, where
//! `line` is the finding's canonical JSON without its newline. A row of
//! `chain.jsonl` names the `findings.jsonl` line it covers in
//! `findings_line` (1-based), or `null` when the finding was not selected.
//!
//! Reading the store and checking a bundle are elsewhere (`crate::store`,
//! [`super::verify`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ChainRow, Error, ExportRow};

/// One line of `chain.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainEntry {
    pub seq: u64,
    pub hash: String,
    pub prev_hash: String,
    pub cluster: String,
    pub rule_id: String,
    /// The finding's event time, RFC 3339 UTC.
    pub time: Option<String>,
    /// The 1-based `findings.jsonl` line holding this finding, when exported.
    pub findings_line: Option<u64>,
}

/// The finding as RFC 8785 canonical JSON: one line of `findings.jsonl`.
pub fn canonical_line(seq: u64, finding: &serde_json::Value) -> Result<String, Error> {
    // The store's RFC 8785 writer, not serde_jcs's: they order some keys
    // (quotes, backslashes, characters above U+FFFF) differently, and the
    // line must be byte for byte what the chain hashed.
    crate::store::canonical_json(finding).map_err(|source| Error::Canonical { seq, source })
}

/// `hex(sha256(hex_decode(prev_hash) ‖ line))`; the error says why
/// `prev_hash` is not hex.
pub fn chain_hash(prev_hash: &str, line: &[u8]) -> Result<String, String> {
    let prev = hex::decode(prev_hash)
        .map_err(|e| format!("prev_hash {prev_hash:?} is not hexadecimal ({e})"))?;
    let mut h = Sha256::new();
    h.update(&prev);
    h.update(line);
    Ok(hex::encode(h.finalize()))
}

/// `findings.jsonl`: the lines, each ended by a newline.
pub fn findings_file(lines: &[String]) -> String {
    let mut out = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// The rows of `chain.jsonl`: every given chain row plus every exported
/// one (an exported finding is always in its own chain proof), in seq
/// order, exported ones pointing at their `findings.jsonl` line. `rows` is
/// sorted by seq, in `findings.jsonl` order.
pub fn chain_entries(rows: &[&ExportRow], chain: &[ChainRow]) -> Result<Vec<ChainEntry>, Error> {
    let mut by_seq: BTreeMap<u64, ChainEntry> = BTreeMap::new();
    for c in chain {
        let entry = ChainEntry {
            seq: c.seq,
            hash: c.hash.clone(),
            prev_hash: c.prev_hash.clone(),
            cluster: c.cluster.clone(),
            rule_id: c.rule_id.clone(),
            time: c.time_unix.and_then(rfc3339),
            findings_line: None,
        };
        if let Some(old) = by_seq.insert(c.seq, entry) {
            if old.hash != c.hash {
                return Err(Error::Chain {
                    seq: c.seq,
                    what: "two chain rows with this position carry different hashes".into(),
                });
            }
        }
    }
    for (i, row) in rows.iter().enumerate() {
        let line = i as u64 + 1;
        let text = |k: &str| row.finding.get(k).and_then(|v| v.as_str()).unwrap_or("");
        match by_seq.get_mut(&row.seq) {
            Some(e) => {
                if !e.hash.eq_ignore_ascii_case(&row.hash)
                    || !e.prev_hash.eq_ignore_ascii_case(&row.prev_hash)
                {
                    return Err(Error::Chain {
                        seq: row.seq,
                        what: "the finding's hashes differ from the chain row at its position"
                            .into(),
                    });
                }
                if e.findings_line.is_some() {
                    return Err(Error::Chain {
                        seq: row.seq,
                        what: "the finding was selected twice".into(),
                    });
                }
                e.findings_line = Some(line);
            }
            None => {
                let time = text("time");
                by_seq.insert(
                    row.seq,
                    ChainEntry {
                        seq: row.seq,
                        hash: row.hash.clone(),
                        prev_hash: row.prev_hash.clone(),
                        cluster: text("cluster").to_owned(),
                        rule_id: text("rule_id").to_owned(),
                        time: (!time.is_empty()).then(|| time.to_owned()),
                        findings_line: Some(line),
                    },
                );
            }
        }
    }
    Ok(by_seq.into_values().collect())
}

/// `chain.jsonl`: one compact JSON object a line.
pub fn chain_file(entries: &[ChainEntry]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(entries.len() * 220);
    for e in entries {
        serde_json::to_writer(&mut out, e).map_err(|source| Error::Json {
            what: "a chain row",
            source,
        })?;
        out.push(b'\n');
    }
    Ok(out)
}

/// Unix seconds as RFC 3339 UTC (`None` outside the representable range).
pub fn rfc3339(unix: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
}

/// The lines of a JSON-lines file, without their newlines; a final
/// newline does not make an empty last line.
pub fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let empty = body.is_empty();
    body.split(|b| *b == b'\n').filter(move |_| !empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: evidence keys are attacker-chosen; the exported line
    /// must equal what the store hashed even for keys that sort
    /// differently by UTF-8 bytes and by UTF-16 units.
    #[test]
    fn canonical_line_is_the_stores() {
        let v = serde_json::json!({"evidence": {"\u{10000}": 1, "\u{ffff}": 2, "a\"b": 3, "a\\b": 4, "a\u{1}": 5}});
        assert_eq!(
            canonical_line(1, &v).unwrap(),
            crate::store::canonical_json(&v).unwrap()
        );
    }
    use serde_json::json;

    #[test]
    fn canonical_lines_sort_keys_and_hash_as_documented() {
        let line = canonical_line(1, &json!({"b": 1, "a": "x\u{2028}", "c": [1.0, 2.5]})).unwrap();
        assert_eq!(line, "{\"a\":\"x\u{2028}\",\"b\":1,\"c\":[1,2.5]}");
        let prev = "00".repeat(32);
        let mut h = Sha256::new();
        h.update([0u8; 32]);
        h.update(line.as_bytes());
        assert_eq!(
            chain_hash(&prev, line.as_bytes()).unwrap(),
            hex::encode(h.finalize())
        );
        assert!(
            chain_hash("zz", b"")
                .unwrap_err()
                .contains("not hexadecimal")
        );
    }

    #[test]
    fn lines_split_without_a_phantom_last_line() {
        assert_eq!(lines(b"").count(), 0);
        assert_eq!(
            lines(b"a\nb\n").collect::<Vec<_>>(),
            vec![&b"a"[..], &b"b"[..]]
        );
        assert_eq!(lines(b"a\nb").count(), 2);
    }

    #[test]
    fn exported_rows_point_at_their_lines_and_others_do_not() {
        let (rows, chain) = super::super::tests::sample(6);
        let refs: Vec<&ExportRow> = rows.iter().collect();
        let entries = chain_entries(&refs, &chain).unwrap();
        assert_eq!(entries.len(), 6);
        let lines: Vec<Option<u64>> = entries.iter().map(|e| e.findings_line).collect();
        assert_eq!(lines, vec![Some(1), Some(2), None, Some(3), Some(4), None]);
        assert_eq!(entries[0].time.as_deref(), Some("2026-07-01T10:00:01Z"));
    }

    #[test]
    fn an_exported_row_outside_the_given_chain_is_added() {
        let (rows, chain) = super::super::tests::sample(6);
        let refs: Vec<&ExportRow> = rows.iter().collect();
        let entries = chain_entries(&refs, &chain[2..]).unwrap();
        assert_eq!(entries.len(), 6);
        assert_eq!(entries[0].findings_line, Some(1));
        assert_eq!(entries[0].rule_id, "pod-exec");
    }

    #[test]
    fn conflicting_hashes_are_refused() {
        let (rows, mut chain) = super::super::tests::sample(3);
        chain[0].hash = "ab".repeat(32);
        let refs: Vec<&ExportRow> = rows.iter().collect();
        assert!(matches!(
            chain_entries(&refs, &chain),
            Err(Error::Chain { seq: 1, .. })
        ));
    }
}
