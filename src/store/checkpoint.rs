//! Signed chain checkpoints: the chain head (position, hash, time) signed
//! with kaudit's Ed25519 key.
//!
//! An unkeyed chain can be recomputed by whoever can write the database,
//! and a cut-off tail leaves no trace in it. A checkpoint handed to a place
//! outside kaudit's reach (a file on another volume, a webhook) fixes the
//! chain up to its position: [`Store::verify_chain_against`] then catches a
//! rewritten history (the row at the checkpoint's position has another
//! hash) and a truncated one (the chain no longer reaches that position).
//!
//! The signed message is UTF-8 text, no trailing newline:
//!
//! ```text
//! kaudit-chain-v1\n{seq}\n{hash}\n{time}
//! ```
//!
//! with `seq` in decimal, `hash` the row's 64 lowercase hex characters and
//! `time` the signing time in unix seconds, decimal. The signature is plain
//! Ed25519 (RFC 8032) over those bytes; `openssl pkeyutl -verify -rawin`
//! checks it (see `keys`). Scheduling checkpoints and shipping them is the
//! daemon's job.

use super::db::{Conn, OptionalExt, params};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::chain::{self, ChainProblem, ChainReport, Head, ProblemKind, decode_hash};
use super::error::sql;
use super::{Error, Store, now_unix};

/// The format tag of the message and of the JSON form.
pub const CHECKPOINT_FORMAT: &str = "kaudit-chain-v1";

/// A signed statement "the chain's row `seq` had hash `hash` at `time`".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainCheckpoint {
    pub seq: u64,
    /// 64 lowercase hex characters.
    pub hash: String,
    /// Signing time, unix seconds.
    pub time: i64,
    /// Ed25519 signature of [`ChainCheckpoint::message`], 128 hex characters.
    pub signature: String,
    /// The signer's Ed25519 public key, 64 hex characters.
    pub public_key: String,
}

/// The JSON form, as shipped to a checkpoint destination.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Json {
    format: String,
    seq: u64,
    hash: String,
    time: i64,
    /// For people; `time` is what is signed.
    #[serde(default)]
    time_rfc3339: Option<String>,
    signature: String,
    public_key: String,
}

impl ChainCheckpoint {
    /// The exact bytes signed (see the module doc).
    pub fn message(seq: u64, hash: &str, time: i64) -> String {
        format!("{CHECKPOINT_FORMAT}\n{seq}\n{hash}\n{time}")
    }

    /// Signs the chain position `seq` with hash `hash` at `time`.
    pub fn sign(key: &SigningKey, seq: u64, hash: &str, time: i64) -> ChainCheckpoint {
        let (signature, public_key) = sign_hex(key, &Self::message(seq, hash, time));
        ChainCheckpoint {
            seq,
            hash: hash.to_owned(),
            time,
            signature,
            public_key,
        }
    }

