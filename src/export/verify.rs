//! Checking an evidence bundle: `kaudit verify BUNDLE [--public-key FILE]`.
//!
//! Input: a bundle directory or its `.tar.gz` (read in memory, nothing is
//! unpacked to disk) and, optionally, the Ed25519 public key that should
//! have signed it. Output: a [`BundleReport`] listing every problem found,
//! each naming the file (and line or chain position) and saying what it
//! means. Checks, in order:
//! 1. `manifest.sig` against the key over the exact `manifest.json` bytes
//!    (or: the bundle is unsigned / the signature was not checked);
//! 2. every file's sha256 and size against the manifest; files missing or
//!    not listed;
//! 3. the hash chain: each `findings.jsonl` line hashes, with its
//!    `prev_hash`, to the hash its `chain.jsonl` row holds; `chain.jsonl`
//!    is in seq order and consecutive rows link; every finding has exactly
//!    one chain row and every row that points at a line has one; the
//!    manifest's chain head agrees;
//! 4. counts by rule and severity, and that the CSV and OCSF files hold
//!    the same findings in the same order.
//!
//! An [`Error`] means the bundle could not be read at all (no such path,
//! not a gzip'd tar, no `manifest.json`). Key files are read by the caller.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::jsonl::{ChainEntry, chain_hash, lines};
use super::manifest::{Manifest, check_signature, count};
use super::{
    CHAIN_JSONL, Error, FINDINGS_CSV, FINDINGS_JSONL, FINDINGS_OCSF, MANIFEST_JSON, MANIFEST_SIG,
};

/// At most this many problems are listed; the rest are counted.
const MAX_PROBLEMS: usize = 100;

/// What was found out about the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureStatus {
    /// `manifest.sig` is the given key's signature of `manifest.json`.
    Valid,
    /// `manifest.sig` is not that key's signature (or is malformed).
    Invalid,
    /// There is no `manifest.sig`.
    Unsigned,
    /// There is a `manifest.sig` but no key was given to check it with.
    NotChecked,
}

/// The verdict on a bundle.
#[derive(Debug, Clone)]
pub struct BundleReport {
    pub path: PathBuf,
    /// The manifest, when `manifest.json` parses.
    pub manifest: Option<Manifest>,
    pub signature: SignatureStatus,
    /// Files whose digest was checked.
    pub files_checked: usize,
    /// Lines of `findings.jsonl`.
    pub findings: u64,
    /// Lines of `chain.jsonl`.
    pub chain_rows: u64,
    /// Chain positions between the first and last row of `chain.jsonl`
    /// that it does not hold (rows outside the time range).
    pub chain_gaps: u64,
    /// Rows left out that match the cluster, rule and time filters but
    /// whose other filters (severity, category, user, namespace) the chain
    /// rows cannot show: the auditor decides those from the stored findings.
    pub undecided_left_out: u64,
    /// Everything wrong, one sentence each, starting with the file's name.
    pub problems: Vec<String>,
}

impl BundleReport {
    /// No problem found. A valid but unsigned bundle proves only that its
    /// files agree with its manifest: see [`Self::signature`].
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for BundleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sig = match self.signature {
            SignatureStatus::Valid => "signature valid for the given public key",
            SignatureStatus::Invalid => "signature INVALID",
            SignatureStatus::Unsigned => {
                "unsigned (no manifest.sig): the files agree with the manifest, but nothing vouches for the manifest"
            }
            SignatureStatus::NotChecked => {
                "signed, but the signature was not checked (give --public-key)"
            }
        };
        writeln!(f, "{}: {sig}", self.path.display())?;
        writeln!(
            f,
            "{} files checked, {} findings, {} chain rows ({} positions outside the range)",
            self.files_checked, self.findings, self.chain_rows, self.chain_gaps
        )?;
        if self.undecided_left_out > 0 {
            writeln!(
                f,
                "{} rows left out match the cluster, rule and time filters; whether they match the severity, category, user or namespace filters needs the stored findings",
                self.undecided_left_out
            )?;
        }
        if self.problems.is_empty() {
            write!(f, "OK: no problem found")
        } else {
            write!(f, "{} problem(s):", self.problems.len())?;
            for p in &self.problems {
                write!(f, "\n  {p}")?;
            }
            Ok(())
        }
    }
}

