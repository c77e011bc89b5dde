//! The file source: audit log files named by paths or globs, tailed through
//! rotation.
//!
//! A file is known by its *fingerprint*, a hash of its first line (at most
//! the first kilobyte) of content, decompressed for `.gz` files, not by its
//! name or inode. The first line of an audit log is an event with its own
//! auditID and timestamp, so the fingerprint names the content:
//! - **rename rotation** (the API server's own, logrotate's default): the
//!   old file keeps its content under a new name; it is read to its end
//!   through the handle already open, and the new file at the old name has
//!   a new first line, so it is read from its start;
//! - **copytruncate**: the file emptied in place gets a new first line and
//!   is read from 0; the copy (when a pattern matches it) carries the old
//!   fingerprint, so what was not read before the truncation is read from
//!   the copy. When no watched file holds that content within
//!   `copy_grace` (default 60 s: a copy may be compressed just after) and
//!   the file was cut before its end was read, the bytes lost are reported
//!   (`audit-events-lost`);
//! - **rotated `.gz` files** carry the fingerprint of the file they were
//!   compressed from: rename-then-compress rotation is not read twice, a
//!   `.gz` is decompressed as a stream (never whole in memory) from where
//!   its content was read up to, a few chunks per poll (a backlog of
//!   rotated files does not hold up the live one), and one still being
//!   written is read as far as it decodes and looked at again when it
//!   grows;
//! - a new file on a **reused inode** is a new fingerprint: nothing of it is
//!   skipped.
//!
//! Only complete lines are sent (the last line of a finished `.gz` too).
//! The offset within each fingerprint's content is committed with the
//! batch's findings (`source_checkpoints`: key `fp:HEX`, position the byte
//! offset, plus ` gz:LEN` once a compressed file of LEN bytes was read to
//! its end), so after a restart reading resumes where the last commit left
//! it, and nothing is alerted twice. Positions an older kaudit stored by
//! `DEV:INO` are adopted by the file found on that inode.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flate2::read::MultiGzDecoder;
use tokio::sync::oneshot;

use super::{Committed, Lost, RawBatch, Readiness, Tx, Work};
use crate::config::FileSource;
use crate::store::SourceCheckpoint;

/// Read about this much of one file per batch.
const CHUNK: usize = 1 << 20;
/// A line longer than this (the default event size cap; see
/// [`FileTailer::with_max_line`]) is passed on as it is, for the decoder
/// to report.
const MAX_LINE: usize = 8 << 20;
/// The fingerprint covers the first line, or this many bytes of a longer
/// one. A file with less than this and no line end yet is not read until
/// it has either.
const HEAD: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Inode {
    dev: u64,
    ino: u64,
}

impl Inode {
    fn of(meta: &std::fs::Metadata) -> Self {
        Inode {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// A file's size and modification time: when neither changed, neither did
/// its fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: i64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Stamp {
            len: meta.len(),
            mtime: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        }
    }
}

/// Where a fingerprint's content has been read up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Pos {
    offset: u64,
    /// A compressed file of this many bytes was read to its end.
    gz_len: Option<u64>,
}

impl Pos {
    fn parse(text: &str) -> Option<Pos> {
        let mut words = text.split(' ');
        let offset = words.next()?.parse().ok()?;
        let gz_len = match words.next() {
            Some(w) => Some(w.strip_prefix("gz:")?.parse().ok()?),
            None => None,
        };
        Some(Pos { offset, gz_len })
    }

    fn text(self) -> String {
        match self.gz_len {
            Some(l) => format!("{} gz:{l}", self.offset),
            None => self.offset.to_string(),
        }
    }
}

/// A plain file being followed through an open handle.
struct Tracked {
    path: PathBuf,
    file: File,
    inode: Inode,
    /// Its size when last looked at (what a truncation lost is at least the
    /// part of it not read).
    len: u64,
    /// Polls in a row at the end of a file no pattern names any more.
    idle_gone: u32,
    /// Polls in a row at the end of a file that did not change.
    idle: u32,
}

/// A file matched in this poll.
struct Found {
    path: PathBuf,
    inode: Inode,
    stamp: Stamp,
    gz: bool,
}

