//! End-to-end tests of the `kaudit` binary: real processes, real files,
//! stdin and exit codes, over the committed fixtures and the peer events in
//! ../shared/peers.

mod alerts;
mod bench;
mod bench_kafka;
mod daemon;
mod deploy;
mod docs;
mod evidence;
mod falco;
mod kafka;
mod rules;
mod scale;
mod scan;
mod token;
mod ui;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures() -> PathBuf {
    root().join("fixtures")
}

pub fn peers() -> PathBuf {
    root().join("../shared/peers")
}

/// Runs `kaudit ARGS` with `stdin` as standard input.
pub fn kaudit(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kaudit"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kaudit runs");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

pub fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

/// Findings printed as JSON lines.
pub fn findings(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The key=value pairs of the summary line.
pub fn summary(out: &Output) -> std::collections::BTreeMap<String, u64> {
    let err = stderr(out);
    let line = err
        .lines()
        .find(|l| l.starts_with("kaudit scan: "))
        .unwrap_or_else(|| panic!("no summary line in {err}"));
    line["kaudit scan: ".len()..]
        .split(' ')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect()
}