/// Collects problems, keeping the first [`MAX_PROBLEMS`].
struct Problems {
    list: Vec<String>,
    more: usize,
}

impl Problems {
    fn push(&mut self, p: String) {
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(p);
        } else {
            self.more += 1;
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.more > 0 {
            self.list
                .push(format!("... and {} more problems", self.more));
        }
        self.list
    }
}

/// Checks the bundle at `path` (a directory or a `.tar.gz`), and its
/// signature when `public_key` is given.
pub fn verify_bundle(
    path: &Path,
    public_key: Option<&ed25519_dalek::VerifyingKey>,
) -> Result<BundleReport, Error> {
    let files = read_bundle(path)?;
    let Some(manifest_bytes) = files.get(MANIFEST_JSON) else {
        return Err(Error::NotABundle {
            path: path.to_path_buf(),
            reason: "it has no manifest.json".into(),
        });
    };
    let mut p = Problems {
        list: Vec::new(),
        more: 0,
    };

    let manifest: Option<Manifest> = match serde_json::from_slice(manifest_bytes) {
        Ok(m) => Some(m),
        Err(e) => {
            p.push(format!(
                "manifest.json: not a kaudit bundle manifest ({e}); it was changed or damaged"
            ));
            None
        }
    };

    // 1. Signature.
    let sig = files.get(MANIFEST_SIG);
    let signature = match (public_key, sig) {
        (Some(key), Some(sig)) => match check_signature(key, manifest_bytes, sig) {
            Ok(()) => SignatureStatus::Valid,
            Err(why) => {
                p.push(format!("manifest.sig: {why}"));
                SignatureStatus::Invalid
            }
        },
        (Some(_), None) => {
            p.push("manifest.sig: missing: the bundle is unsigned, so it cannot be checked against the public key".into());
            SignatureStatus::Unsigned
        }
        (None, Some(_)) => SignatureStatus::NotChecked,
        (None, None) => SignatureStatus::Unsigned,
    };
    if sig.is_none()
        && manifest.as_ref().is_some_and(|m| m.signing_key.is_some())
        && public_key.is_none()
    {
        p.push("manifest.sig: missing, though the manifest names a signing key (the signature was removed)".into());
    }
    if let (Some(key), Some(m)) = (public_key, &manifest) {
        if let Some(info) = &m.signing_key {
            if info.public_key != hex::encode(key.to_bytes()) {
                p.push(
                    "manifest.json: names a different signing key than the public key given".into(),
                );
            }
        }
    }

    let mut report = BundleReport {
        path: path.to_path_buf(),
        manifest: manifest.clone(),
        signature,
        files_checked: 0,
        findings: 0,
        chain_rows: 0,
        chain_gaps: 0,
        undecided_left_out: 0,
        problems: Vec::new(),
    };
    let Some(m) = manifest else {
        report.problems = p.finish();
        return Ok(report);
    };

    // 2. File digests.
    for (name, digest) in &m.files {
        match files.get(name) {
            None => p.push(format!(
                "{name}: listed in the manifest but missing from the bundle (it was deleted)"
            )),
            Some(bytes) => {
                report.files_checked += 1;
                if super::sha256_hex(bytes) != digest.sha256.to_ascii_lowercase() {
                    p.push(format!(
                        "{name}: sha256 does not match the manifest (the file was changed after export)"
                    ));
                } else if bytes.len() as u64 != digest.bytes {
                    p.push(format!("{name}: size does not match the manifest"));
                }
            }
        }
    }
    for name in files.keys() {
        if name != MANIFEST_JSON && name != MANIFEST_SIG && !m.files.contains_key(name) {
            p.push(format!(
                "{name}: not listed in the manifest (it was added after export)"
            ));
        }
    }
    for (format, file) in [
        ("jsonl", FINDINGS_JSONL),
        ("", CHAIN_JSONL),
        ("csv", FINDINGS_CSV),
        ("ocsf", FINDINGS_OCSF),
    ] {
        let expected =
            format.is_empty() || format == "jsonl" || m.formats.iter().any(|f| f == format);
        if expected && !m.files.contains_key(file) {
            p.push(format!(
                "manifest.json: does not list {file}, which every bundle of its formats holds"
            ));
        }
    }

    // 3. The chain, and 4. counts and the other formats.
    if let (Some(findings), Some(chain)) = (files.get(FINDINGS_JSONL), files.get(CHAIN_JSONL)) {
        let ids = check_chain(findings, chain, &m, &mut report, &mut p);
        if let Some(csv) = files.get(FINDINGS_CSV) {
            check_csv(csv, &ids, &mut p);
        }
        if let Some(ocsf) = files.get(FINDINGS_OCSF) {
            check_ocsf(ocsf, &ids, &mut p);
        }
    }
    report.problems = p.finish();
    Ok(report)
}

