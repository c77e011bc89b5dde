//! `kaudit bench corpus|run|kafka` at the CLI edge: arguments, where files go,
//! and what is printed. The work is in `crate::bench`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::bench::corpus::{self, Class, Level, Options};
use crate::bench::kafka::{self, KafkaOptions};
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
    /// Measure the daemon from Kafka to stored finding: produce the corpus
    /// to a fresh topic at a sustained rate while `kaudit run` consumes
    /// it; report the rate kept, the latency of each planted attack from
    /// producer to store (p50, p90, p99, max), recall and the daemon's
    /// peak RSS.
    Kafka(KafkaArgs),
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
    /// The audit level of the benign traffic: metadata (about 1 KB per
    /// event) or request-response (the same events, with request and
    /// response bodies of 5 to 20 KB on reads and writes).
    #[arg(long, value_enum, default_value_t = Level::Metadata)]
    pub level: Level,
}

impl CorpusOpts {
    fn options(&self) -> Options {
        Options {
            events: self.events,
            seed: self.seed,
            attack_every: self.attack_every,
            level: self.level,
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

#[derive(clap::Args, Debug)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (HOST:PORT[,HOST:PORT...]).
    #[arg(long, value_name = "HOST:PORT")]
    pub brokers: String,
    /// The topic (created when missing; must be empty). Default: a fresh
    /// one, kaudit-bench-PID-MILLIS.
    #[arg(long, value_name = "T")]
    pub topic: Option<String>,
    /// Events per second to produce.
    #[arg(long, value_name = "N", default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: u64,
    /// Events (lines) of the corpus, all produced.
    #[arg(long, value_name = "N", default_value_t = Options::default().events)]
    pub events: u64,
    /// Plant one attack in every K events: each one a latency sample.
    #[arg(long, value_name = "K", default_value_t = 1000)]
    pub attack_every: u64,
    /// The corpus seed.
    #[arg(long, value_name = "S", default_value_t = Options::default().seed)]
    pub seed: u64,
    /// Where the corpus (reused when present), the daemon's configuration,
    /// store and log go. Default: $TMPDIR/kaudit-bench.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Run the daemon under `taskset -c LIST` (`all`: unpinned).
    #[arg(long = "cpus", value_name = "LIST", default_value = "all", value_parser = parse_cpus)]
    pub cpus: String,
    /// How long after the last message the daemon may take to store the
    /// planted findings, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
    /// A librdkafka property for the daemon's consumer (its source's
    /// `properties`), to try a tuning; the report then says the settings
    /// are not the defaults. Repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_property)]
    pub consumer_property: Vec<(String, String)>,
    #[arg(long, value_enum, default_value_t = BenchFormat::Text)]
    pub format: BenchFormat,
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("{s:?}: write KEY=VALUE")),
    }
}

fn parse_cpus(s: &str) -> Result<String, String> {
    run::check_cpus(s).map(|()| s.to_owned())
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Corpus(a) => corpus_command(&a),
        BenchCommand::Run(a) => run_command(&a),
        BenchCommand::Kafka(a) => kafka_command(&a),
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

fn kafka_command(a: &KafkaArgs) -> anyhow::Result<()> {
    if a.events == 0 {
        bail!("--events must be greater than 0");
    }
    let opts = KafkaOptions {
        corpus: Options {
            events: a.events,
            seed: a.seed,
            attack_every: a.attack_every,
            level: Level::Metadata,
        },
        dir: a
            .dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("kaudit-bench")),
        brokers: a.brokers.clone(),
        topic: a.topic.clone(),
        rate: a.rate,
        cpus: a.cpus.clone(),
        kaudit: std::env::current_exe().context("cannot find the kaudit binary to run")?,
        timeout: std::time::Duration::from_secs(a.timeout),
        consumer_properties: a.consumer_property.clone(),
    };
    let report = kafka::run(&opts, &mut io::stderr())?;
    let mut out = io::stdout().lock();
    match a.format {
        BenchFormat::Json => writeln!(out, "{}", serde_json::to_string(&report)?)?,
        BenchFormat::Text => report.write_text(&mut out)?,
    }
    Ok(())
}
