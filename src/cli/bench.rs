//! `kaudit bench corpus|run` at the CLI edge: arguments, where files go,
//! and what is printed. The work is in `crate::bench`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::bench::corpus::{self, Class, Options};
use crate::bench::run::{self, RunOptions};

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Write the deterministic benchmark corpus: audit events of one
    /// cluster (kubelets, service-account tokens of controllers and
    /// operators, people with kubectl, health checks) with planted
    /// attacks, and the list of (auditID, rule id) each attack must fire.
    Corpus(CorpusArgs),
    /// Measure decode+detect, scan into the store, jq and wc on the
    /// corpus, on one CPU and on all, with peak RSS and the recall of the
    /// planted attacks.
    Run(RunArgs),
}

#[derive(clap::Args, Debug)]
pub struct CorpusOpts {
    /// Events (lines) to generate.
    #[arg(long, value_name = "N", default_value_t = Options::default().events)]
    pub events: u64,
    /// The seed: the same seed gives the same bytes.
    #[arg(long, value_name = "S", default_value_t = Options::default().seed)]
    pub seed: u64,
    /// Plant one attack in every K events (0: none).
    #[arg(long, value_name = "K", default_value_t = Options::default().attack_every)]
    pub attack_every: u64,
}

impl CorpusOpts {
    fn options(&self) -> Options {
        Options {
            events: self.events,
            seed: self.seed,
            attack_every: self.attack_every,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct CorpusArgs {
    #[command(flatten)]
    pub corpus: CorpusOpts,
    /// Where to write the events (JSON lines).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Where to write the planted attacks (TSV: audit_id, attack,
    /// rule_id), `-` for stdout. Default: FILE.planted.tsv.
    #[arg(long, value_name = "FILE")]
    pub planted: Option<PathBuf>,
}

/// Output of `bench run`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum BenchFormat {
    Text,
    /// One JSON object with every figure.
    Json,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub corpus: CorpusOpts,
    /// Where the corpus (reused when present), findings and the store go.
    /// Default: $TMPDIR/kaudit-bench.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Run every phase under `taskset -c LIST` (`all`: unpinned).
    /// Repeatable. Default: once on CPU 0, once on all CPUs.
    #[arg(long = "cpus", value_name = "LIST", value_parser = parse_cpus)]
    pub cpus: Vec<String>,
    /// Run each phase this many times and report the fastest run.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,
    #[arg(long, value_enum, default_value_t = BenchFormat::Text)]
    pub format: BenchFormat,
}

fn parse_cpus(s: &str) -> Result<String, String> {
    run::check_cpus(s).map(|()| s.to_owned())
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Corpus(a) => corpus_command(&a),
        BenchCommand::Run(a) => run_command(&a),
    }
}

fn corpus_command(a: &CorpusArgs) -> anyhow::Result<()> {
    let opts = a.corpus.options();
    if opts.events == 0 {
        bail!("--events must be greater than 0");
    }
    let start = Instant::now();
    let file =
        File::create(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    let summary = corpus::generate(&opts, BufWriter::with_capacity(1 << 20, file))
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    let secs = start.elapsed().as_secs_f64();
    let planted = match &a.planted {
        Some(p) if p.as_os_str() == "-" => None,
        Some(p) => Some(p.clone()),
        None => {
            let mut p = a.out.clone().into_os_string();
            p.push(".planted.tsv");
            Some(PathBuf::from(p))
        }
    };
    match &planted {
        Some(p) => {
            let f = File::create(p).with_context(|| format!("cannot create {}", p.display()))?;
            corpus::write_planted(BufWriter::new(f), &summary.planted)
                .with_context(|| format!("cannot write {}", p.display()))?;
        }
        None => corpus::write_planted(io::stdout().lock(), &summary.planted)?,
    }
    let mix: Vec<String> = Class::ALL
        .iter()
        .map(|c| {
            format!(
                "{}={:.2}%",
                c.name(),
                summary.lines_by_class[*c as usize] as f64 * 100.0 / summary.events.max(1) as f64
            )
        })
        .collect();
    eprintln!(
        "kaudit bench corpus: events={} bytes={} bytes_per_event={} attacks={} planted_pairs={} {} seconds={:.2}{}",
        summary.events,
        summary.bytes,
        summary.bytes / summary.events.max(1),
        summary.planted.len(),
        summary.planted_pairs(),
        mix.join(" "),
        secs,
        planted
            .map(|p| format!(" planted={}", p.display()))
            .unwrap_or_default()
    );
    Ok(())
}

fn run_command(a: &RunArgs) -> anyhow::Result<()> {
    let corpus = a.corpus.options();
    if corpus.events == 0 {
        bail!("--events must be greater than 0");
    }
    let opts = RunOptions {
        corpus,
        dir: a
            .dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("kaudit-bench")),
        cpus: if a.cpus.is_empty() {
            vec!["0".to_owned(), "all".to_owned()]
        } else {
            a.cpus.clone()
        },
        kaudit: std::env::current_exe().context("cannot find the kaudit binary to measure")?,
        repeat: a.repeat,
    };
    let report = run::run(&opts, &mut io::stderr())?;
    let mut out = io::stdout().lock();
    match a.format {
        BenchFormat::Json => writeln!(out, "{}", serde_json::to_string(&report)?)?,
        BenchFormat::Text => report.write_text(&mut out)?,
    }
    Ok(())
}