/// Completeness: a chain row left out of `findings.jsonl` must not match
/// the export's filters. Rows carry cluster, rule and time, so this is
/// decided whenever the filters use only those (and time); rows that would
/// need the severity, category, user or namespace filters are counted as
/// undecided.
fn check_left_out(rows: &[ChainEntry], m: &Manifest, report: &mut BundleReport, p: &mut Problems) {
    let list = |k: &str| -> Vec<String> {
        m.filters
            .get(k)
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (rules, clusters) = (list("rule"), list("cluster"));
    let other_filters = ["category", "user", "namespace"]
        .iter()
        .any(|k| !list(k).is_empty())
        || m.filters.get("severity").is_some_and(|v| !v.is_null());
    let since = m
        .time_range
        .since
        .as_deref()
        .and_then(crate::timespec::rfc3339_to_unix);
    let until = m
        .time_range
        .until
        .as_deref()
        .and_then(crate::timespec::rfc3339_to_unix);
    for r in rows.iter().filter(|r| r.findings_line.is_none()) {
        let time = r.time.as_deref().and_then(crate::timespec::rfc3339_to_unix);
        let in_time = match time {
            Some(t) => since.is_none_or(|s| t >= s) && until.is_none_or(|u| t < u),
            // No time: a time-bounded export leaves it out by design.
            None => since.is_none() && until.is_none(),
        };
        let matches = in_time
            && (rules.is_empty() || rules.contains(&r.rule_id))
            && (clusters.is_empty() || clusters.contains(&r.cluster));
        if !matches {
            continue;
        }
        if other_filters {
            report.undecided_left_out += 1;
        } else {
            p.push(format!(
                "chain.jsonl seq {} ({} in cluster {}) matches the export's filters but its finding is not in findings.jsonl: a finding was left out",
                r.seq, r.rule_id, r.cluster
            ));
        }
    }
}

/// Checks `findings.jsonl` against `chain.jsonl` and the manifest; returns
/// the findings' ids in line order.
fn check_chain(
    findings: &[u8],
    chain: &[u8],
    m: &Manifest,
    report: &mut BundleReport,
    p: &mut Problems,
) -> Vec<String> {
    // chain.jsonl
    let mut rows: Vec<ChainEntry> = Vec::new();
    for (i, line) in lines(chain).enumerate() {
        match serde_json::from_slice::<ChainEntry>(line) {
            Ok(r) => rows.push(r),
            Err(e) => p.push(format!("chain.jsonl line {}: not a chain row ({e})", i + 1)),
        }
    }
    report.chain_rows = rows.len() as u64;
    for (i, pair) in rows.windows(2).enumerate() {
        let (a, b) = (&pair[0], &pair[1]);
        let line = i + 2;
        if b.seq <= a.seq {
            p.push(format!(
                "chain.jsonl line {line}: seq {} does not follow seq {} (rows reordered or duplicated)",
                b.seq, a.seq
            ));
        } else if b.seq == a.seq + 1 && !b.prev_hash.eq_ignore_ascii_case(&a.hash) {
            p.push(format!(
                "chain.jsonl line {line}: seq {}'s prev_hash is not the hash of seq {} (a row was altered, removed or inserted)",
                b.seq, a.seq
            ));
        } else {
            report.chain_gaps += b.seq - a.seq - 1;
        }
    }

    check_left_out(&rows, m, report, p);

    // findings.jsonl, each line with the row that points at it.
    let mut by_line: BTreeMap<u64, &ChainEntry> = BTreeMap::new();
    for r in &rows {
        if let Some(l) = r.findings_line {
            if by_line.insert(l, r).is_some() {
                p.push(format!(
                    "chain.jsonl seq {}: findings.jsonl line {l} is claimed by two chain rows",
                    r.seq
                ));
            }
        }
    }
    let mut ids = Vec::new();
    let mut parsed: Vec<serde_json::Value> = Vec::new();
    let mut n = 0u64;
    for (i, line) in lines(findings).enumerate() {
        n += 1;
        let ln = i as u64 + 1;
        let finding: serde_json::Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => {
                p.push(format!("findings.jsonl line {ln}: not JSON ({e})"));
                serde_json::Value::Null
            }
        };
        let text = |k: &str| {
            finding
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned()
        };
        ids.push(text("id"));
        match by_line.get(&ln) {
            None => p.push(format!(
                "findings.jsonl line {ln}: no chain.jsonl row covers it (it was added after export)"
            )),
            Some(row) => match chain_hash(&row.prev_hash, line) {
                Err(why) => p.push(format!("chain.jsonl seq {}: {why}", row.seq)),
                Ok(h) if !h.eq_ignore_ascii_case(&row.hash) => p.push(format!(
                    "findings.jsonl line {ln} (chain seq {}): its content does not hash to the chain's hash (the finding was changed)",
                    row.seq
                )),
                Ok(_) => {
                    if text("cluster") != row.cluster || text("rule_id") != row.rule_id {
                        p.push(format!(
                            "chain.jsonl seq {}: cluster or rule_id differ from findings.jsonl line {ln}",
                            row.seq
                        ));
                    }
                }
            },
        }
        parsed.push(finding);
    }
    report.findings = n;
    for (l, row) in &by_line {
        if *l == 0 || *l > n {
            p.push(format!(
                "chain.jsonl seq {}: points at findings.jsonl line {l}, which does not exist (a finding was removed)",
                row.seq
            ));
        }
    }

    // The manifest's chain head and counts.
    if let (Some(head), Some(last)) = (&m.chain_head, rows.last()) {
        if head.seq < last.seq {
            p.push(format!(
                "manifest.json: chain head seq {} is before chain.jsonl's last row (seq {})",
                head.seq, last.seq
            ));
        }
        if let Some(r) = rows.iter().find(|r| r.seq == head.seq) {
            if !r.hash.eq_ignore_ascii_case(&head.hash) {
                p.push(format!(
                    "chain.jsonl seq {}: hash differs from the manifest's chain head",
                    r.seq
                ));
            }
        }
    }
    if m.counts.findings != n {
        p.push(format!(
            "manifest.json: counts {} findings, findings.jsonl holds {n}",
            m.counts.findings
        ));
    }
    if m.counts.chain_rows != report.chain_rows {
        p.push(format!(
            "manifest.json: counts {} chain rows, chain.jsonl holds {}",
            m.counts.chain_rows, report.chain_rows
        ));
    }
    let refs: Vec<&serde_json::Value> = parsed.iter().collect();
    let (by_rule, by_severity) = count(&refs);
    if by_rule != m.counts.by_rule || by_severity != m.counts.by_severity {
        p.push("manifest.json: counts by rule or severity differ from findings.jsonl".into());
    }
    ids
}