    /// Checks the signature with `key`; the sentence says what is wrong.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), String> {
        let when = rfc3339(self.time);
        let message = Self::message(self.seq, &self.hash, self.time);
        check_signature(key, &self.public_key, &self.signature, &message).map_err(|why| match why {
            SignatureProblem::OtherKey => format!(
                "the checkpoint for row {} signed at {when} was signed by another key (public key {}), not the one given",
                self.seq, self.public_key
            ),
            SignatureProblem::NotHex => format!(
                "the checkpoint for row {} signed at {when} has a signature that is not 128 hex characters",
                self.seq
            ),
            SignatureProblem::Mismatch => format!(
                "the checkpoint for row {} signed at {when} does not match its signature: it was forged or altered",
                self.seq
            ),
        })
    }

    /// The public key this checkpoint names (not a trusted key by itself).
    pub fn signer(&self) -> Result<VerifyingKey, String> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(&self.public_key, &mut b)
            .map_err(|_| "its public key is not 64 hex characters".to_owned())?;
        VerifyingKey::from_bytes(&b).map_err(|_| "its public key is not an Ed25519 key".to_owned())
    }

    /// One line of JSON.
    pub fn to_json(&self) -> String {
        let j = Json {
            format: CHECKPOINT_FORMAT.to_owned(),
            seq: self.seq,
            hash: self.hash.clone(),
            time: self.time,
            time_rfc3339: Some(rfc3339(self.time)),
            signature: self.signature.clone(),
            public_key: self.public_key.clone(),
        };
        // Serialising plain strings and integers cannot fail.
        serde_json::to_string(&j).unwrap_or_default()
    }

    /// Parses [`ChainCheckpoint::to_json`]'s output. The signature is not
    /// checked here (see [`ChainCheckpoint::verify`]).
    pub fn from_json(text: &str) -> Result<ChainCheckpoint, Error> {
        let j: Json = serde_json::from_str(text)
            .map_err(|e| Error::Checkpoint(format!("not a kaudit chain checkpoint: {e}")))?;
        if j.format != CHECKPOINT_FORMAT {
            return Err(Error::Checkpoint(format!(
                "format {:?} is not {CHECKPOINT_FORMAT:?}",
                j.format
            )));
        }
        check_hex_fields(&j.hash, &j.signature, &j.public_key)?;
        Ok(ChainCheckpoint {
            seq: j.seq,
            hash: j.hash,
            time: j.time,
            signature: j.signature,
            public_key: j.public_key,
        })
    }
}

/// The format tag of a signed prune record.
pub const PRUNE_FORMAT: &str = "kaudit-prune-v1";

/// A signed statement "retention pruned the chain up to row `seq`, whose
/// hash was `hash`, at cutoff `cutoff`, at `time`": what authorises the
/// retention anchor. Signed message (UTF-8, no trailing newline):
///
/// ```text
/// kaudit-prune-v1\n{seq}\n{hash}\n{cutoff}\n{time}
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneRecord {
    /// The last pruned row (the anchor).
    pub seq: u64,
    /// Its hash, 64 lowercase hex characters.
    pub hash: String,
    /// The prune's cutoff, unix seconds.
    pub cutoff: i64,
    /// Signing time, unix seconds.
    pub time: i64,
    /// Ed25519 signature of [`PruneRecord::message`], 128 hex characters.
    pub signature: String,
    /// The signer's Ed25519 public key, 64 hex characters.
    pub public_key: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PruneJson {
    format: String,
    seq: u64,
    hash: String,
    cutoff: i64,
    time: i64,
    #[serde(default)]
    time_rfc3339: Option<String>,
    signature: String,
    public_key: String,
}

impl PruneRecord {
    /// The exact bytes signed (see the type's doc).
    pub fn message(seq: u64, hash: &str, cutoff: i64, time: i64) -> String {
        format!("{PRUNE_FORMAT}\n{seq}\n{hash}\n{cutoff}\n{time}")
    }

    /// Signs a prune up to row `seq` with hash `hash`.
    pub fn sign(key: &SigningKey, seq: u64, hash: &str, cutoff: i64, time: i64) -> PruneRecord {
        let (signature, public_key) = sign_hex(key, &Self::message(seq, hash, cutoff, time));
        PruneRecord {
            seq,
            hash: hash.to_owned(),
            cutoff,
            time,
            signature,
            public_key,
        }
    }

    /// True when `key` signed exactly this record.
    pub fn is_signed_by(&self, key: &VerifyingKey) -> bool {
        let message = Self::message(self.seq, &self.hash, self.cutoff, self.time);
        check_signature(key, &self.public_key, &self.signature, &message).is_ok()
    }

    /// One line of JSON.
    pub fn to_json(&self) -> String {
        let j = PruneJson {
            format: PRUNE_FORMAT.to_owned(),
            seq: self.seq,
            hash: self.hash.clone(),
            cutoff: self.cutoff,
            time: self.time,
            time_rfc3339: Some(rfc3339(self.time)),
            signature: self.signature.clone(),
            public_key: self.public_key.clone(),
        };
        serde_json::to_string(&j).unwrap_or_default()
    }

    /// Parses [`PruneRecord::to_json`]'s output (the signature is not
    /// checked here).
    pub fn from_json(text: &str) -> Result<PruneRecord, Error> {
        let j: PruneJson = serde_json::from_str(text)
            .map_err(|e| Error::Checkpoint(format!("not a kaudit prune record: {e}")))?;
        if j.format != PRUNE_FORMAT {
            return Err(Error::Checkpoint(format!(
                "format {:?} is not {PRUNE_FORMAT:?}",
                j.format
            )));
        }
        check_hex_fields(&j.hash, &j.signature, &j.public_key)?;
        Ok(PruneRecord {
            seq: j.seq,
            hash: j.hash,
            cutoff: j.cutoff,
            time: j.time,
            signature: j.signature,
            public_key: j.public_key,
        })
    }
}

/// One line of a checkpoint file: a chain checkpoint or a prune record,
/// told apart by its `"format"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointLine {
    Chain(ChainCheckpoint),
    Prune(PruneRecord),
}