/// The compressed file being read, a few chunks per poll so that the live
/// files are not kept waiting behind a backlog of rotated ones.
struct GzRead {
    key: String,
    inode: Inode,
    stamp: Stamp,
    path: PathBuf,
    dec: MultiGzDecoder<BufReader<File>>,
    /// The content offset the decoder stands at (after `carry`).
    offset: u64,
    /// Decoded bytes of a line not complete yet.
    carry: Vec<u8>,
}

/// Chunks of a compressed file read per poll at most.
const GZ_CHUNKS_PER_POLL: usize = 4;
/// Idle polls after which a named file's handle is closed.
const IDLE_CLOSE: u32 = 40;

pub struct FileTailer {
    name: Arc<str>,
    cfg: FileSource,
    tx: Tx,
    stop: Arc<AtomicBool>,
    ready: Arc<Readiness>,
    /// Read (and committed) positions, by fingerprint key.
    positions: HashMap<String, Pos>,
    /// Positions an older kaudit committed by `DEV:INO`: adopted by the
    /// fingerprint of the file found on that inode.
    legacy: HashMap<Inode, String>,
    /// Plain files with an open handle, by fingerprint key.
    tracked: HashMap<String, Tracked>,
    /// Fingerprints of the files matched, while they do not change.
    keys: HashMap<Inode, (Stamp, Option<String>)>,
    /// Files not looked at again until they change: compressed files read
    /// to their end or broken, copies holding less than what was read.
    settled: HashMap<Inode, Stamp>,
    gz: Option<GzRead>,
    /// Truncations that lost unread bytes: reported after the source's
    /// `copy_grace` unless the content shows up under another name.
    pending_loss: HashMap<String, (Lost, std::time::Instant)>,
    /// Why the last poll could not open a file (reported once).
    last_error: Option<String>,
    /// Inodes of the plain files the patterns matched in the last scan.
    named: std::collections::HashSet<Inode>,
    /// Lines up to this long are read whole (the decoder's document cap).
    max_line: usize,
}

impl FileTailer {
    pub fn new(
        name: &str,
        cfg: FileSource,
        tx: Tx,
        stop: Arc<AtomicBool>,
        ready: Arc<Readiness>,
        positions: Vec<(String, String)>,
    ) -> Self {
        let mut fps = HashMap::new();
        let mut legacy = HashMap::new();
        for (k, v) in positions {
            if k.starts_with("fp:") {
                if let Some(p) = Pos::parse(&v) {
                    fps.insert(k, p);
                }
            } else if let Some((dev, ino)) = k.split_once(':')
                && let (Ok(dev), Ok(ino)) = (dev.parse(), ino.parse())
            {
                legacy.insert(Inode { dev, ino }, v);
            }
        }
        FileTailer {
            name: name.into(),
            cfg,
            tx,
            stop,
            ready,
            positions: fps,
            legacy,
            tracked: HashMap::new(),
            keys: HashMap::new(),
            settled: HashMap::new(),
            gz: None,
            pending_loss: HashMap::new(),
            last_error: None,
            named: std::collections::HashSet::new(),
            max_line: MAX_LINE,
        }
    }

    /// Reads lines up to `max` bytes whole (the decoder's document cap: a
    /// line may hold a whole envelope).
    #[must_use]
    pub fn with_max_line(mut self, max: usize) -> Self {
        self.max_line = max.max(HEAD);
        self
    }

    /// Follows the files until `stop` is set or the pipeline goes away.
    pub fn run(mut self) {
        self.ready.set(&self.name, Ok(()));
        let poll = Duration::from_millis(self.cfg.poll_ms.max(10));
        while !self.stop.load(Ordering::Relaxed) {
            let progressed = match self.poll_once() {
                Ok(p) => p,
                Err(Stopped) => return,
            };
            if !progressed {
                std::thread::sleep(poll);
            }
        }
        // Stopping (shutdown, a reload): losses still in their grace are
        // reported now rather than forgotten with this process.
        let pending: Vec<Lost> = self.pending_loss.drain().map(|(_, (l, _))| l).collect();
        for lost in pending {
            if self.lost(lost).is_err() {
                break;
            }
        }
    }