/// `findings.csv` holds the findings of `ids`, in order.
fn check_csv(csv: &[u8], ids: &[String], p: &mut Problems) {
    let mut r = ::csv::ReaderBuilder::new().from_reader(csv);
    let mut got = Vec::new();
    for (i, rec) in r.records().enumerate() {
        match rec {
            Ok(rec) => got.push(super::csv::unescape_cell(rec.get(0).unwrap_or("")).to_owned()),
            Err(e) => {
                p.push(format!("findings.csv row {}: not CSV ({e})", i + 2));
                return;
            }
        }
    }
    if got != ids {
        p.push("findings.csv: its rows are not the findings of findings.jsonl, in order".into());
    }
}

/// `findings.ocsf.jsonl` holds the findings of `ids`, in order.
fn check_ocsf(ocsf: &[u8], ids: &[String], p: &mut Problems) {
    let mut got = Vec::new();
    for (i, line) in lines(ocsf).enumerate() {
        match serde_json::from_slice::<serde_json::Value>(line) {
            Ok(v) => got.push(
                v.get("finding_info")
                    .and_then(|f| f.get("uid"))
                    .and_then(|u| u.as_str())
                    .unwrap_or("")
                    .to_owned(),
            ),
            Err(e) => {
                p.push(format!(
                    "findings.ocsf.jsonl line {}: not JSON ({e})",
                    i + 1
                ));
                return;
            }
        }
    }
    if got != ids {
        p.push(
            "findings.ocsf.jsonl: its records are not the findings of findings.jsonl, in order"
                .into(),
        );
    }
}