impl CheckpointLine {
    /// Parses one line by its `"format"` field.
    pub fn from_json(text: &str) -> Result<CheckpointLine, Error> {
        #[derive(Deserialize)]
        struct Tag {
            format: String,
        }
        let tag: Tag = serde_json::from_str(text)
            .map_err(|e| Error::Checkpoint(format!("not a kaudit checkpoint line: {e}")))?;
        match tag.format.as_str() {
            CHECKPOINT_FORMAT => ChainCheckpoint::from_json(text).map(CheckpointLine::Chain),
            PRUNE_FORMAT => PruneRecord::from_json(text).map(CheckpointLine::Prune),
            other => Err(Error::Checkpoint(format!(
                "format {other:?} is neither {CHECKPOINT_FORMAT:?} nor {PRUNE_FORMAT:?}"
            ))),
        }
    }
}

/// Checks that the retention anchor in `report`, if any, is authorised by a
/// prune record in `prunes` signed by `key` with the anchor's seq and hash;
/// records the problem in `report` when not.
pub fn check_anchor(report: &mut ChainReport, prunes: &[PruneRecord], key: &VerifyingKey) {
    if report.problem.is_some() {
        return;
    }
    let Some(a) = &report.anchor else { return };
    let authorised = prunes
        .iter()
        .any(|p| p.seq == a.seq && p.hash == a.hash && p.is_signed_by(key));
    if !authorised {
        let rows = if a.seq == 1 {
            "row 1 is".to_owned()
        } else {
            format!("rows 1–{} are", a.seq)
        };
        report.problem = Some(ChainProblem {
            kind: ProblemKind::Deleted,
            seq: 1,
            finding_id: None,
            message: format!(
                "{rows} gone and no signed prune record authorises it: history was cut"
            ),
        });
    }
}

/// Signs `message`: (hex signature, hex public key), as both kinds of
/// signed line store them.
fn sign_hex(key: &SigningKey, message: &str) -> (String, String) {
    let sig = key.sign(message.as_bytes());
    (
        hex::encode(sig.to_bytes()),
        hex::encode(key.verifying_key().to_bytes()),
    )
}

/// Why a stored signature does not hold for a key.
enum SignatureProblem {
    /// The line names another public key.
    OtherKey,
    /// The signature is not 64 bytes of hex.
    NotHex,
    /// The signature does not match the message.
    Mismatch,
}

/// Checks a stored (hex) signature of `message` against `key`.
fn check_signature(
    key: &VerifyingKey,
    public_key_hex: &str,
    signature_hex: &str,
    message: &str,
) -> Result<(), SignatureProblem> {
    if public_key_hex != hex::encode(key.to_bytes()) {
        return Err(SignatureProblem::OtherKey);
    }
    let mut sig = [0u8; 64];
    hex::decode_to_slice(signature_hex, &mut sig).map_err(|_| SignatureProblem::NotHex)?;
    key.verify_strict(message.as_bytes(), &Signature::from_bytes(&sig))
        .map_err(|_| SignatureProblem::Mismatch)
}

