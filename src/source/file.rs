//! The file source: audit log files named by paths or globs, tailed through
//! rotation.
//!
//! Each file is followed by its identity (device and inode), not its name:
//! - **rename rotation** (the API server's own, logrotate's default): the
//!   old file keeps its inode under a new name; it is read to its end
//!   through the handle already open, and the new file at the old name is
//!   a new identity read from its start;
//! - **copytruncate**: the same inode shrinks below the offset read; reading
//!   starts again at 0;
//! - **rotated `.gz` files** matching the pattern are read once, whole.
//!
//! Only complete lines are sent. The offset of each identity is committed
//! with the batch's findings (`source_checkpoints`: key `DEV:INO`, position
//! the byte offset, or `gz` for a compressed file read whole), so after a
//! restart reading resumes where the last commit left it, and nothing is
//! alerted twice.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Committed, RawBatch, Readiness, Tx, Work};
use crate::config::FileSource;
use crate::store::SourceCheckpoint;

/// Read about this much of one file per batch.
const CHUNK: usize = 1 << 20;
/// A line longer than this (the default event size cap) is passed on as it
/// is, for the decoder to report.
const MAX_LINE: usize = 8 << 20;

/// A file being followed.
struct Tracked {
    path: PathBuf,
    file: File,
    offset: u64,
    /// Polls in a row at the end of a file no pattern names any more.
    idle_gone: u32,
}

pub struct FileTailer {
    name: Arc<str>,
    cfg: FileSource,
    tx: Tx,
    stop: Arc<AtomicBool>,
    ready: Arc<Readiness>,
    /// Committed positions, by `DEV:INO`.
    positions: HashMap<String, String>,
    tracked: HashMap<String, Tracked>,
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
        FileTailer {
            name: name.into(),
            cfg,
            tx,
            stop,
            ready,
            positions: positions.into_iter().collect(),
            tracked: HashMap::new(),
        }
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
    }

    /// One pass over the files; true when something was read.
    fn poll_once(&mut self) -> Result<bool, Stopped> {
        let mut seen = Vec::new();
        for pattern in self.cfg.patterns() {
            let paths = match glob::glob(&pattern) {
                Ok(p) => p,
                Err(e) => {
                    self.ready
                        .set(&self.name, Err(format!("bad pattern {pattern:?}: {e}")));
                    continue;
                }
            };
            for path in paths.flatten() {
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                let id = format!("{}:{}", meta.dev(), meta.ino());
                seen.push(id.clone());
                if is_gz(&path) {
                    if self.positions.get(&id).map(String::as_str) != Some("gz") {
                        self.read_gz(&path, &id)?;
                    }
                    continue;
                }
                match self.tracked.get_mut(&id) {
                    Some(t) => {
                        t.path = path.clone();
                        t.idle_gone = 0;
                        if meta.len() < t.offset {
                            tracing::info!(source = %self.name, path = %path.display(), "file truncated (copytruncate rotation): reading from the start");
                            t.offset = 0;
                        }
                    }
                    None => {
                        let Ok(file) = File::open(&path) else {
                            continue;
                        };
                        let mut offset = self
                            .positions
                            .get(&id)
                            .and_then(|p| p.parse().ok())
                            .unwrap_or(0);
                        if meta.len() < offset {
                            offset = 0;
                        }
                        self.tracked.insert(
                            id.clone(),
                            Tracked {
                                path,
                                file,
                                offset,
                                idle_gone: 0,
                            },
                        );
                    }
                }
            }
        }
        let mut progressed = false;
        let ids: Vec<String> = self.tracked.keys().cloned().collect();
        for id in ids {
            let read = self.read_some(&id)?;
            progressed |= read;
            let named = seen.contains(&id);
            if let Some(t) = self.tracked.get_mut(&id)
                && !named
                && !read
            {
                // Renamed out of the pattern or deleted: drained through the
                // open handle (idle polls only count once it is at its
                // end), then let go.
                t.idle_gone += 1;
                if t.idle_gone > 3 {
                    self.tracked.remove(&id);
                }
            }
        }
        Ok(progressed)
    }

    /// Reads complete lines from where `id` stands and sends them.
    fn read_some(&mut self, id: &str) -> Result<bool, Stopped> {
        let Some(t) = self.tracked.get_mut(id) else {
            return Ok(false);
        };
        if t.file.seek(SeekFrom::Start(t.offset)).is_err() {
            return Ok(false);
        }
        // A chunk, grown while it holds no line end, up to just over the
        // event size cap: a long (padded) event is read whole, and one over
        // the cap goes to the decoder, which quarantines it and raises
        // oversized-event, instead of being cut into malformed pieces.
        let mut buf = Vec::with_capacity(CHUNK);
        loop {
            let before = buf.len();
            let want = if before == 0 { CHUNK } else { before };
            buf.resize(before + want, 0);
            let n = match t.file.read(&mut buf[before..]) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(source = %self.name, path = %t.path.display(), error = %e, "read failed");
                    return Ok(false);
                }
            };
            buf.truncate(before + n);
            if n == 0 || memchr::memchr(b'\n', &buf[before..]).is_some() || buf.len() > MAX_LINE {
                break;
            }
        }
        if buf.is_empty() {
            return Ok(false);
        }
        let end = match memchr::memrchr(b'\n', &buf) {
            Some(i) => i + 1,
            None if buf.len() > MAX_LINE => buf.len(),
            None => return Ok(false),
        };
        buf.truncate(end);
        let new_offset = t.offset + end as u64;
        let position = format!("{}@{}", t.path.display(), t.offset);
        let mut batch = RawBatch::one(self.name.clone(), self.cfg.cluster.clone(), buf, position);
        batch.request_received = self.cfg.request_received;
        batch.checkpoints = vec![SourceCheckpoint {
            source: self.name.to_string(),
            key: id.to_owned(),
            position: new_offset.to_string(),
        }];
        self.send(batch)?;
        if let Some(t) = self.tracked.get_mut(id) {
            t.offset = new_offset;
        }
        self.positions.insert(id.to_owned(), new_offset.to_string());
        Ok(true)
    }

    /// A rotated, compressed file: read whole, once.
    fn read_gz(&mut self, path: &std::path::Path, id: &str) -> Result<(), Stopped> {
        let mut data = Vec::new();
        if let Err(e) = File::open(path).and_then(|mut f| f.read_to_end(&mut data)) {
            tracing::warn!(source = %self.name, path = %path.display(), error = %e, "cannot read");
            return Ok(());
        }
        let mut batch = RawBatch::one(
            self.name.clone(),
            self.cfg.cluster.clone(),
            data,
            path.display().to_string(),
        );
        batch.checkpoints = vec![SourceCheckpoint {
            source: self.name.to_string(),
            key: id.to_owned(),
            position: "gz".into(),
        }];
        batch.live = false;
        batch.request_received = self.cfg.request_received;
        self.send(batch)?;
        self.positions.insert(id.to_owned(), "gz".into());
        Ok(())
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

fn is_gz(path: &std::path::Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}
