//! `kaudit bench run`: the corpus (generated into the directory, or reused
//! when one of the same generator version, size, seed and attack rate is
//! there), then each phase in a child process per CPU set, and the recall
//! of the planted attacks from the decode+detect phase's own output.
//!
//! Phases, in this order on each CPU set (the file is read once first, so
//! that every phase reads it from the page cache):
//! - `wc -l FILE`: the cost of reading the bytes;
//! - `jq -c FILTER FILE`: an exec / attach / port-forward / impersonation
//!   filter, when jq is on PATH;
//! - `kaudit scan --format jsonl FILE`: decode+detect, no store; its
//!   findings go to a file in the directory (not /dev/null) because recall
//!   is read from this very run;
//! - `kaudit scan --db DIR/bench.db FILE`: into a fresh store, printed
//!   findings to /dev/null.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::Error;
use super::corpus::{self, GENERATOR_VERSION, Options};
use super::measure::{Phase, Tools, which};
use super::report::{CorpusInfo, CpuRun, Figures, Multiples, Recall, Report};

/// The jq program of the comparison: what a person would write to find
/// sessions into pods and impersonation in the same file.
pub const JQ_FILTER: &str = r#"select(.objectRef.subresource=="exec" or .objectRef.subresource=="attach" or .objectRef.subresource=="portforward" or .impersonatedUser!=null)"#;

/// What `kaudit bench run` measures.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub corpus: Options,
    /// Where the corpus, the findings and the store go.
    pub dir: PathBuf,
    /// CPU sets: `taskset -c` lists, or `all` for no pinning.
    pub cpus: Vec<String>,
    /// The kaudit binary to measure (normally this one).
    pub kaudit: PathBuf,
    /// Runs of each phase; the fastest counts.
    pub repeat: u32,
}

/// Checks a `--cpus` value: `all`, or a taskset list (`0`, `0,1`, `0-3`).
pub fn check_cpus(list: &str) -> Result<(), String> {
    let ok = list == "all"
        || (!list.is_empty()
            && list.split(',').all(|part| {
                let mut ends = part.splitn(2, '-');
                ends.all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            }));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--cpus {list:?}: write `all` or a CPU list as taskset takes it (0, 0,1, 0-3)"
        ))
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// The corpus file and its planted list in `dir` for these options.
pub fn corpus_paths(dir: &Path, o: &Options) -> (PathBuf, PathBuf) {
    let level = match o.level {
        corpus::Level::Metadata => "",
        corpus::Level::RequestResponse => "-rr",
    };
    let stem = format!(
        "corpus-v{GENERATOR_VERSION}-n{}-s{}-a{}{level}",
        o.events, o.seed, o.attack_every
    );
    (
        dir.join(format!("{stem}.jsonl")),
        dir.join(format!("{stem}.planted.tsv")),
    )
}

/// Writes the corpus to `out` and its planted list to `planted`, each
/// through a temporary file renamed into place, so that an interrupted run
/// leaves nothing that a later run would reuse.
pub fn write_corpus(o: &Options, out: &Path, planted: &Path) -> Result<corpus::Summary, Error> {
    let tmp = out.with_extension("jsonl.tmp");
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let summary =
        corpus::generate(o, BufWriter::with_capacity(1 << 20, file)).map_err(io_err(&tmp))?;
    let ptmp = planted.with_extension("tsv.tmp");
    let pfile = File::create(&ptmp).map_err(io_err(&ptmp))?;
    corpus::write_planted(BufWriter::new(pfile), &summary.planted).map_err(io_err(&ptmp))?;
    fs::rename(&ptmp, planted).map_err(io_err(planted))?;
    fs::rename(&tmp, out).map_err(io_err(out))?;
    Ok(summary)
}

/// The key=value counts of `kaudit scan`'s summary line in `stderr`.
fn scan_summary(stderr: &Path) -> Result<Vec<(String, u64)>, Error> {
    let text = fs::read_to_string(stderr).map_err(io_err(stderr))?;
    let line = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("kaudit scan: "))
        .ok_or_else(|| {
            Error::Failed(format!(
                "kaudit scan printed no summary line; its stderr:\n{}",
                tail(&text)
            ))
        })?;
    Ok(line
        .split(' ')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect())
}

fn count(summary: &[(String, u64)], key: &str) -> u64 {
    summary
        .iter()
        .find(|(k, _)| k == key)
        .map_or(0, |(_, v)| *v)
}

/// The last lines of a child's stderr, for an error message.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// (auditID, rule id) of every finding in a JSON-lines findings file.
pub fn found_pairs(findings: &Path) -> Result<HashSet<(String, String)>, Error> {
    let file = File::open(findings).map_err(io_err(findings))?;
    let mut pairs = HashSet::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io_err(findings))?;
        if line.is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| {
            Error::Failed(format!(
                "{}:{}: not a finding: {e}",
                findings.display(),
                i + 1
            ))
        })?;
        if let (Some(id), Some(rule)) = (v["audit_id"].as_str(), v["rule_id"].as_str()) {
            pairs.insert((id.to_owned(), rule.to_owned()));
        }
    }
    Ok(pairs)
}