    /// The files the patterns match now, by fingerprint (a plain file wins
    /// over a compressed copy of the same content).
    fn scan(&mut self) -> HashMap<String, Found> {
        let mut found: HashMap<String, Found> = HashMap::new();
        let mut inodes = std::collections::HashSet::new();
        self.named.clear();
        let mut error = None;
        for pattern in self.cfg.patterns() {
            let paths = match glob::glob(&pattern) {
                Ok(p) => p,
                Err(e) => {
                    error = Some(format!("bad pattern {pattern:?}: {e}"));
                    continue;
                }
            };
            for path in paths {
                let path = match path {
                    Ok(p) => p,
                    Err(e) => {
                        // A directory that cannot be read hides its files.
                        error = Some(format!("cannot read {}: {}", e.path().display(), e.error()));
                        continue;
                    }
                };
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                let (inode, stamp, gz) = (Inode::of(&meta), Stamp::of(&meta), is_gz(&path));
                inodes.insert(inode);
                if !gz {
                    self.named.insert(inode);
                }
                let key = match self.keys.get(&inode) {
                    Some((s, key)) if *s == stamp => key.clone(),
                    _ => match fingerprint(&path, gz) {
                        Ok(key) => {
                            self.keys.insert(inode, (stamp, key.clone()));
                            key
                        }
                        Err(e) => {
                            // Out of file descriptors, permissions: not a
                            // file to skip quietly.
                            error = Some(format!("cannot read {}: {e}", path.display()));
                            continue;
                        }
                    },
                };
                let Some(key) = key else {
                    continue; // no first line yet
                };
                if let Some(old) = self.legacy.remove(&inode)
                    && !self.positions.contains_key(&key)
                {
                    // Read by an older kaudit, which knew it by its inode.
                    let pos = match (old.as_str(), gz) {
                        ("gz", true) => Some(Pos {
                            offset: 0,
                            gz_len: Some(stamp.len),
                        }),
                        // Longer than the file: another content on a reused
                        // inode (or emptied and written again); read it all.
                        (o, false) => o
                            .parse()
                            .ok()
                            .filter(|offset: &u64| *offset <= stamp.len)
                            .map(|offset| Pos {
                                offset,
                                gz_len: None,
                            }),
                        _ => None,
                    };
                    if let Some(pos) = pos {
                        self.positions.insert(key.clone(), pos);
                    }
                }
                let f = Found {
                    path,
                    inode,
                    stamp,
                    gz,
                };
                match found.get(&key) {
                    // A plain file wins over a compressed copy.
                    Some(old) if !old.gz || gz => {}
                    _ => {
                        found.insert(key, f);
                    }
                }
            }
        }
        self.keys.retain(|i, _| inodes.contains(i));
        self.settled.retain(|i, _| inodes.contains(i));
        // Positions of an older kaudit apply to the files there at start
        // only: an inode reused later is another file.
        self.legacy.clear();
        if error != self.last_error {
            match &error {
                Some(e) => {
                    tracing::warn!(source = %self.name, error = %e, "a watched file cannot be read");
                    self.ready.set(&self.name, Err(e.clone()));
                }
                None => self.ready.set(&self.name, Ok(())),
            }
            self.last_error = error;
        }
        found
    }

