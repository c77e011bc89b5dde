//! Evidence bundles for auditors: the selected findings written as files
//! that prove what they claim, plus the means to check such a bundle.
//!
//! Input: the stored findings an export selected ([`ExportRow`], the finding
//! JSON with its chain position and hashes), every chain row in the export's
//! time range ([`ChainRow`], the completeness proof) and an
//! [`ExportRequest`] (directory, formats, filters as given, time range,
//! chain head, coverage, optional Ed25519 key). Output: a bundle directory
//! ([`export`]), optionally packed into a `.tar.gz` ([`pack`]), and a
//! verdict on a bundle ([`verify_bundle`]).
//!
//! Bundle layout (one directory):
//!
//! | file | what it holds |
//! |---|---|
//! | `findings.jsonl` | each finding as RFC 8785 canonical JSON, one a line: exactly the bytes the hash chain hashed (always written) |
//! | `findings.csv` | the same findings for spreadsheets, formula-escaped ([`csv`]) |
//! | `findings.ocsf.jsonl` | OCSF 1.2.0 Detection Findings ([`ocsf`]) |
//! | `chain.jsonl` | every chain row in the time range: seq, hash, prev_hash, cluster, rule_id, time, and the `findings.jsonl` line of those exported ([`jsonl`]) |
//! | `triage.jsonl` | what people did about the exported findings (acknowledged, false positive, silenced, reopened), by whom, when and why; when there is any |
//! | `README.md` | for the auditor: what the bundle proves and how to check it |
//! | `manifest.json` | filters, time range, counts, chain head, sha256 of every other file, version, export time, coverage ([`manifest`]) |
//! | `manifest.sig` | base64 Ed25519 signature over the exact `manifest.json` bytes, when a key was given |
//!
//! Reading stores, parsing filters and reading key files are left to
//! others (`crate::store`, the CLI); this module takes rows and keys as
//! values. The export checks every finding's hash against its content
//! before writing and re-verifies the bundle it wrote, so it never hands
//! an auditor a bundle that fails `kaudit verify`.

pub mod csv;
pub mod jsonl;
pub mod manifest;
pub mod ocsf;
pub mod verify;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use manifest::Manifest;
pub use verify::{BundleReport, SignatureStatus, verify_bundle};

/// The canonical findings, one a line.
pub const FINDINGS_JSONL: &str = "findings.jsonl";
/// The findings as CSV.
pub const FINDINGS_CSV: &str = "findings.csv";
/// The findings as OCSF Detection Findings, one a line.
pub const FINDINGS_OCSF: &str = "findings.ocsf.jsonl";
/// Every chain row in the time range.
pub const CHAIN_JSONL: &str = "chain.jsonl";
/// The auditor's guide.
pub const README_MD: &str = "README.md";
pub const TRIAGE_JSONL: &str = "triage.jsonl";
/// What the bundle holds, with the digest of every other file.
pub const MANIFEST_JSON: &str = "manifest.json";
/// The base64 Ed25519 signature of `manifest.json`.
pub const MANIFEST_SIG: &str = "manifest.sig";

/// The auditor's guide written into every bundle.
const README_TEXT: &str = include_str!("bundle_readme.md");

/// One stored finding selected for export.
#[derive(Debug, Clone)]
pub struct ExportRow {
    /// Its position in the hash chain.
    pub seq: u64,
    /// `hex(sha256(hex_decode(prev_hash) ‖ canonical JSON of finding))`.
    pub hash: String,
    /// The hash of the row before it.
    pub prev_hash: String,
    /// The finding JSON (DESIGN "A finding"), evidence included.
    pub finding: serde_json::Value,
}

/// One chain row in the export's time range, exported or not: the store's.
pub use crate::store::ChainRow;

/// An output format. `findings.jsonl` is written whatever is asked: it is
/// what the hash chain covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    Jsonl,
    Csv,
    Ocsf,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
            Format::Ocsf => "ocsf",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "jsonl" => Ok(Format::Jsonl),
            "csv" => Ok(Format::Csv),
            "ocsf" => Ok(Format::Ocsf),
            _ => Err(format!(
                "unknown export format {s:?}: expected jsonl, csv or ocsf"
            )),
        }
    }
}