/// The hex fields of a signed line have their exact lengths.
fn check_hex_fields(hash: &str, signature: &str, public_key: &str) -> Result<(), Error> {
    let is_hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    for (name, v, n) in [
        ("hash", hash, 64),
        ("signature", signature, 128),
        ("public_key", public_key, 64),
    ] {
        if !is_hex(v, n) {
            return Err(Error::Checkpoint(format!(
                "its {name} is not {n} lowercase hex characters"
            )));
        }
    }
    Ok(())
}

fn rfc3339(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("unix time {t}"))
}

fn stored_hash(conn: &Conn, seq: u64) -> Result<Option<String>, Error> {
    conn.query_row(
        "SELECT hash FROM findings WHERE seq = ?1",
        params![seq as i64],
        |r| r.get(0),
    )
    .optional()
    .map_err(sql("read a chain row"))
}

/// Checks `checkpoints` against an intact chain described by `report`,
/// recording the first problem in it. With `trusted`, every signature must
/// be by that key; without, each is checked against the key it names.
pub(crate) fn check_all(
    conn: &Conn,
    report: &mut ChainReport,
    checkpoints: &[ChainCheckpoint],
    trusted: Option<&VerifyingKey>,
) -> Result<(), Error> {
    let mut sorted: Vec<&ChainCheckpoint> = checkpoints.iter().collect();
    sorted.sort_by_key(|c| c.seq);
    let head_seq = report.head.as_ref().map_or(0, |h| h.0);
    let anchor = report.anchor.clone();
    for cp in sorted {
        let fail = |kind, seq, message: String| ChainProblem {
            kind,
            seq,
            finding_id: None,
            message,
        };
        let key = match trusted {
            Some(k) => *k,
            None => match cp.signer() {
                Ok(k) => k,
                Err(why) => {
                    report.problem = Some(fail(
                        ProblemKind::Checkpoint,
                        cp.seq,
                        format!("the checkpoint for row {}: {why}", cp.seq),
                    ));
                    return Ok(());
                }
            },
        };
        if let Err(why) = cp.verify(&key) {
            report.problem = Some(fail(ProblemKind::Checkpoint, cp.seq, why));
            return Ok(());
        }
        let when = rfc3339(cp.time);
        if let Some(a) = anchor.as_ref().filter(|a| cp.seq <= a.seq) {
            if cp.seq == a.seq && cp.hash != a.hash {
                report.problem = Some(fail(
                    ProblemKind::Altered,
                    cp.seq,
                    format!(
                        "the retention anchor (row {}) does not have the hash signed at {when}: the history before it was rewritten",
                        a.seq
                    ),
                ));
                return Ok(());
            }
            report.checkpoints_pruned += 1;
            continue;
        }
        if cp.seq > head_seq {
            let from = head_seq + 1;
            report.problem = Some(fail(
                ProblemKind::Truncated,
                from,
                format!(
                    "the chain ends at row {head_seq} but a checkpoint signed at {when} covers row {}: rows {from}–{} (at least) were deleted",
                    cp.seq, cp.seq
                ),
            ));
            return Ok(());
        }
        match stored_hash(conn, cp.seq)? {
            Some(h) if h == cp.hash => report.checkpoints_checked += 1,
            Some(_) => {
                report.problem = Some(fail(
                    ProblemKind::Altered,
                    cp.seq,
                    format!(
                        "row {} no longer has the hash signed at {when} ({}): the chain was rewritten up to that row",
                        cp.seq, cp.hash
                    ),
                ));
                return Ok(());
            }
            None => {
                report.problem = Some(fail(
                    ProblemKind::Deleted,
                    cp.seq,
                    format!(
                        "row {}, covered by a checkpoint signed at {when}, is missing: deleted",
                        cp.seq
                    ),
                ));
                return Ok(());
            }
        }
    }
    Ok(())
}