    /// One pass over the files; true when something was read.
    fn poll_once(&mut self) -> Result<bool, Stopped> {
        let found = self.scan();
        self.settle_losses(&found)?;
        for (key, f) in found.iter().filter(|(_, f)| !f.gz) {
            match self.tracked.get_mut(key) {
                Some(t) => {
                    if t.inode == f.inode {
                        t.path.clone_from(&f.path);
                    }
                }
                None => {
                    if self.settled.get(&f.inode) == Some(&f.stamp) {
                        continue;
                    }
                    let pos = self.positions.get(key).copied().unwrap_or_default();
                    if f.stamp.len < pos.offset {
                        // A copy holding less than what was read of this
                        // content (lines came after the copy): nothing new.
                        self.settled.insert(f.inode, f.stamp);
                        continue;
                    }
                    let Ok(file) = File::open(&f.path) else {
                        continue;
                    };
                    // Opened after the scan: it must still hold that content.
                    if head_key(&file).as_deref() != Some(key.as_str()) {
                        continue;
                    }
                    if self.gz.as_ref().is_some_and(|g| g.key == *key) {
                        self.gz = None; // read here instead
                    }
                    self.tracked.insert(
                        key.clone(),
                        Tracked {
                            path: f.path.clone(),
                            file,
                            inode: f.inode,
                            len: f.stamp.len,
                            idle_gone: 0,
                            idle: 0,
                        },
                    );
                }
            }
        }
        let mut progressed = false;
        let keys: Vec<String> = self.tracked.keys().cloned().collect();
        for key in keys {
            let read = self.read_plain(&key, &found)?;
            progressed |= read;
            let Some(t) = self.tracked.get_mut(&key) else {
                continue;
            };
            if read {
                t.idle = 0;
                continue;
            }
            t.idle += 1;
            if self.named.contains(&t.inode) {
                // Named by a pattern (under any name): at its end and
                // unchanged for a while, its handle is closed (kube-apiserver
                // may keep every rotated file); it is opened again by name
                // when it changes.
                if t.idle > IDLE_CLOSE
                    && let Ok(meta) = t.file.metadata()
                {
                    let (inode, stamp) = (t.inode, Stamp::of(&meta));
                    self.tracked.remove(&key);
                    self.settled.insert(inode, stamp);
                }
            } else {
                // Renamed out of the patterns, deleted, or compressed: drained
                // through the open handle (idle polls only count once it is
                // at its end), then let go; a compressed copy is read on
                // from where the handle stopped.
                t.idle_gone += 1;
                if t.idle_gone > 3 {
                    self.tracked.remove(&key);
                }
            }
        }
        if !self.stop.load(Ordering::Relaxed) {
            progressed |= self.read_gz(&found)?;
        }
        Ok(progressed)
    }

