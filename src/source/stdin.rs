//! The stdin source: JSON lines (or any envelope, line-framed) piped into
//! `kaudit run`. Lines are sent in batches of whole lines; there is nothing
//! to checkpoint, and at the end of input the source is done.

use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::oneshot;

use super::{RawBatch, Readiness, Tx, Work};
use crate::config::StdinSource;

/// Lines per batch.
const LINES: usize = 1000;
/// Bytes read for one line at most (just over the default event cap).
const MAX_LINE: u64 = (8 << 20) + 1;

/// Reads stdin until its end, `stop`, or the pipeline goes away.
pub fn run(name: &str, cfg: &StdinSource, tx: Tx, stop: Arc<AtomicBool>, ready: Arc<Readiness>) {
    ready.set(name, Ok(()));
    let name: Arc<str> = name.into();
    // Our own buffer, so that what is already read can be seen without
    // blocking for more.
    let mut input = std::io::BufReader::with_capacity(1 << 16, std::io::stdin());
    let mut line_no = 0u64;
    loop {
        let first = line_no;
        let mut data = Vec::new();
        let mut lines = 0;
        while lines < LINES {
            // A line longer than the event cap is cut there (the decoder
            // reports it); memory stays bounded.
            match std::io::Read::take(&mut input, MAX_LINE).read_until(b'\n', &mut data) {
                Ok(0) => break,
                Ok(_) => {
                    lines += 1;
                    line_no += 1;
                }
                Err(e) => {
                    tracing::warn!(source = %name, error = %e, "stdin read failed");
                    break;
                }
            }
            // Send what there is when no more is waiting (a slow pipe), or
            // when the batch is large.
            if input.buffer().is_empty() || data.len() as u64 >= MAX_LINE {
                break;
            }
        }
        if data.is_empty() || stop.load(Ordering::Relaxed) {
            break;
        }
        let (done, wait) = oneshot::channel();
        let mut batch = RawBatch::one(
            name.clone(),
            cfg.cluster.clone(),
            data,
            format!("stdin line {}", first + 1),
        );
        batch.done = Some(done);
        batch.request_received = cfg.request_received;
        if tx.blocking_send(Work::Batch(batch)).is_err() || wait.blocking_recv().is_err() {
            break;
        }
    }
    ready.set(&name, Ok(()));
}