/// What to export and where.
#[derive(Debug)]
pub struct ExportRequest {
    /// The bundle directory; created if missing, must be empty.
    pub out_dir: PathBuf,
    pub formats: Vec<Format>,
    /// The filters as the user gave them, echoed in the manifest.
    pub filters: serde_json::Value,
    /// Start of the time range, seconds since the Unix epoch (inclusive).
    pub since: Option<i64>,
    /// End of the time range, seconds since the Unix epoch.
    pub until: Option<i64>,
    /// The chain head (seq, hash) at export time.
    pub chain_head: Option<(u64, String)>,
    /// Monitoring coverage over the range, echoed in the manifest.
    pub coverage: serde_json::Value,
    pub signing_key: Option<ed25519_dalek::SigningKey>,
    pub kaudit_version: String,
    /// Triage of the exported findings (who acknowledged, called a false
    /// positive or silenced what, when and why), one JSON object each:
    /// written to `triage.jsonl` when there is any.
    pub triage: Vec<serde_json::Value>,
}

/// What went wrong while exporting, packing or reading a bundle.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: is not empty; an evidence bundle goes into a new or empty directory (nothing else may be in it)",
        .0.display()
    )]
    OutDirNotEmpty(PathBuf),
    #[error("finding at chain seq {seq}: cannot encode it as canonical JSON: {source}")]
    Canonical {
        seq: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "finding at chain seq {seq}: {what}; the store may have been altered, run `kaudit verify --db` on it"
    )]
    Chain { seq: u64, what: String },
    #[error("cannot write {file}: {source}")]
    Csv {
        file: &'static str,
        #[source]
        source: ::csv::Error,
    },
    #[error("cannot encode {what} as JSON: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: not a kaudit evidence bundle: {reason}", path.display())]
    NotABundle { path: PathBuf, reason: String },
    #[error(
        "the bundle just written does not verify (delete it, and run `kaudit verify --db` on the store): {}",
        .0.join("; ")
    )]
    SelfCheck(Vec<String>),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// `hex(sha256(bytes))`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes the bundle for `rows` (the selected findings) and `chain` (every
/// chain row in the time range) into `req.out_dir`, signs its manifest when
/// a key is given, re-verifies it, and returns the manifest. `manifest.json`
/// is written last: after an error the directory may hold a partial
/// bundle without one (or, when the self-check fails, one that does not
/// verify); delete it before exporting again.
pub fn export(
    rows: &[ExportRow],
    chain: &[ChainRow],
    req: &ExportRequest,
) -> Result<Manifest, Error> {
    let dir = &req.out_dir;
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    if entries.next().is_some() {
        return Err(Error::OutDirNotEmpty(dir.clone()));
    }

    let mut rows: Vec<&ExportRow> = rows.iter().collect();
    rows.sort_by_key(|r| r.seq);

    // The canonical lines, each checked against the hash the chain holds.
    let mut lines = Vec::with_capacity(rows.len());
    for row in &rows {
        let line = jsonl::canonical_line(row.seq, &row.finding)?;
        let computed = jsonl::chain_hash(&row.prev_hash, line.as_bytes())
            .map_err(|what| Error::Chain { seq: row.seq, what })?;
        if !computed.eq_ignore_ascii_case(&row.hash) {
            return Err(Error::Chain {
                seq: row.seq,
                what: format!(
                    "its stored hash {} is not sha256(prev_hash ‖ canonical JSON) = {computed}",
                    row.hash
                ),
            });
        }
        lines.push(line);
    }
    let chain_rows = jsonl::chain_entries(&rows, chain)?;

    let mut files: BTreeMap<String, manifest::FileDigest> = BTreeMap::new();
    let mut put = |name: &str, bytes: &[u8]| -> Result<(), Error> {
        let path = dir.join(name);
        write_file(&path, bytes)?;
        files.insert(name.to_owned(), manifest::FileDigest::of(bytes));
        Ok(())
    };

    put(FINDINGS_JSONL, jsonl::findings_file(&lines).as_bytes())?;
    put(CHAIN_JSONL, &jsonl::chain_file(&chain_rows)?)?;
    let mut formats: Vec<Format> = req.formats.clone();
    formats.push(Format::Jsonl);
    formats.sort();
    formats.dedup();
    if formats.contains(&Format::Csv) {
        let findings: Vec<&serde_json::Value> = rows.iter().map(|r| &r.finding).collect();
        put(FINDINGS_CSV, &csv::findings_csv(&findings)?)?;
    }
    let exported_at = time::OffsetDateTime::now_utc();
    if formats.contains(&Format::Ocsf) {
        let times: BTreeMap<u64, i64> = chain
            .iter()
            .filter_map(|c| c.time_unix.map(|t| (c.seq, t)))
            .collect();
        let mut out = Vec::new();
        for row in &rows {
            let fallback_ms = times
                .get(&row.seq)
                .map(|t| t.saturating_mul(1000))
                .unwrap_or((exported_at.unix_timestamp_nanos() / 1_000_000) as i64);
            let rec = ocsf::detection_finding(&row.finding, &req.kaudit_version, fallback_ms);
            serde_json::to_writer(&mut out, &rec).map_err(|source| Error::Json {
                what: "an OCSF record",
                source,
            })?;
            out.push(b'\n');
        }
        put(FINDINGS_OCSF, &out)?;
    }
    put(README_MD, README_TEXT.as_bytes())?;
    if !req.triage.is_empty() {
        let mut out = Vec::new();
        for t in &req.triage {
            serde_json::to_writer(&mut out, t).map_err(|source| Error::Json {
                what: "a triage record",
                source,
            })?;
            out.push(b'\n');
        }
        put(TRIAGE_JSONL, &out)?;
    }

    let findings: Vec<&serde_json::Value> = rows.iter().map(|r| &r.finding).collect();
    let m = manifest::build(manifest::Inputs {
        req,
        formats: &formats,
        exported_at,
        findings: &findings,
        chain_rows: chain_rows.len() as u64,
        files,
    });
    let bytes = manifest::to_bytes(&m)?;
    write_file(&dir.join(MANIFEST_JSON), &bytes)?;
    if let Some(key) = &req.signing_key {
        write_file(
            &dir.join(MANIFEST_SIG),
            manifest::sign(key, &bytes).as_bytes(),
        )?;
    }

    let public = req.signing_key.as_ref().map(|k| k.verifying_key());
    let report = verify_bundle(dir, public.as_ref())?;
    if !report.problems.is_empty() {
        return Err(Error::SelfCheck(report.problems));
    }
    Ok(m)
}