    /// Reports the losses whose grace has passed; forgets those whose
    /// content showed up under another name (a copy that is read on).
    fn settle_losses(&mut self, found: &HashMap<String, Found>) -> Result<(), Stopped> {
        self.pending_loss.retain(|key, _| !found.contains_key(key));
        let due: Vec<String> = self
            .pending_loss
            .iter()
            .filter(|(_, (_, at))| {
                at.elapsed() >= Duration::from_secs(self.cfg.copy_grace.max(0).unsigned_abs())
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some((lost, _)) = self.pending_loss.remove(&key) {
                self.lost(lost)?;
            }
        }
        Ok(())
    }

    /// Reads complete lines of a followed file from where its content was
    /// read up to, and sends them; true when something was sent.
    fn read_plain(&mut self, key: &str, found: &HashMap<String, Found>) -> Result<bool, Stopped> {
        let Some(t) = self.tracked.get_mut(key) else {
            return Ok(false);
        };
        let len = t.file.metadata().map(|m| m.len()).unwrap_or(0);
        let pos = self.positions.get(key).copied().unwrap_or_default();
        // Truncated in place (copytruncate) and perhaps written again: the
        // handle no longer holds this content.
        if len < pos.offset || head_key(&t.file).as_deref() != Some(key) {
            let Some(t) = self.tracked.remove(key) else {
                return Ok(false);
            };
            let cut = t.len.saturating_sub(pos.offset);
            tracing::info!(source = %self.name, path = %t.path.display(), "file truncated in place (copytruncate rotation)");
            // The rest is read from a copy under another name, if a pattern
            // matches one now or within the grace; else it is lost.
            let copy = found.get(key).is_some_and(|f| f.inode != t.inode);
            if cut > 0 && !copy {
                let lost = Lost {
                    cluster: self.cfg.cluster.clone(),
                    what: format!("{} [{key}]", t.path.display()),
                    from: pos.offset.to_string(),
                    count: cut,
                    unit: "bytes",
                    reason: "the file was truncated (copytruncate rotation) before kaudit read its end, and no pattern matches the copy".into(),
                };
                self.pending_loss
                    .insert(key.to_owned(), (lost, std::time::Instant::now()));
            }
            return Ok(false);
        }
        t.len = len;
        if len == pos.offset {
            return Ok(false);
        }
        if t.file.seek(SeekFrom::Start(pos.offset)).is_err() {
            return Ok(false);
        }
        let mut buf = Vec::with_capacity(CHUNK);
        if let Err(e) = fill(&mut t.file, &mut buf, self.max_line) {
            tracing::warn!(source = %self.name, path = %t.path.display(), error = %e, "read failed");
            return Ok(false);
        }
        // Truncated and written again while it was being read: what was
        // read may be the new content; it is read under its own name.
        if head_key(&t.file).as_deref() != Some(key) {
            return Ok(false);
        }
        let end = match memchr::memrchr(b'\n', &buf) {
            Some(i) => i + 1,
            None if buf.len() > self.max_line => buf.len(),
            None => return Ok(false),
        };
        buf.truncate(end);
        let position = format!("{}@{}", t.path.display(), pos.offset);
        let next = Pos {
            offset: pos.offset + end as u64,
            gz_len: None,
        };
        self.send_chunk(key, buf, position, next, true)?;
        Ok(true)
    }

    /// Reads a few chunks of a compressed file, decompressed as a stream
    /// from where its content was read up to (the same decoder across
    /// polls); true when something was sent.
    fn read_gz(&mut self, found: &HashMap<String, Found>) -> Result<bool, Stopped> {
        if self.gz.is_none() {
            self.gz = self.next_gz(found);
        }
        let Some(mut g) = self.gz.take() else {
            return Ok(false);
        };
        // Read elsewhere meanwhile (its plain file came back): start over.
        if self
            .positions
            .get(&g.key)
            .copied()
            .unwrap_or_default()
            .offset
            != g.offset
        {
            return Ok(false);
        }
        let mut sent = false;
        for _ in 0..GZ_CHUNKS_PER_POLL {
            // Cut short (still being written, or corrupt): the complete
            // lines decoded so far are read, the rest waits for a change.
            let (eof, error) = match fill(&mut g.dec, &mut g.carry, self.max_line) {
                Ok(eof) => (eof, None),
                Err(e) => (false, Some(e)),
            };
            let end = if eof {
                g.carry.len()
            } else {
                match memchr::memrchr(b'\n', &g.carry) {
                    Some(i) => i + 1,
                    None if error.is_some() => 0,
                    None => g.carry.len(), // over the line cap
                }
            };
            let rest = g.carry.split_off(end);
            let chunk = std::mem::replace(&mut g.carry, rest);
            let position = format!("{}@{}", g.path.display(), g.offset);
            g.offset += end as u64;
            let next = Pos {
                offset: g.offset,
                gz_len: eof.then_some(g.stamp.len),
            };
            if !chunk.is_empty() || eof {
                self.send_chunk(&g.key, chunk, position, next, false)?;
                sent = true;
            }
            if let Some(e) = error {
                tracing::warn!(source = %self.name, path = %g.path.display(), error = %e,
                    "compressed file is incomplete or corrupt: what decoded was read; it is looked at again when it changes");
                self.settled.insert(g.inode, g.stamp);
                return Ok(sent);
            }
            if eof {
                self.settled.insert(g.inode, g.stamp);
                return Ok(sent);
            }
        }
        self.gz = Some(g);
        Ok(sent)
    }

    /// The next compressed file with something not read yet, its decoder
    /// standing where its content was read up to.
    fn next_gz(&mut self, found: &HashMap<String, Found>) -> Option<GzRead> {
        for (key, f) in found.iter().filter(|(_, f)| f.gz) {
            // While the plain file of this content is open, it is read
            // there; the compressed copy is looked at once it is let go.
            if self.tracked.contains_key(key) || self.settled.get(&f.inode) == Some(&f.stamp) {
                continue;
            }
            let pos = self.positions.get(key).copied().unwrap_or_default();
            if pos.gz_len == Some(f.stamp.len) {
                self.settled.insert(f.inode, f.stamp);
                continue;
            }
            let broken = |me: &mut Self, e: std::io::Error| {
                tracing::warn!(source = %me.name, path = %f.path.display(), error = %e,
                    "compressed file is incomplete or corrupt: it is looked at again when it changes");
                me.settled.insert(f.inode, f.stamp);
            };
            let file = match File::open(&f.path) {
                Ok(file) => file,
                Err(e) => {
                    broken(self, e);
                    continue;
                }
            };
            let mut dec = MultiGzDecoder::new(BufReader::with_capacity(1 << 16, file));
            // Skipping what was read costs a decompression: one file per
            // poll at most, so that the live files are not kept waiting.
            match std::io::copy(&mut (&mut dec).take(pos.offset), &mut std::io::sink()) {
                Ok(n) if n == pos.offset => {}
                Ok(_) => {
                    // It holds no more than what was read already.
                    self.settled.insert(f.inode, f.stamp);
                    return None;
                }
                Err(e) => {
                    broken(self, e);
                    return None;
                }
            }
            return Some(GzRead {
                key: key.clone(),
                inode: f.inode,
                stamp: f.stamp,
                path: f.path.clone(),
                dec,
                offset: pos.offset,
                carry: Vec::new(),
            });
        }
        None
    }

    /// Sends `data` (complete lines) with the checkpoint `next` for `key`
    /// and records it once committed.
    fn send_chunk(
        &mut self,
        key: &str,
        data: Vec<u8>,
        position: String,
        next: Pos,
        live: bool,
    ) -> Result<(), Stopped> {
        let mut batch = RawBatch::one(self.name.clone(), self.cfg.cluster.clone(), data, position);
        if batch.parts[0].data.is_empty() {
            batch.parts.clear();
        }
        batch.live = live;
        batch.request_received = self.cfg.request_received;
        batch.checkpoints = vec![SourceCheckpoint {
            source: self.name.to_string(),
            key: key.to_owned(),
            position: next.text(),
        }];
        self.send(batch)?;
        self.positions.insert(key.to_owned(), next);
        Ok(())
    }

    /// Reports input lost before it could be read.
    fn lost(&self, lost: Lost) -> Result<(), Stopped> {
        let mut batch = RawBatch::one(
            self.name.clone(),
            self.cfg.cluster.clone(),
            Vec::new(),
            lost.what.clone(),
        );
        batch.parts.clear();
        batch.live = false;
        batch.lost = vec![lost];
        self.send(batch).map(|_| ())
    }

    /// Sends a batch and waits until it is committed.
    fn send(&self, mut batch: RawBatch) -> Result<Committed, Stopped> {
        let (done, wait) = oneshot::channel();
        batch.done = Some(done);
        self.tx
            .blocking_send(Work::Batch(batch))
            .map_err(|_| Stopped)?;
        wait.blocking_recv().map_err(|_| Stopped)
    }
}

/// The pipeline has gone (shutdown): stop reading.
struct Stopped;

fn is_gz(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}

/// Reads from `r`, appending to `buf`, until `buf` holds a line end and at
/// least [`CHUNK`] bytes, holds more than `max_line` bytes, or the input
/// ends (true).
fn fill(r: &mut impl Read, buf: &mut Vec<u8>, max_line: usize) -> std::io::Result<bool> {
    let mut newline = memchr::memchr(b'\n', buf).is_some();
    loop {
        if (newline && buf.len() >= CHUNK) || buf.len() > max_line {
            return Ok(false);
        }
        let before = buf.len();
        let want = if newline || before < CHUNK {
            CHUNK.saturating_sub(before).max(1 << 16)
        } else {
            before
        };
        buf.resize(before + want, 0);
        let n = match r.read(&mut buf[before..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                buf.truncate(before);
                continue;
            }
            Err(e) => {
                buf.truncate(before);
                return Err(e);
            }
        };
        buf.truncate(before + n);
        if n == 0 {
            return Ok(true);
        }
        newline = newline || memchr::memchr(b'\n', &buf[before..]).is_some();
    }
}

/// The fingerprint key of the content at `path`, once it has a first line
/// (or [`HEAD`] bytes of one); an error when the file cannot be opened.
fn fingerprint(path: &Path, gz: bool) -> std::io::Result<Option<String>> {
    let file = File::open(path)?;
    if !gz {
        return Ok(head_key(&file));
    }
    let mut head = Vec::with_capacity(HEAD);
    let mut dec = MultiGzDecoder::new(file).take(HEAD as u64);
    // A stream cut short still names its content by what decodes.
    let complete = dec.read_to_end(&mut head).is_ok() && head.len() < HEAD;
    Ok(key_of(&head, complete))
}

/// The fingerprint key of an open plain file's content.
fn head_key(file: &File) -> Option<String> {
    let mut head = [0u8; HEAD];
    let mut n = 0;
    while n < HEAD {
        match file.read_at(&mut head[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    key_of(&head[..n], false)
}

/// The key of content starting with `head`: its first line, or all of
/// `head` once it is [`HEAD`] long (or `complete`, the whole content).
fn key_of(head: &[u8], complete: bool) -> Option<String> {
    use sha2::Digest;
    let line = match memchr::memchr(b'\n', head) {
        Some(i) => &head[..=i],
        None if head.len() >= HEAD || (complete && !head.is_empty()) => {
            &head[..head.len().min(HEAD)]
        }
        None => return None,
    };
    let digest = sha2::Sha256::digest(line);
    Some(format!("fp:{}", hex::encode(&digest[..12])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip() {
        for p in [
            Pos {
                offset: 0,
                gz_len: None,
            },
            Pos {
                offset: 1234,
                gz_len: Some(99),
            },
        ] {
            assert_eq!(Pos::parse(&p.text()), Some(p));
        }
        assert_eq!(Pos::parse("12 zz"), None);
        assert_eq!(Pos::parse("x"), None);
    }

    #[test]
    fn the_key_is_the_first_line() {
        assert_eq!(key_of(b"", false), None);
        assert_eq!(key_of(b"{\"a\":1", false), None, "no line end yet");
        let a = key_of(b"{\"a\":1}\n", false);
        assert!(a.is_some());
        assert_eq!(
            key_of(b"{\"a\":1}\n{\"b\":2}\n", false),
            a,
            "later lines do not matter"
        );
        assert_ne!(key_of(b"{\"a\":2}\n", false), a);
        assert_eq!(key_of(b"{\"a\":1}", true), key_of(b"{\"a\":1}", true));
        let long = vec![b'x'; HEAD + 10];
        assert_eq!(key_of(&long, false), key_of(&long[..HEAD], false));
    }

    #[test]
    fn a_gz_copy_has_the_plain_files_key() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.log");
        std::fs::write(&plain, "{\"auditID\":\"1\"}\n{\"auditID\":\"2\"}\n").unwrap();
        let gz = dir.path().join("a.log.gz");
        let mut enc =
            flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        enc.write_all(&std::fs::read(&plain).unwrap()).unwrap();
        enc.finish().unwrap();
        assert!(fingerprint(&plain, false).unwrap().is_some());
        assert_eq!(
            fingerprint(&plain, false).unwrap(),
            fingerprint(&gz, true).unwrap()
        );
        assert!(fingerprint(&dir.path().join("missing"), false).is_err());
    }

    #[test]
    fn positions_stored_by_inode_are_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        std::fs::write(&log, "{\"auditID\":\"1\"}\n{\"auditID\":\"2\"}\n").unwrap();
        let meta = std::fs::metadata(&log).unwrap();
        let cfg: FileSource =
            serde_yaml_ng::from_str(&format!("{{path: {}}}", log.display())).unwrap();
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let mut t = FileTailer::new(
            "audit",
            cfg,
            tx,
            Arc::new(AtomicBool::new(false)),
            Arc::new(Readiness::default()),
            vec![(format!("{}:{}", meta.dev(), meta.ino()), "16".into())],
        );
        let found = t.scan();
        let key = found.keys().next().unwrap().clone();
        assert_eq!(
            t.positions[&key],
            Pos {
                offset: 16,
                gz_len: None
            }
        );
        assert!(t.legacy.is_empty());
    }

    #[test]
    fn fill_stops_at_a_chunk_of_lines_or_the_end() {
        let data: Vec<u8> = (0..200_000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let mut r = &data[..];
        let (mut total, mut fills) = (0, 0);
        loop {
            let mut buf = Vec::new();
            let eof = fill(&mut r, &mut buf, MAX_LINE).unwrap();
            fills += 1;
            total += buf.len();
            if eof {
                break;
            }
            assert!(buf.len() >= CHUNK && buf.len() < CHUNK + (1 << 16) + 16);
        }
        assert_eq!(total, data.len());
        assert!(fills >= 3);
    }
}