/// Recall of the planted pairs in `planted` (TSV) among `found`.
pub fn recall(planted: &Path, found: &HashSet<(String, String)>) -> Result<Recall, Error> {
    let text = fs::read_to_string(planted).map_err(io_err(planted))?;
    let rows = corpus::read_planted(&text)
        .map_err(|e| Error::Failed(format!("{}: {e}", planted.display())))?;
    let hits = rows
        .iter()
        .filter(|(id, _, rule)| found.contains(&(id.clone(), rule.clone())))
        .count();
    Ok(Recall {
        found: hits as u64,
        planted: rows.len() as u64,
    })
}

/// Removes a SQLite store and its side files.
pub(crate) fn remove_store(db: &Path) -> Result<(), Error> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let p = PathBuf::from(p);
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&p)(e)),
        }
    }
    Ok(())
}

/// Runs every phase on every CPU set; progress lines go to `log`.
pub fn run(opts: &RunOptions, log: &mut dyn Write) -> Result<Report, Error> {
    let date = now_rfc3339();
    fs::create_dir_all(&opts.dir).map_err(io_err(&opts.dir))?;
    let (file, planted) = corpus_paths(&opts.dir, &opts.corpus);
    let mut notes = Vec::new();

    let reuse = file.is_file() && planted.is_file();
    let mut generate_seconds = None;
    if !reuse {
        let _ = writeln!(log, "kaudit bench: generating {}", file.display());
        let start = Instant::now();
        write_corpus(&opts.corpus, &file, &planted)?;
        generate_seconds = Some((start.elapsed().as_secs_f64() * 100.0).round() / 100.0);
    }
    let bytes = fs::metadata(&file).map_err(io_err(&file))?.len();
    let events = opts.corpus.events;
    let attacks = {
        let text = fs::read_to_string(&planted).map_err(io_err(&planted))?;
        let rows = corpus::read_planted(&text)
            .map_err(|e| Error::Failed(format!("{}: {e}", planted.display())))?;
        rows.iter().map(|r| &r.0).collect::<HashSet<_>>().len() as u64
    };

    // Read the file once, so that every phase finds it in the page cache.
    let mut f = File::open(&file).map_err(io_err(&file))?;
    io::copy(&mut f, &mut io::sink()).map_err(io_err(&file))?;

    let tools = Tools::find(&opts.dir);
    let jq = which("jq");
    let wc = which("wc");
    if tools.taskset.is_none() && opts.cpus.iter().any(|c| c != "all") {
        notes.push("taskset: not installed; every phase ran unpinned".to_owned());
    }
    if tools.gnu_time.is_none() {
        notes.push(
            "GNU time: not installed; peak RSS polled from /proc/PID/status VmHWM every 2 ms (approximate)"
                .to_owned(),
        );
    }
    if jq.is_none() {
        notes.push("jq: not installed".to_owned());
    }
    if wc.is_none() {
        notes.push("wc: not installed".to_owned());
    }

    let mut runs = Vec::new();
    for cpus in &opts.cpus {
        let pin = (cpus != "all").then_some(cpus.as_str());
        let pinned = pin.is_some() && tools.taskset.is_some();
        let tag = cpus.replace(',', "_");
        let err = opts.dir.join(format!("phase-cpus-{tag}.err"));
        // Best of `repeat` runs: the fastest wall time (the least
        // disturbed by whatever else the machine does), the highest peak.
        let mut measure = |phase: &Phase<'_>,
                           what: &str,
                           fresh_db: Option<&Path>|
         -> Result<(String, f64, u64), Error> {
            let (mut best, mut peak) = (f64::INFINITY, 0);
            for i in 0..opts.repeat.max(1) {
                let _ = writeln!(
                    log,
                    "kaudit bench: cpus {cpus}: {what}{}",
                    if opts.repeat > 1 {
                        format!(" ({}/{})", i + 1, opts.repeat)
                    } else {
                        String::new()
                    }
                );
                if let Some(db) = fresh_db {
                    remove_store(db)?;
                }
                let r = phase.run(&tools).map_err(|e| Error::Spawn {
                    program: phase.program.display().to_string(),
                    source: e,
                })?;
                if !r.status.success() {
                    let text = fs::read_to_string(phase.stderr).unwrap_or_default();
                    return Err(Error::Failed(format!(
                        "{what}: `{}` ended with {}: {}",
                        phase.display(),
                        r.status,
                        tail(&text)
                    )));
                }
                best = best.min(r.seconds);
                peak = peak.max(r.peak_rss);
            }
            Ok((phase.display(), best, peak))
        };
        let file_arg: OsString = file.clone().into_os_string();

        let wc_fig = match &wc {
            Some(wc) => {
                let out = opts.dir.join("wc.out");
                let (cmd, secs, rss) = measure(
                    &Phase {
                        program: wc,
                        args: vec!["-l".into(), file_arg.clone()],
                        stdout: Some(&out),
                        stderr: &err,
                        cpus: pin,
                    },
                    "wc -l",
                    None,
                )?;
                Some(Figures::new(cmd, events, bytes, secs, rss))
            }
            None => None,
        };
        let jq_fig = match &jq {
            Some(jq) => {
                let (cmd, secs, rss) = measure(
                    &Phase {
                        program: jq,
                        args: vec!["-c".into(), JQ_FILTER.into(), file_arg.clone()],
                        stdout: None,
                        stderr: &err,
                        cpus: pin,
                    },
                    "jq",
                    None,
                )?;
                Some(Figures::new(cmd, events, bytes, secs, rss))
            }
            None => None,
        };

        let findings = opts.dir.join(format!("findings-cpus-{tag}.jsonl"));
        let (cmd, secs, rss) = measure(
            &Phase {
                program: &opts.kaudit,
                args: vec![
                    "scan".into(),
                    "--format".into(),
                    "jsonl".into(),
                    file_arg.clone(),
                ],
                stdout: Some(&findings),
                stderr: &err,
                cpus: pin,
            },
            "decode+detect (kaudit scan)",
            None,
        )?;
        let summary = scan_summary(&err)?;
        let scanned = count(&summary, "events");
        let scan = Figures::new(cmd, scanned, bytes, secs, rss);
        let found = found_pairs(&findings)?;
        let recall = recall(&planted, &found)?;
        let findings_total = count(&summary, "findings");

        let db = opts.dir.join("bench.db");
        let (cmd, secs, rss) = measure(
            &Phase {
                program: &opts.kaudit,
                args: vec!["scan".into(), "--db".into(), db.clone().into(), file_arg],
                stdout: None,
                stderr: &err,
                cpus: pin,
            },
            "scan into the store (kaudit scan --db)",
            Some(&db),
        )?;
        let summary = scan_summary(&err)?;
        let scan_db = Figures::new(cmd, count(&summary, "events"), bytes, secs, rss);
        let stored = count(&summary, "findings");
        remove_store(&db)?;

        let multiple = |other: &Option<Figures>| {
            other
                .as_ref()
                .filter(|o| o.events_per_s > 0.0)
                .map(|o| significant(scan.events_per_s / o.events_per_s, 3))
        };
        runs.push(CpuRun {
            cpus: cpus.clone(),
            pinned,
            multiples: Multiples {
                jq: multiple(&jq_fig),
                wc: multiple(&wc_fig),
            },
            scan,
            scan_db,
            jq: jq_fig,
            wc: wc_fig,
            recall,
            findings: findings_total,
            findings_stored: stored,
        });
    }

    Ok(Report {
        date,
        cpus_online: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kaudit_version: env!("CARGO_PKG_VERSION"),
        release_build: !cfg!(debug_assertions),
        repeat: opts.repeat.max(1),
        corpus: CorpusInfo {
            path: file.display().to_string(),
            events,
            bytes,
            bytes_per_event: bytes / events.max(1),
            seed: opts.corpus.seed,
            attack_every: opts.corpus.attack_every,
            level: opts.corpus.level.as_str(),
            attacks_planted: attacks,
            generated: !reuse,
            generate_seconds,
        },
        runs,
        notes,
    })
}

