//! Running one benchmark phase: a child process (kaudit itself, `jq`,
//! `wc`), optionally pinned to CPUs with `taskset -c LIST`, timed with
//! `Instant` around spawn and reap, and its peak resident set size.
//!
//! Peak RSS comes from GNU time (`/usr/bin/time -f %M`), which forks the
//! command and reads its `ru_maxrss` with `wait4`. Reading `ru_maxrss` of
//! our own child instead would not be exact: Linux carries the high-water
//! mark of the address space a process had when it called `execve` into
//! `ru_maxrss`, and a child spawned by `kaudit bench` (vfork and exec) had
//! kaudit bench's own, so every phase would report at least what the
//! benchmark process itself peaked at. GNU time is a small process, so its
//! child starts from almost nothing. Without GNU time, `/proc/PID/status`
//! `VmHWM` of the child is polled every 2 ms while it runs: unbiased but
//! approximate (growth in its last milliseconds can be missed), and the
//! report says so.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How a phase's child ended and what it cost.
#[derive(Debug, Clone)]
pub struct ChildRun {
    pub status: ExitStatus,
    /// Wall time from spawn to reap.
    pub seconds: f64,
    /// Peak resident set size, bytes.
    pub peak_rss: u64,
}

/// `name` found on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The tools a phase may run under.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    /// `taskset`, for pinning.
    pub taskset: Option<PathBuf>,
    /// GNU time (`-f %M -o FILE` works), for an exact peak RSS.
    pub gnu_time: Option<PathBuf>,
}

impl Tools {
    /// Finds taskset and a GNU time that accepts `-f` and `-o`.
    pub fn find(scratch: &Path) -> Tools {
        let gnu_time = which("time").filter(|t| {
            let out = scratch.join("time-probe.out");
            let ok = Command::new(t)
                .args(["-f", "%M", "-o"])
                .arg(&out)
                .arg("true")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
                && read_kib(&out).is_some();
            let _ = fs::remove_file(&out);
            ok
        });
        Tools {
            taskset: which("taskset"),
            gnu_time,
        }
    }
}

/// The number GNU time wrote (KiB), the last line of its output file
/// (earlier lines may say the command failed).
fn read_kib(path: &Path) -> Option<u64> {
    fs::read_to_string(path)
        .ok()?
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())?
        .trim()
        .parse()
        .ok()
}

/// A command to measure: program, arguments, where stdout and stderr go.
pub struct Phase<'a> {
    pub program: &'a Path,
    pub args: Vec<OsString>,
    /// A file for stdout; `None` is /dev/null.
    pub stdout: Option<&'a Path>,
    /// A file for stderr.
    pub stderr: &'a Path,
    /// `taskset -c` CPU list; `None` runs unpinned.
    pub cpus: Option<&'a str>,
}

impl Phase<'_> {
    /// The command line, as a person would type it (for the report).
    pub fn display(&self) -> String {
        let mut words = Vec::new();
        if let Some(cpus) = self.cpus {
            words.push(format!("taskset -c {cpus}"));
        }
        words.push(self.program.display().to_string());
        for a in &self.args {
            let a = a.to_string_lossy();
            if a.contains([' ', '"', '\'', '=', '(', '|', '$', '!']) {
                words.push(format!("'{}'", a.replace('\'', r"'\''")));
            } else {
                words.push(a.into_owned());
            }
        }
        match self.stdout {
            Some(p) => words.push(format!("> {}", p.display())),
            None => words.push("> /dev/null".to_owned()),
        }
        words.join(" ")
    }

    /// Runs the command to its end and measures it.
    pub fn run(&self, tools: &Tools) -> io::Result<ChildRun> {
        let rss_file = {
            let mut p = self.stderr.as_os_str().to_owned();
            p.push(".rss");
            PathBuf::from(p)
        };
        let mut words: Vec<OsString> = Vec::new();
        if let Some(time) = &tools.gnu_time {
            words.extend([
                time.clone().into_os_string(),
                "-f".into(),
                "%M".into(),
                "-o".into(),
                rss_file.clone().into_os_string(),
            ]);
        }
        if let (Some(cpus), Some(taskset)) = (self.cpus, &tools.taskset) {
            words.extend([taskset.clone().into_os_string(), "-c".into(), cpus.into()]);
        }
        words.push(self.program.as_os_str().to_owned());
        words.extend(self.args.iter().cloned());
        let mut cmd = Command::new(&words[0]);
        cmd.args(&words[1..])
            .stdin(Stdio::null())
            .stdout(match self.stdout {
                Some(p) => Stdio::from(File::create(p)?),
                None => Stdio::null(),
            })
            .stderr(Stdio::from(File::create(self.stderr)?));
        let start = Instant::now();
        let mut child = cmd.spawn()?;
        if tools.gnu_time.is_some() {
            let status = child.wait()?;
            let seconds = start.elapsed().as_secs_f64();
            let peak_rss = read_kib(&rss_file).unwrap_or(0) * 1024;
            let _ = fs::remove_file(&rss_file);
            return Ok(ChildRun {
                status,
                seconds,
                peak_rss,
            });
        }
        // No GNU time: poll the child's high-water mark while it runs.
        let peak = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let poller = {
            let (peak, done) = (peak.clone(), done.clone());
            let status = PathBuf::from(format!("/proc/{}/status", child.id()));
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    if let Some(kib) = vm_hwm(&status) {
                        peak.fetch_max(kib * 1024, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        let status = child.wait()?;
        let seconds = start.elapsed().as_secs_f64();
        done.store(true, Ordering::Relaxed);
        let _ = poller.join();
        Ok(ChildRun {
            status,
            seconds,
            peak_rss: peak.load(Ordering::Relaxed),
        })
    }
}

/// `VmHWM` (KiB) from a `/proc/PID/status` file.
fn vm_hwm(status: &Path) -> Option<u64> {
    let text = fs::read_to_string(status).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase_run(tools: &Tools) -> ChildRun {
        let sh = which("sh").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let err = dir.path().join("err");
        let phase = Phase {
            program: &sh,
            args: vec!["-c".into(), "echo hi; sleep 0.05; exit 3".into()],
            stdout: Some(&out),
            stderr: &err,
            cpus: None,
        };
        assert!(phase.display().contains("'echo hi; sleep 0.05; exit 3'"));
        let run = phase.run(tools).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "hi\n");
        run
    }

    #[test]
    fn a_child_is_timed_and_its_peak_rss_read() {
        let dir = tempfile::tempdir().unwrap();
        for tools in [
            Tools::find(dir.path()),
            // The /proc fallback.
            Tools::default(),
        ] {
            let run = phase_run(&tools);
            assert_eq!(run.status.code(), Some(3));
            assert!(run.seconds >= 0.05, "{}", run.seconds);
            // A shell: more than 100 KiB, far less than this test process.
            assert!(run.peak_rss > 100 * 1024, "{tools:?}: {}", run.peak_rss);
            assert!(run.peak_rss < 64 << 20, "{tools:?}: {}", run.peak_rss);
        }
    }

    #[test]
    fn gnu_time_output_with_a_failure_line_still_parses() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rss");
        std::fs::write(&p, "Command exited with non-zero status 2\n12345\n").unwrap();
        assert_eq!(read_kib(&p), Some(12345));
        std::fs::write(&p, "garbage\n").unwrap();
        assert_eq!(read_kib(&p), None);
    }
}