/// The bundle's files by name: a directory's regular files, or a tar.gz's
/// files with their one leading folder removed.
fn read_bundle(path: &Path) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mut files = BTreeMap::new();
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
            let entry = entry.map_err(|e| Error::io(path, e))?;
            let p = entry.path();
            let ty = entry.file_type().map_err(|e| Error::io(&p, e))?;
            if ty.is_file() {
                let name = entry.file_name().to_string_lossy().into_owned();
                files.insert(name, std::fs::read(&p).map_err(|e| Error::io(&p, e))?);
            }
        }
        return Ok(files);
    }
    let not_tar = |e: std::io::Error| Error::NotABundle {
        path: path.to_path_buf(),
        reason: format!("not a directory or a readable .tar.gz ({e})"),
    };
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let bad = |reason: String| Error::NotABundle {
        path: path.to_path_buf(),
        reason,
    };
    let mut raw: Vec<(Vec<String>, Vec<u8>)> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for entry in archive.entries().map_err(not_tar)? {
        let mut entry = entry.map_err(not_tar)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let ty = entry.header().entry_type();
        if !ty.is_file() && !ty.is_dir() {
            return Err(bad(format!(
                "its member {name:?} is not a regular file or a directory ({ty:?}), which a bundle never holds"
            )));
        }
        // Every component must be a plain name: `..`, `.`, an absolute
        // path or an empty component could make two members the same file.
        let trimmed = if ty.is_dir() {
            name.strip_suffix('/').unwrap_or(&name)
        } else {
            name.as_str()
        };
        let parts: Vec<String> = trimmed.split('/').map(str::to_owned).collect();
        if let Some(p) = parts
            .iter()
            .find(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return Err(bad(format!(
                "its member {name:?} has the path component {p:?}, which is not a plain name: the archive was crafted"
            )));
        }
        if !seen.insert(parts.join("/")) {
            return Err(bad(format!(
                "it holds the member {name:?} twice: the archive was crafted"
            )));
        }
        if ty.is_dir() {
            continue;
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(not_tar)?;
        raw.push((parts, bytes));
    }
    // Remove the one folder every file is under, if there is one.
    let roots: BTreeSet<&str> = raw
        .iter()
        .filter(|(p, _)| p.len() > 1)
        .map(|(p, _)| p[0].as_str())
        .collect();
    let strip = roots.len() == 1 && raw.iter().all(|(p, _)| p.len() > 1);
    for (parts, bytes) in raw {
        let name = if strip {
            parts[1..].join("/")
        } else {
            parts.join("/")
        };
        files.insert(name, bytes);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::tests::{exported, key};
    use std::fs;

    fn problems(dir: &Path, k: Option<u8>) -> Vec<String> {
        let pk = k.map(|k| key(k).verifying_key());
        verify_bundle(dir, pk.as_ref()).unwrap().problems
    }

    #[test]
    fn a_fresh_bundle_verifies() {
        let tmp = tempfile::tempdir().unwrap();
        let (out, _) = exported(tmp.path());
        let r = verify_bundle(&out, Some(&key(7).verifying_key())).unwrap();
        assert!(r.is_valid(), "{r}");
        assert_eq!(r.signature, SignatureStatus::Valid);
        assert_eq!((r.findings, r.chain_rows, r.files_checked), (8, 12, 5));
        assert!(r.to_string().contains("OK"));
        let r = verify_bundle(&out, None).unwrap();
        assert!(r.is_valid());
        assert_eq!(r.signature, SignatureStatus::NotChecked);
    }

    #[test]
    fn editing_any_file_fails_naming_it() {
        for name in [
            FINDINGS_JSONL,
            FINDINGS_CSV,
            FINDINGS_OCSF,
            CHAIN_JSONL,
            super::super::README_MD,
            MANIFEST_JSON,
            MANIFEST_SIG,
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let (out, _) = exported(tmp.path());
            let path = out.join(name);
            let mut bytes = fs::read(&path).unwrap();
            // Change one character in the middle of the file.
            let mid = bytes.len() / 2;
            bytes[mid] = if bytes[mid] == b'7' { b'8' } else { b'7' };
            fs::write(&path, &bytes).unwrap();
            let ps = problems(&out, Some(7));
            assert!(!ps.is_empty(), "{name}: edit not caught");
            let named = if name == MANIFEST_JSON {
                MANIFEST_SIG
            } else {
                name
            };
            assert!(
                ps.iter()
                    .any(|p| p.starts_with(named) || p.starts_with(name)),
                "{name}: {ps:#?}"
            );
        }
    }

    #[test]
    fn the_documented_messages() {
        let tmp = tempfile::tempdir().unwrap();
        let (out, _) = exported(tmp.path());
        let path = out.join(FINDINGS_CSV);
        let mut csv = fs::read(&path).unwrap();
        csv.extend_from_slice(b"x\n");
        fs::write(&path, csv).unwrap();
        assert!(problems(&out, Some(7)).contains(
            &"findings.csv: sha256 does not match the manifest (the file was changed after export)".to_string()
        ));
        let ps = problems(&out, Some(9));
        assert!(
            ps.iter().any(
                |p| p.starts_with("manifest.sig: the signature does not match this public key")
            ),
            "{ps:#?}"
        );
    }

    #[test]
    fn a_wrong_key_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let (out, _) = exported(tmp.path());
        let r = verify_bundle(&out, Some(&key(8).verifying_key())).unwrap();
        assert_eq!(r.signature, SignatureStatus::Invalid);
        assert!(!r.is_valid());
        assert!(
            r.problems
                .iter()
                .any(|p| p.contains("different signing key"))
        );
    }

    #[test]
    fn a_missing_or_added_file_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let (out, _) = exported(tmp.path());
        fs::remove_file(out.join(FINDINGS_OCSF)).unwrap();
        fs::write(out.join("extra.txt"), "x").unwrap();
        let ps = problems(&out, Some(7));
        assert!(
            ps.iter()
                .any(|p| p.starts_with("findings.ocsf.jsonl: listed in the manifest but missing")),
            "{ps:#?}"
        );
        assert!(
            ps.iter().any(|p| p.starts_with("extra.txt: not listed")),
            "{ps:#?}"
        );

        fs::remove_file(out.join(MANIFEST_SIG)).unwrap();
        let ps = problems(&out, Some(7));
        assert!(
            ps.iter().any(|p| p.starts_with("manifest.sig: missing")),
            "{ps:#?}"
        );
        let ps = problems(&out, None);
        assert!(
            ps.iter().any(|p| p.contains("the signature was removed")),
            "{ps:#?}"
        );

        fs::remove_file(out.join(MANIFEST_JSON)).unwrap();
        let err = verify_bundle(&out, None).unwrap_err();
        assert!(err.to_string().contains("no manifest.json"), "{err}");
    }

    /// Rewrites a file and its manifest digest, as someone without the
    /// signing key could: the digests agree, the chain or signature must not.
    fn forge(out: &Path, name: &str, edit: impl FnOnce(&mut Vec<String>)) -> Vec<String> {
        let path = out.join(name);
        let text = fs::read_to_string(&path).unwrap();
        let mut ls: Vec<String> = text.lines().map(str::to_owned).collect();
        edit(&mut ls);
        let mut new = ls.join("\n");
        new.push('\n');
        fs::write(&path, &new).unwrap();
        let mpath = out.join(MANIFEST_JSON);
        let mut m: Manifest = serde_json::from_slice(&fs::read(&mpath).unwrap()).unwrap();
        m.files.insert(
            name.into(),
            super::super::manifest::FileDigest::of(new.as_bytes()),
        );
        fs::write(&mpath, super::super::manifest::to_bytes(&m).unwrap()).unwrap();
        problems(out, None)
    }

    #[test]
    fn the_chain_catches_what_digests_alone_would_not() {
        let tmp = tempfile::tempdir().unwrap();
        // A finding's content changed.
        let (out, _) = exported(&tmp.path().join("a"));
        let ps = forge(&out, FINDINGS_JSONL, |ls| {
            ls[2] = ls[2].replace("alice", "mallory")
        });
        assert!(
            ps.iter()
                .any(|p| p
                    .starts_with("findings.jsonl line 3 (chain seq 4): its content does not hash")),
            "{ps:#?}"
        );
        // A finding removed.
        let (out, _) = exported(&tmp.path().join("b"));
        let ps = forge(&out, FINDINGS_JSONL, |ls| {
            ls.pop();
        });
        assert!(
            ps.iter()
                .any(|p| p.contains("which does not exist (a finding was removed)")),
            "{ps:#?}"
        );
        // Chain rows reordered.
        let (out, _) = exported(&tmp.path().join("c"));
        let ps = forge(&out, CHAIN_JSONL, |ls| ls.swap(3, 4));
        assert!(ps.iter().any(|p| p.contains("does not follow")), "{ps:#?}");
        // A chain row (not exported) removed from the middle.
        let (out, _) = exported(&tmp.path().join("d"));
        let ps = forge(&out, CHAIN_JSONL, |ls| {
            ls.remove(5);
        });
        assert!(
            ps.iter()
                .any(|p| p.starts_with("manifest.json: counts 12 chain rows")),
            "{ps:#?}"
        );
        // A chain row's hash altered.
        let (out, _) = exported(&tmp.path().join("e"));
        let ps = forge(&out, CHAIN_JSONL, |ls| {
            let mut r: ChainEntry = serde_json::from_str(&ls[2]).unwrap();
            r.hash = "00".repeat(32);
            ls[2] = serde_json::to_string(&r).unwrap();
        });
        assert!(
            ps.iter()
                .any(|p| p.contains("seq 4's prev_hash is not the hash of seq 3")),
            "{ps:#?}"
        );
    }

    fn have(tool: &str) -> bool {
        std::process::Command::new(tool).arg("-h").output().is_ok()
    }

    /// The README's openssl recipe accepts kaudit's signature and rejects
    /// another key's.
    #[test]
    fn openssl_checks_the_signature_as_the_readme_says() {
        use ed25519_dalek::pkcs8::{EncodePublicKey, spki::der::pem::LineEnding};
        if !have("openssl") {
            eprintln!("openssl not found: skipped");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let (out, _) = exported(tmp.path());
        let sig = fs::read_to_string(out.join(MANIFEST_SIG)).unwrap();
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sig.trim())
            .unwrap();
        fs::write(tmp.path().join("manifest.sig.bin"), raw).unwrap();
        let run = |k: u8| {
            let pem = key(k)
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap();
            fs::write(tmp.path().join("key.pub"), pem).unwrap();
            std::process::Command::new("openssl")
                .args([
                    "pkeyutl", "-verify", "-pubin", "-inkey", "key.pub", "-rawin", "-in",
                ])
                .arg(out.join(MANIFEST_JSON))
                .args(["-sigfile", "manifest.sig.bin"])
                .current_dir(tmp.path())
                .output()
                .unwrap()
        };
        let good = run(7);
        assert!(
            good.status.success(),
            "{}",
            String::from_utf8_lossy(&good.stderr)
        );
        assert!(!run(8).status.success());
    }

    /// The README's shell recipe recomputes a finding's chain hash.
    #[test]
    fn the_readme_shell_recipe_recomputes_the_hash() {
        if !have("xxd") || !have("sha256sum") {
            eprintln!("xxd or sha256sum not found: skipped");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let (out, _) = exported(tmp.path());
        let readme = super::super::README_TEXT;
        let recipe = readme
            .split("```")
            .find(|block| block.contains("xxd -r -p"))
            .unwrap();
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(recipe)
            .current_dir(&out)
            .output()
            .unwrap();
        let got = String::from_utf8_lossy(&o.stdout);
        let chain = fs::read_to_string(out.join(CHAIN_JSONL)).unwrap();
        let row: ChainEntry = chain
            .lines()
            .map(|l| serde_json::from_str::<ChainEntry>(l).unwrap())
            .find(|r| r.findings_line == Some(3))
            .unwrap();
        assert!(got.starts_with(&row.hash), "{got} vs {}", row.hash);
    }

    #[test]
    fn a_tampered_archive_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let (out, _) = exported(tmp.path());
        fs::write(out.join(FINDINGS_CSV), "id\n").unwrap();
        let tgz = tmp.path().join("b.tar.gz");
        super::super::pack(&out, &tgz).unwrap();
        let r = verify_bundle(&tgz, Some(&key(7).verifying_key())).unwrap();
        assert!(
            r.problems
                .iter()
                .any(|p| p.starts_with("findings.csv: sha256")),
            "{r}"
        );
        // Not an archive at all.
        fs::write(&tgz, "not gzip").unwrap();
        let err = verify_bundle(&tgz, None).unwrap_err();
        assert!(
            err.to_string()
                .contains("not a directory or a readable .tar.gz"),
            "{err}"
        );
    }

    /// A .tar.gz with these raw member names (no path checks applied).
    fn raw_tgz(path: &Path, members: &[(&str, tar::EntryType, Vec<u8>)]) {
        let gz = flate2::write::GzEncoder::new(
            fs::File::create(path).unwrap(),
            flate2::Compression::default(),
        );
        let mut b = tar::Builder::new(gz);
        for (name, ty, data) in members {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(*ty);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, data.as_slice()).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
    }

    #[test]
    fn a_crafted_archive_is_not_a_bundle() {
        let tmp = tempfile::tempdir().unwrap();
        let (out, _) = exported(tmp.path());
        let mut genuine: Vec<(String, Vec<u8>)> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        genuine.sort();
        let file = tar::EntryType::Regular;
        let with = |extra: Vec<(String, tar::EntryType, Vec<u8>)>| {
            let mut m: Vec<(String, tar::EntryType, Vec<u8>)> = genuine
                .iter()
                .filter(|(n, _)| n != FINDINGS_CSV)
                .map(|(n, d)| (format!("bund/{n}"), file, d.clone()))
                .collect();
            m.extend(extra);
            let tgz = tmp.path().join("crafted.tar.gz");
            let members: Vec<(&str, tar::EntryType, Vec<u8>)> = m
                .iter()
                .map(|(n, t, d)| (n.as_str(), *t, d.clone()))
                .collect();
            raw_tgz(&tgz, &members);
            verify_bundle(&tgz, Some(&key(7).verifying_key()))
        };
        let csv = fs::read(out.join(FINDINGS_CSV)).unwrap();
        // The control: the same members, plainly named, verify.
        let ok = with(vec![(format!("bund/{FINDINGS_CSV}"), file, csv.clone())]).unwrap();
        assert!(ok.is_valid(), "{ok}");
        // A forged findings.csv, then the genuine one under `bund/../`.
        let err = with(vec![
            (format!("bund/{FINDINGS_CSV}"), file, b"id\n".to_vec()),
            (format!("bund/../{FINDINGS_CSV}"), file, csv.clone()),
        ])
        .unwrap_err();
        assert!(
            err.to_string()
                .contains(r#"has the path component "..", which is not a plain name"#),
            "{err}"
        );
        for name in [
            format!("bund/./{FINDINGS_CSV}"),
            format!("/bund/{FINDINGS_CSV}"),
            format!("bund//{FINDINGS_CSV}"),
        ] {
            let err = with(vec![(name.clone(), file, csv.clone())]).unwrap_err();
            assert!(
                err.to_string().contains("which is not a plain name"),
                "{name}: {err}"
            );
        }
        let err = with(vec![
            (format!("bund/{FINDINGS_CSV}"), file, csv.clone()),
            (format!("bund/{FINDINGS_CSV}"), file, csv.clone()),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
        let err = with(vec![
            (format!("bund/{FINDINGS_CSV}"), file, csv.clone()),
            ("bund/link".to_owned(), tar::EntryType::Symlink, Vec::new()),
        ])
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("is not a regular file or a directory"),
            "{err}"
        );
    }
}