/// Packs the bundle directory `dir` into the gzip'd tar `tar_gz`, its files
/// under one folder named after the directory, in a fixed order with the
/// manifest first.
pub fn pack(dir: &Path, tar_gz: &Path) -> Result<(), Error> {
    let root = dir
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .unwrap_or("kaudit-evidence")
        .to_owned();
    let mut names: Vec<String> = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let ty = entry.file_type().map_err(|e| Error::io(&entry.path(), e))?;
        if ty.is_file() {
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
    }
    if !names.iter().any(|n| n == MANIFEST_JSON) {
        return Err(Error::NotABundle {
            path: dir.to_path_buf(),
            reason: "it has no manifest.json".into(),
        });
    }
    names.sort_by_key(|n| (n != MANIFEST_JSON, n != MANIFEST_SIG, n.clone()));

    let file = fs::File::create(tar_gz).map_err(|e| Error::io(tar_gz, e))?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    for name in &names {
        let path = dir.join(name);
        tar.append_path_with_name(&path, format!("{root}/{name}"))
            .map_err(|e| Error::io(&path, e))?;
    }
    let gz = tar.into_inner().map_err(|e| Error::io(tar_gz, e))?;
    let mut file = gz.finish().map_err(|e| Error::io(tar_gz, e))?;
    file.flush().map_err(|e| Error::io(tar_gz, e))?;
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A finding as the detector writes it, with a hostile user agent.
    pub(crate) fn finding(i: u64, rule: &str, severity: &str, ua: &str) -> serde_json::Value {
        json!({
            "id": format!("{:032x}", i),
            "rule_id": rule,
            "rule_title": "Exec into a pod",
            "severity": severity,
            "category": "exec",
            "mitre": ["T1609", "T1098.006", "T9999"],
            "references": {"falco": "Attach/Exec Pod"},
            "cluster": "prod-eu-1",
            "audit_id": format!("a{i}"),
            "stage": "ResponseStarted",
            "time": "2026-07-01T10:00:00.123456Z",
            "user": "alice@example.com",
            "groups": ["system:authenticated", "devs"],
            "impersonated_user": null,
            "source_ips": ["10.0.0.9", "203.0.113.7"],
            "user_agent": ua,
            "verb": "create",
            "resource": "pods",
            "subresource": "exec",
            "namespace": "payments",
            "name": "api-0",
            "request_uri": "/api/v1/namespaces/payments/pods/api-0/exec?command=sh&command=-c&command=id",
            "summary": "alice@example.com ran sh -c id in payments/api-0",
            "details": {"command": ["sh", "-c", "id"]},
            "evidence": {
                "kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": format!("a{i}"),
                "stage": "ResponseStarted", "verb": "create",
                "user": {"username": "alice@example.com", "uid": "u-1",
                         "extra": {"authentication.kubernetes.io/credential-id": ["JTI=abc"]}},
                "sourceIPs": ["10.0.0.9", "203.0.113.7"],
                "objectRef": {"resource": "pods", "namespace": "payments", "name": "api-0",
                              "apiVersion": "v1", "subresource": "exec"},
                "responseStatus": {"code": 101}
            }
        })
    }

    /// A chain of `n` findings (seq 1..=n, every third one a different
    /// rule) and the rows selected by a filter on rule `pod-exec`.
    pub(crate) fn sample(n: u64) -> (Vec<ExportRow>, Vec<ChainRow>) {
        let mut prev = "0".repeat(64);
        let mut rows = Vec::new();
        let mut chain = Vec::new();
        for seq in 1..=n {
            let rule = if seq % 3 == 0 {
                "rbac-wildcard"
            } else {
                "pod-exec"
            };
            let f = finding(
                seq,
                rule,
                if seq % 2 == 0 { "high" } else { "medium" },
                "kubectl/v1.31",
            );
            let line = jsonl::canonical_line(seq, &f).unwrap();
            let hash = jsonl::chain_hash(&prev, line.as_bytes()).unwrap();
            chain.push(ChainRow {
                seq,
                hash: hash.clone(),
                prev_hash: prev.clone(),
                cluster: "prod-eu-1".into(),
                rule_id: rule.into(),
                time_unix: Some(1_782_900_000 + seq as i64),
            });
            if rule == "pod-exec" {
                rows.push(ExportRow {
                    seq,
                    hash: hash.clone(),
                    prev_hash: prev.clone(),
                    finding: f,
                });
            }
            prev = hash;
        }
        (rows, chain)
    }

    pub(crate) fn request(dir: &Path, key: Option<ed25519_dalek::SigningKey>) -> ExportRequest {
        ExportRequest {
            out_dir: dir.to_path_buf(),
            formats: vec![Format::Jsonl, Format::Csv, Format::Ocsf],
            filters: json!({"rule": ["pod-exec"], "cluster": ["prod-eu-1"]}),
            since: Some(1_782_900_000),
            until: Some(1_783_000_000),
            chain_head: None,
            coverage: json!({"prod-eu-1": {"2026-07-01T10": {"events": 1000, "malformed": 0}}}),
            signing_key: key,
            kaudit_version: "0.1.0".into(),
            triage: Vec::new(),
        }
    }

    pub(crate) fn key(seed: u8) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
    }

    /// Completeness: a finding that matches the export's filters but is
    /// left out makes the bundle fail its own check (kaudit never writes
    /// an incomplete bundle), and `verify` says which chain row it is.
    #[test]
    fn a_matching_finding_left_out_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let (mut rows, chain) = sample(6);
        rows.retain(|r| r.seq != 4); // seq 4 is a pod-exec row
        let err = export(&rows, &chain, &request(&dir.path().join("b"), None)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("chain.jsonl seq 4") && text.contains("left out"),
            "{text}"
        );
    }

    /// Exports the 12-row sample, signed with key 7, into `dir/bundle`.
    pub(crate) fn exported(dir: &Path) -> (PathBuf, Manifest) {
        let (rows, chain) = sample(12);
        let out = dir.join("bundle");
        let mut req = request(&out, Some(key(7)));
        req.chain_head = Some((12, chain[11].hash.clone()));
        let m = export(&rows, &chain, &req).unwrap();
        (out, m)
    }

    #[test]
    fn export_writes_every_file_and_counts() {
        let tmp = tempfile::tempdir().unwrap();
        let (out, m) = exported(tmp.path());
        for f in [
            FINDINGS_JSONL,
            FINDINGS_CSV,
            FINDINGS_OCSF,
            CHAIN_JSONL,
            README_MD,
            MANIFEST_JSON,
            MANIFEST_SIG,
        ] {
            assert!(out.join(f).is_file(), "{f} missing");
        }
        assert_eq!(m.counts.findings, 8);
        assert_eq!(m.counts.chain_rows, 12);
        assert_eq!(m.counts.by_rule.get("pod-exec"), Some(&8));
        assert_eq!(m.counts.by_severity.get("high"), Some(&4));
        assert_eq!(m.files.len(), 5);
        let on_disk: Manifest =
            serde_json::from_slice(&fs::read(out.join(MANIFEST_JSON)).unwrap()).unwrap();
        assert_eq!(on_disk, m);
    }

    #[test]
    fn export_refuses_a_row_whose_hash_does_not_match_its_content() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut rows, chain) = sample(6);
        rows[1].finding["summary"] = json!("edited in the database");
        let err = export(&rows, &chain, &request(&tmp.path().join("b"), None)).unwrap_err();
        assert!(matches!(err, Error::Chain { seq: 2, .. }), "{err}");
        assert!(err.to_string().contains("kaudit verify --db"));
    }

    #[test]
    fn export_refuses_a_directory_that_is_not_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let (out, _) = exported(tmp.path());
        let (rows, chain) = sample(3);
        let err = export(&rows, &chain, &request(&out, None)).unwrap_err();
        assert!(matches!(err, Error::OutDirNotEmpty(_)), "{err}");
        let other = tmp.path().join("other");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("notes.txt"), "x").unwrap();
        let err = export(&rows, &chain, &request(&other, None)).unwrap_err();
        assert!(err.to_string().contains("is not empty"), "{err}");
    }

    #[test]
    fn export_refuses_chain_rows_that_do_not_link() {
        let tmp = tempfile::tempdir().unwrap();
        let (rows, mut chain) = sample(6);
        // Seq 3 (not exported) altered in the store: seq 4 no longer links.
        chain[2].hash = "ab".repeat(32);
        let err = export(&rows, &chain, &request(&tmp.path().join("b"), None)).unwrap_err();
        assert!(matches!(err, Error::SelfCheck(_)), "{err}");
        assert!(err.to_string().contains("seq 4's prev_hash"), "{err}");
    }

    #[test]
    fn unsigned_export_verifies_and_says_unsigned() {
        let tmp = tempfile::tempdir().unwrap();
        let (rows, chain) = sample(5);
        let out = tmp.path().join("b");
        let m = export(&rows, &chain, &request(&out, None)).unwrap();
        assert!(m.signing_key.is_none());
        assert!(!out.join(MANIFEST_SIG).exists());
        let report = verify_bundle(&out, None).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.signature, SignatureStatus::Unsigned);
    }

    #[test]
    fn findings_jsonl_is_always_written() {
        let tmp = tempfile::tempdir().unwrap();
        let (rows, chain) = sample(4);
        let out = tmp.path().join("b");
        let mut req = request(&out, None);
        req.formats = vec![Format::Csv];
        let m = export(&rows, &chain, &req).unwrap();
        assert!(out.join(FINDINGS_JSONL).is_file());
        assert!(!out.join(FINDINGS_OCSF).exists());
        assert_eq!(m.formats, vec!["jsonl".to_string(), "csv".to_string()]);
    }

    #[test]
    fn pack_and_verify_the_archive() {
        let tmp = tempfile::tempdir().unwrap();
        let (out, _) = exported(tmp.path());
        let tgz = tmp.path().join("bundle.tar.gz");
        pack(&out, &tgz).unwrap();
        let report = verify_bundle(&tgz, Some(&key(7).verifying_key())).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.signature, SignatureStatus::Valid);
        assert_eq!(report.findings, 8);
        // A wrong key fails on the archive too.
        let report = verify_bundle(&tgz, Some(&key(8).verifying_key())).unwrap();
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.starts_with("manifest.sig"))
        );
    }

    #[test]
    fn formats_parse() {
        assert_eq!("OCSF".parse::<Format>(), Ok(Format::Ocsf));
        assert!(
            "xml"
                .parse::<Format>()
                .unwrap_err()
                .contains("jsonl, csv or ocsf")
        );
    }
}