impl Store {
    /// Signs the chain head with `key`, stores the checkpoint and returns it
    /// for the caller to ship out of kaudit's reach. `None` when the chain
    /// is empty. Before signing, the rows since the last stored checkpoint
    /// (all rows, the first time) are verified, so a tampered chain is never
    /// signed.
    ///
    /// # Errors
    /// [`Error::Tampered`] when that verification fails; SQLite errors.
    pub fn sign_head(&mut self, key: &SigningKey) -> Result<Option<ChainCheckpoint>, Error> {
        let head = chain::head(&self.conn)?;
        if head.seq == 0 {
            return Ok(None);
        }
        self.verify_since_last_checkpoint(key)?;
        let cp = ChainCheckpoint::sign(key, head.seq, &hex::encode(head.hash), now_unix());
        self.conn
            .execute(
                "INSERT INTO chain_checkpoints (seq, hash, time, signature, public_key)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![cp.seq as i64, cp.hash, cp.time, cp.signature, cp.public_key],
            )
            .map_err(sql("store a chain checkpoint"))?;
        tracing::info!(seq = cp.seq, hash = %cp.hash, "chain head signed");
        Ok(Some(cp))
    }

    fn verify_since_last_checkpoint(&self, key: &SigningKey) -> Result<(), Error> {
        let anchor_seq = super::retention::anchor(&self.conn)?.map_or(0, |a| a.seq);
        let public = hex::encode(key.verifying_key().to_bytes());
        let last: Option<(i64, String)> = self
            .conn
            .query_row(
                "SELECT seq, hash FROM chain_checkpoints WHERE public_key = ?1 AND seq > ?2
                 ORDER BY seq DESC LIMIT 1",
                params![public, anchor_seq as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql("read the last chain checkpoint"))?;
        let start = match last {
            Some((seq, hash)) => {
                let seq = seq as u64;
                match (stored_hash(&self.conn, seq)?, decode_hash(&hash)) {
                    (Some(h), Some(bytes)) if h == hash => Some(Head { seq, hash: bytes }),
                    _ => {
                        return Err(Error::Tampered(format!(
                            "row {seq} no longer has the hash of the last checkpoint ({hash}): run `kaudit verify --db`"
                        )));
                    }
                }
            }
            None => None,
        };
        let problem = match start {
            Some(start) => chain::walk(&self.conn, start, false)?.problem,
            None => self.verify_rows()?.problem,
        };
        match problem {
            Some(p) => Err(Error::Tampered(p.message)),
            None => Ok(()),
        }
    }

    /// The checkpoints stored in this database, oldest first.
    pub fn stored_checkpoints(&self) -> Result<Vec<ChainCheckpoint>, Error> {
        self.conn
            .query_map(
                "SELECT seq, hash, time, signature, public_key FROM chain_checkpoints ORDER BY id",
                params![],
                |r| {
                    Ok(ChainCheckpoint {
                        seq: r.get::<i64>(0)? as u64,
                        hash: r.get(1)?,
                        time: r.get(2)?,
                        signature: r.get(3)?,
                        public_key: r.get(4)?,
                    })
                },
            )
            .map_err(sql("read chain checkpoints"))
    }

    /// Verifies the chain, then each of `checkpoints` (kept outside kaudit)
    /// against it: each must be signed by `public_key`, the row at its
    /// position must still have its hash, and the chain must still reach it.
    pub fn verify_chain_against(
        &self,
        checkpoints: &[ChainCheckpoint],
        public_key: &VerifyingKey,
    ) -> Result<ChainReport, Error> {
        let mut report = self.verify_rows()?;
        if report.is_ok() {
            check_all(&self.conn, &mut report, checkpoints, Some(public_key))?;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Batch, keys};
    use super::*;

    /// Both kinds of signed line validate their hex fields the same way.
    #[test]
    fn prune_records_reject_malformed_hex_like_checkpoints() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let good = PruneRecord::sign(&key, 5, &"ab".repeat(32), 100, 200);
        assert!(PruneRecord::from_json(&good.to_json()).is_ok());
        let bad = good.to_json().replace(&good.signature, "zz");
        let err = PruneRecord::from_json(&bad).unwrap_err().to_string();
        assert!(err.contains("signature is not 128 lowercase hex"), "{err}");
        assert!(good.is_signed_by(&key.verifying_key()));
        assert!(!good.is_signed_by(&SigningKey::from_bytes(&[4; 32]).verifying_key()));
    }

    fn commit_n(store: &mut Store, from: usize, n: usize) {
        let batch = Batch {
            findings: (from..from + n)
                .map(|i| finding("c1", &format!("a{i}"), "pod-exec"))
                .collect(),
            ..Batch::default()
        };
        store.commit(&batch).unwrap();
    }

    #[test]
    fn checkpoint_json_round_trips_and_verifies() {
        let key = keys::generate();
        let cp = ChainCheckpoint::sign(&key, 42, &"ab".repeat(32), 1_767_225_600);
        let json = cp.to_json();
        assert!(
            json.contains(r#""time_rfc3339":"2026-01-01T00:00:00Z""#),
            "{json}"
        );
        let back = ChainCheckpoint::from_json(&json).unwrap();
        assert_eq!(back, cp);
        back.verify(&key.verifying_key()).unwrap();
        let mut forged = back.clone();
        forged.seq = 41;
        let e = forged.verify(&key.verifying_key()).unwrap_err();
        assert!(e.contains("does not match its signature"), "{e}");
        assert!(ChainCheckpoint::from_json("{}").is_err());
        assert!(ChainCheckpoint::from_json(&json.replace("kaudit-chain-v1", "v0")).is_err());
        assert_eq!(
            ChainCheckpoint::message(3, "ff", 10),
            "kaudit-chain-v1\n3\nff\n10"
        );
    }

    #[test]
    fn an_empty_chain_has_nothing_to_sign() {
        let (_dir, mut store) = temp_store();
        assert_eq!(store.sign_head(&keys::generate()).unwrap(), None);
    }

    #[test]
    fn checkpoints_hold_on_an_intact_chain() {
        let (_dir, mut store) = temp_store();
        let key = keys::generate();
        commit_n(&mut store, 0, 5);
        let a = store.sign_head(&key).unwrap().unwrap();
        commit_n(&mut store, 5, 5);
        let b = store.sign_head(&key).unwrap().unwrap();
        assert_eq!((a.seq, b.seq), (5, 10));
        let r = store
            .verify_chain_against(&[a.clone(), b.clone()], &key.verifying_key())
            .unwrap();
        assert!(r.is_ok(), "{r}");
        assert_eq!(r.checkpoints_checked, 2);
        let r = store.verify_chain().unwrap();
        assert!(r.is_ok(), "{r}");
        assert_eq!(r.checkpoints_checked, 2);
        assert_eq!(store.stored_checkpoints().unwrap(), vec![a, b]);
    }

    #[test]
    fn deleting_the_last_rows_after_a_checkpoint_is_caught() {
        let (_dir, mut store) = temp_store();
        let key = keys::generate();
        commit_n(&mut store, 0, 10);
        let cp = store.sign_head(&key).unwrap().unwrap();
        // Cut the tail and the stored checkpoint: the chain alone looks fine.
        store
            .conn()
            .execute_batch("DELETE FROM findings WHERE seq > 7; DELETE FROM chain_checkpoints;")
            .unwrap();
        assert!(store.verify_chain().unwrap().is_ok());
        let r = store
            .verify_chain_against(&[cp], &key.verifying_key())
            .unwrap();
        let p = r.problem.unwrap();
        assert_eq!(
            (p.kind, p.seq),
            (ProblemKind::Truncated, 8),
            "{}",
            p.message
        );
        assert!(
            p.message
                .starts_with("the chain ends at row 7 but a checkpoint signed at "),
            "{}",
            p.message
        );
        assert!(
            p.message
                .ends_with("covers row 10: rows 8–10 (at least) were deleted"),
            "{}",
            p.message
        );
    }

    #[test]
    fn deleting_the_last_rows_is_caught_by_a_stored_checkpoint_too() {
        let (_dir, mut store) = temp_store();
        let key = keys::generate();
        commit_n(&mut store, 0, 10);
        store.sign_head(&key).unwrap().unwrap();
        store
            .conn()
            .execute("DELETE FROM findings WHERE seq > 8", params![])
            .unwrap();
        let p = store.verify_chain().unwrap().problem.unwrap();
        assert_eq!(
            (p.kind, p.seq),
            (ProblemKind::Truncated, 9),
            "{}",
            p.message
        );
    }

    #[test]
    fn a_rewritten_history_is_caught() {
        let (_dir, mut store) = temp_store();
        let key = keys::generate();
        commit_n(&mut store, 0, 6);
        let cp = store.sign_head(&key).unwrap().unwrap();
        // Rewrite row 2 and recompute every later hash: the chain verifies.
        let rows: Vec<(i64, String)> = store
            .conn()
            .query_map(
                "SELECT seq, finding FROM findings ORDER BY seq",
                params![],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let mut prev = chain::ZERO_HASH.to_owned();
        for (seq, canonical) in rows {
            let canonical = if seq == 2 {
                canonical.replace("sh in", "id in")
            } else {
                canonical
            };
            let hash = chain::link_hash(&prev, &canonical).unwrap();
            store
                .conn()
                .execute(
                    "UPDATE findings SET finding = ?1, prev_hash = ?2, hash = ?3 WHERE seq = ?4",
                    params![canonical, prev, hash, seq],
                )
                .unwrap();
            prev = hash;
        }
        assert!(store.verify_rows().unwrap().is_ok());
        let p = store
            .verify_chain_against(&[cp], &key.verifying_key())
            .unwrap()
            .problem
            .unwrap();
        assert_eq!((p.kind, p.seq), (ProblemKind::Altered, 6), "{}", p.message);
        assert!(
            p.message.contains("the chain was rewritten up to that row"),
            "{}",
            p.message
        );
        // And kaudit refuses to sign the rewritten head.
        commit_n(&mut store, 6, 1);
        let e = store.sign_head(&key).unwrap_err();
        assert!(matches!(e, Error::Tampered(_)), "{e}");
    }

    #[test]
    fn a_checkpoint_signed_with_another_key_fails() {
        let (_dir, mut store) = temp_store();
        let ours = keys::generate();
        let theirs = keys::generate();
        commit_n(&mut store, 0, 3);
        let cp = store.sign_head(&theirs).unwrap().unwrap();
        let p = store
            .verify_chain_against(std::slice::from_ref(&cp), &ours.verifying_key())
            .unwrap()
            .problem
            .unwrap();
        assert_eq!(p.kind, ProblemKind::Checkpoint);
        assert!(
            p.message.contains("was signed by another key"),
            "{}",
            p.message
        );
        // Claiming our public key does not help: the signature is theirs.
        let mut claimed = cp;
        claimed.public_key = hex::encode(ours.verifying_key().to_bytes());
        let p = store
            .verify_chain_against(&[claimed], &ours.verifying_key())
            .unwrap()
            .problem
            .unwrap();
        assert!(
            p.message.contains("does not match its signature"),
            "{}",
            p.message
        );
    }

    #[test]
    fn signing_refuses_a_tampered_chain() {
        let (_dir, mut store) = temp_store();
        let key = keys::generate();
        commit_n(&mut store, 0, 4);
        store.sign_head(&key).unwrap();
        commit_n(&mut store, 4, 4);
        store
            .conn()
            .execute(
                "UPDATE findings SET finding = finding || ' ' WHERE seq = 6",
                params![],
            )
            .unwrap();
        let e = store.sign_head(&key).unwrap_err();
        assert!(e.to_string().contains("row 6"), "{e}");
    }

    #[test]
    fn checkpoints_survive_pruning() {
        let (_dir, mut store) = temp_store();
        let key = keys::generate();
        commit_n(&mut store, 0, 4);
        let early = store.sign_head(&key).unwrap().unwrap();
        let batch = Batch {
            findings: vec![finding_at("c1", "late", "pod-exec", "2026-03-01T00:00:00Z")],
            ..Batch::default()
        };
        store.commit(&batch).unwrap();
        let head = store.sign_head(&key).unwrap().unwrap();
        store
            .prune(chain::parse_time("2026-02-01T00:00:00Z").unwrap())
            .unwrap();
        let r = store
            .verify_chain_against(&[early, head], &key.verifying_key())
            .unwrap();
        assert!(r.is_ok(), "{r}");
        assert_eq!((r.checkpoints_checked, r.checkpoints_pruned), (1, 1));
        assert!(store.sign_head(&key).unwrap().is_some());
    }

    #[test]
    fn a_retention_anchor_needs_a_signed_prune_record() {
        let (_dir, mut store) = temp_store();
        let key = keys::generate();
        commit_n(&mut store, 0, 6);
        let head = store.sign_head(&key).unwrap().unwrap();
        // Forged: a prefix deleted and an anchor written by hand.
        let hash: String = store
            .conn()
            .query_row("SELECT hash FROM findings WHERE seq = 2", params![], |r| {
                r.get(0)
            })
            .unwrap();
        store
            .conn()
            .execute("DELETE FROM findings WHERE seq <= 2", params![])
            .unwrap();
        store
            .conn()
            .execute(
                "INSERT INTO chain_anchor (id, seq, hash, pruned_rows, cutoff, pruned_at) VALUES (1, 2, ?1, 2, 0, 0)",
                params![hash],
            )
            .unwrap();
        let mut r = store
            .verify_chain_against(std::slice::from_ref(&head), &key.verifying_key())
            .unwrap();
        assert!(r.is_ok(), "{r}");
        let other = PruneRecord::sign(&keys::generate(), 2, &hash, 0, 0);
        let mut claimed = other.clone();
        claimed.public_key = hex::encode(key.verifying_key().to_bytes());
        check_anchor(&mut r, &[other, claimed], &key.verifying_key());
        let p = r.problem.clone().unwrap();
        assert_eq!((p.kind, p.seq), (ProblemKind::Deleted, 1));
        assert_eq!(
            p.message,
            "rows 1–2 are gone and no signed prune record authorises it: history was cut"
        );
        // The record kaudit would have signed authorises it.
        let good = PruneRecord::sign(&key, 2, &hash, 0, 0);
        let back = CheckpointLine::from_json(&good.to_json()).unwrap();
        assert_eq!(back, CheckpointLine::Prune(good.clone()));
        assert!(matches!(
            CheckpointLine::from_json(&head.to_json()).unwrap(),
            CheckpointLine::Chain(_)
        ));
        let mut r = store.verify_rows().unwrap();
        check_anchor(&mut r, &[good], &key.verifying_key());
        assert!(r.is_ok(), "{r}");
        assert_eq!(
            PruneRecord::message(3, "ff", 5, 10),
            "kaudit-prune-v1\n3\nff\n5\n10"
        );
    }

    #[test]
    fn prune_signed_signs_the_new_anchor_before_committing() {
        let (_dir, mut store) = temp_store();
        let key = keys::generate();
        commit_n(&mut store, 0, 3);
        // When the record cannot be kept, nothing is pruned.
        let e = store
            .prune_signed(i64::MAX, &key, &mut |_| {
                Err(Error::Checkpoint("disk full".into()))
            })
            .unwrap_err();
        assert!(e.to_string().contains("disk full"), "{e}");
        assert_eq!(store.verify_rows().unwrap().rows, 3);
        let mut kept = Vec::new();
        let (report, record) = store
            .prune_signed(i64::MAX, &key, &mut |r| {
                kept.push(r.clone());
                Ok(())
            })
            .unwrap();
        let record = record.unwrap();
        assert_eq!(kept, vec![record.clone()]);
        let a = report.anchor.unwrap();
        assert_eq!((record.seq, &record.hash), (a.seq, &a.hash));
        assert!(record.is_signed_by(&key.verifying_key()));
        let mut r = store.verify_rows().unwrap();
        check_anchor(&mut r, &[record], &key.verifying_key());
        assert!(r.is_ok(), "{r}");
    }
}
