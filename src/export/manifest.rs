//! `manifest.json` and `manifest.sig`: what a bundle holds and the
//! signature that vouches for it.
//!
//! Input: the export request, the findings written and the digest of every
//! file written before the manifest. Output: the [`Manifest`] (filters as
//! given, time range, counts by rule and by severity, chain head, sha256
//! and size of every other file, kaudit version, export time, coverage,
//! the signing key's public half) as pretty JSON, and the Ed25519
//! signature over those exact bytes, base64 with a final newline.
//!
//! Checking a manifest against the files is [`super::verify`]'s job.

use std::collections::BTreeMap;

use base64::Engine;
use ed25519_dalek::Signer;
use serde::{Deserialize, Serialize};

use super::{Error, ExportRequest, Format};

/// Identifies the bundle layout this module writes.
pub const BUNDLE_FORMAT: &str = "kaudit-evidence-bundle/1";

/// The chain rule, stated in every manifest.
pub const HASH_CHAIN_RULE: &str = "hash = hex(sha256(hex_decode(prev_hash) || line)), line = the finding as RFC 8785 canonical JSON (one line of findings.jsonl, without its newline)";

/// The manifest of a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub bundle_format: String,
    pub kaudit_version: String,
    /// When the bundle was written, RFC 3339 UTC.
    pub exported_at: String,
    /// The filters as given to the export.
    pub filters: serde_json::Value,
    pub time_range: TimeRange,
    /// The formats written (`jsonl` always).
    pub formats: Vec<String>,
    pub counts: Counts,
    /// The chain head at export time: everything exported is at or before it.
    pub chain_head: Option<ChainHead>,
    pub hash_chain: String,
    /// Monitoring coverage over the time range, as given to the export.
    pub coverage: serde_json::Value,
    /// Every file of the bundle but the manifest and its signature.
    pub files: BTreeMap<String, FileDigest>,
    /// The public half of the key that signed `manifest.sig`, if signed.
    pub signing_key: Option<SigningKeyInfo>,
}

/// The export's time range; `null` ends are unbounded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRange {
    pub since: Option<String>,
    pub until: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Lines of `findings.jsonl`.
    pub findings: u64,
    /// Lines of `chain.jsonl`.
    pub chain_rows: u64,
    pub by_rule: BTreeMap<String, u64>,
    pub by_severity: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub sha256: String,
    pub bytes: u64,
}

impl FileDigest {
    pub fn of(bytes: &[u8]) -> FileDigest {
        FileDigest {
            sha256: super::sha256_hex(bytes),
            bytes: bytes.len() as u64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyInfo {
    /// Always `Ed25519`.
    pub algorithm: String,
    /// The raw 32-byte public key, hex.
    pub public_key: String,
}

/// Counts by rule and by severity of `findings`.
pub fn count(findings: &[&serde_json::Value]) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let mut by_rule = BTreeMap::new();
    let mut by_severity = BTreeMap::new();
    for f in findings {
        let get = |k: &str| f.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
        *by_rule.entry(get("rule_id")).or_insert(0) += 1;
        *by_severity.entry(get("severity")).or_insert(0) += 1;
    }
    (by_rule, by_severity)
}

/// What [`build`] needs.
pub(crate) struct Inputs<'a> {
    pub req: &'a ExportRequest,
    pub formats: &'a [Format],
    pub exported_at: time::OffsetDateTime,
    pub findings: &'a [&'a serde_json::Value],
    pub chain_rows: u64,
    pub files: BTreeMap<String, FileDigest>,
}

pub(crate) fn build(i: Inputs<'_>) -> Manifest {
    let (by_rule, by_severity) = count(i.findings);
    let rfc = |t: Option<i64>| t.and_then(super::jsonl::rfc3339);
    Manifest {
        bundle_format: BUNDLE_FORMAT.into(),
        kaudit_version: i.req.kaudit_version.clone(),
        exported_at: i
            .exported_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        filters: i.req.filters.clone(),
        time_range: TimeRange {
            since: rfc(i.req.since),
            until: rfc(i.req.until),
        },
        formats: i.formats.iter().map(|f| f.as_str().to_owned()).collect(),
        counts: Counts {
            findings: i.findings.len() as u64,
            chain_rows: i.chain_rows,
            by_rule,
            by_severity,
        },
        chain_head: i.req.chain_head.as_ref().map(|(seq, hash)| ChainHead {
            seq: *seq,
            hash: hash.clone(),
        }),
        hash_chain: HASH_CHAIN_RULE.into(),
        coverage: i.req.coverage.clone(),
        files: i.files,
        signing_key: i.req.signing_key.as_ref().map(|k| SigningKeyInfo {
            algorithm: "Ed25519".into(),
            public_key: hex::encode(k.verifying_key().to_bytes()),
        }),
    }
}

/// The exact bytes of `manifest.json`.
pub fn to_bytes(m: &Manifest) -> Result<Vec<u8>, Error> {
    let mut out = serde_json::to_vec_pretty(m).map_err(|source| Error::Json {
        what: "the manifest",
        source,
    })?;
    out.push(b'\n');
    Ok(out)
}

/// `manifest.sig`: the base64 Ed25519 signature of `manifest_bytes`.
pub fn sign(key: &ed25519_dalek::SigningKey, manifest_bytes: &[u8]) -> String {
    let sig = key.sign(manifest_bytes);
    let mut s = base64::engine::general_purpose::STANDARD.encode(sig.to_bytes());
    s.push('\n');
    s
}

/// Whether `sig_file` (the contents of `manifest.sig`) is `key`'s
/// signature of `manifest_bytes`; the error says what is wrong.
pub fn check_signature(
    key: &ed25519_dalek::VerifyingKey,
    manifest_bytes: &[u8],
    sig_file: &[u8],
) -> Result<(), String> {
    let text = std::str::from_utf8(sig_file)
        .map_err(|_| "not base64 text".to_owned())?
        .trim();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("not base64 ({e})"))?;
    let raw: [u8; 64] = raw
        .as_slice()
        .try_into()
        .map_err(|_| format!("{} bytes, an Ed25519 signature has 64", raw.len()))?;
    let sig = ed25519_dalek::Signature::from_bytes(&raw);
    key.verify_strict(manifest_bytes, &sig)
        .map_err(|_| "the signature does not match this public key (or manifest.json was changed after signing)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::tests::key;

    #[test]
    fn signatures_check_and_say_what_is_wrong() {
        let k = key(1);
        let sig = sign(&k, b"manifest");
        assert!(sig.ends_with('\n'));
        assert_eq!(
            check_signature(&k.verifying_key(), b"manifest", sig.as_bytes()),
            Ok(())
        );
        let wrong = check_signature(&key(2).verifying_key(), b"manifest", sig.as_bytes());
        assert!(
            wrong
                .unwrap_err()
                .contains("does not match this public key")
        );
        let edited = check_signature(&k.verifying_key(), b"manifest!", sig.as_bytes());
        assert!(edited.is_err());
        assert!(
            check_signature(&k.verifying_key(), b"m", b"%%%")
                .unwrap_err()
                .contains("not base64")
        );
        assert!(
            check_signature(&k.verifying_key(), b"m", b"AAAA")
                .unwrap_err()
                .contains("64")
        );
    }

    #[test]
    fn counts_by_rule_and_severity() {
        let a = serde_json::json!({"rule_id": "r1", "severity": "high"});
        let b = serde_json::json!({"rule_id": "r2", "severity": "high"});
        let (rules, sev) = count(&[&a, &b, &a]);
        assert_eq!(rules["r1"], 2);
        assert_eq!(sev["high"], 3);
    }
}