/// `x` rounded to `digits` significant digits.
fn significant(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(digits - 1 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// Now, in RFC 3339 (UTC, whole seconds).
pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiples_keep_three_significant_digits() {
        assert_eq!(significant(0.0034567, 3), 0.00346);
        assert_eq!(significant(27.345, 3), 27.3);
        assert_eq!(significant(0.0, 3), 0.0);
    }

    #[test]
    fn cpu_lists_are_checked() {
        for ok in ["all", "0", "0,1", "0-3", "0,2-3"] {
            assert!(check_cpus(ok).is_ok(), "{ok}");
        }
        for bad in ["", "x", "0,", "-1", "0-", "1;rm"] {
            assert!(check_cpus(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn corpus_paths_name_every_parameter() {
        let (f, p) = corpus_paths(
            Path::new("/d"),
            &Options {
                events: 5,
                seed: 6,
                attack_every: 7,
                ..Options::default()
            },
        );
        assert_eq!(
            f,
            PathBuf::from(format!("/d/corpus-v{GENERATOR_VERSION}-n5-s6-a7.jsonl"))
        );
        assert_eq!(
            p,
            PathBuf::from(format!(
                "/d/corpus-v{GENERATOR_VERSION}-n5-s6-a7.planted.tsv"
            ))
        );
    }
}
