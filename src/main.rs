//! The `kaudit` command line: parses arguments, sets up logging, and calls
//! into the library. Errors that stop a command are printed as
//! `kaudit: <error>` and exit with status 2.

use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use std::sync::Arc;

use kaudit::cli::evidence::{self, FilterArgs};
use kaudit::config::Config;
use kaudit::decode::Limits;
use kaudit::detect::RuleSet;
use kaudit::detect::token::TokenDetector;
use kaudit::finding::Severity;
use kaudit::output::Format;
use kaudit::scan::{ScanError, ScanOptions, scan};

#[derive(Parser)]
#[command(
    name = "kaudit",
    version,
    about = "Security detector for Kubernetes API-server audit logs"
)]
struct Cli {
    /// Log format for kaudit's own diagnostics (on stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Scan audit logs offline and print findings.
    ///
    /// Reads files, directories (recursively: files named *.json, *.jsonl,
    /// *.ndjson, *.log, *.txt, optionally rotated (.1) and/or gzip'd (.gz)),
    /// gzip files and stdin ("-", the default) in any supported envelope:
    /// audit Event, EventList, JSON array, JSON lines, EKS CloudWatch and
    /// Firehose, GKE LogEntry and Pub/Sub push, AKS records, Vector and
    /// Fluent Bit wrappers. Problems with the input are reported on stderr,
    /// one line each, and the scan goes on; a summary line ends it.
    Scan {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Exit with status 1 when a finding at or above this severity exists.
        #[arg(long, value_name = "SEVERITY", value_parser = parse_severity)]
        fail_on: Option<Severity>,
        /// Evaluate RequestReceived events: for logs whose audit policy omits
        /// the later stages (otherwise rules wait for the stage that carries
        /// the outcome).
        #[arg(long)]
        request_received: bool,
        /// Largest audit event accepted, in bytes; larger ones are quarantined.
        #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_event_bytes)]
        max_event_bytes: usize,
        #[command(flatten)]
        rules: RulesArg,
        /// Store findings in this SQLite file (created if missing); only
        /// findings not stored before are printed.
        #[arg(long, value_name = "FILE")]
        db: Option<PathBuf>,
        /// With --db: at the end, sign the chain head with this Ed25519 key
        /// and append the checkpoint to --checkpoint-file.
        #[arg(long, value_name = "FILE", requires_all = ["db", "checkpoint_file"])]
        sign_key: Option<PathBuf>,
        /// Where signed checkpoints are appended (keep it on another volume).
        #[arg(long, value_name = "FILE", requires = "sign_key")]
        checkpoint_file: Option<PathBuf>,
        /// Files, directories, or - for stdin.
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Query the findings store.
    Findings {
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
        #[command(flatten)]
        filters: FilterArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// At most this many findings.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Write a signed evidence bundle of the findings that match.
    Export {
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
        /// The bundle directory (created; must be empty).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        filters: FilterArgs,
        /// Formats, comma-separated: jsonl, csv, ocsf (default: all).
        #[arg(long = "format", value_name = "LIST", value_delimiter = ',')]
        formats: Vec<kaudit::export::Format>,
        /// Ed25519 private key (PEM, from kaudit keygen) that signs the manifest.
        #[arg(long, value_name = "FILE")]
        sign_key: Option<PathBuf>,
        /// Also pack the bundle into DIR.tar.gz.
        #[arg(long)]
        tar: bool,
    },
    /// Verify the findings database's hash chain (--db), or an evidence
    /// bundle (a directory or .tar.gz). Exit 1 when anything is wrong.
    Verify {
        /// The findings database whose chain to walk.
        #[arg(long, value_name = "FILE", conflicts_with = "bundle")]
        db: Option<PathBuf>,
        /// Signed chain checkpoints (JSON lines from kaudit checkpoint) the
        /// database must still agree with; needs --public-key.
        #[arg(long, value_name = "FILE", requires = "db")]
        checkpoints: Option<PathBuf>,
        /// The public key (PEM) that must have signed the bundle or checkpoints.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        /// A bundle directory or .tar.gz.
        #[arg(value_name = "BUNDLE")]
        bundle: Option<PathBuf>,
    },
    /// Generate an Ed25519 key pair: FILE (PKCS#8 PEM, mode 0600) and
    /// FILE.pub (SPKI PEM), usable by openssl too.
    Keygen {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Delete findings older than a cutoff; the chain stays verifiable from
    /// an anchor recording the last pruned row and its hash.
    Prune {
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
        /// RFC 3339, a date, or a duration back from now (400d).
        #[arg(long, value_name = "T")]
        older_than: String,
        /// The private key (PEM) that signs the prune record authorising
        /// the new anchor.
        #[arg(long, value_name = "FILE")]
        sign_key: PathBuf,
        /// The checkpoint file the signed prune record is appended to (the
        /// one `verify --checkpoints` reads).
        #[arg(long, value_name = "FILE")]
        checkpoint_file: PathBuf,
    },
    /// Sign the chain head, store the checkpoint, and append it to a file
    /// kept outside kaudit's reach (another volume, a WORM bucket mount).
    Checkpoint {
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
        #[arg(long, value_name = "FILE")]
        sign_key: PathBuf,
        /// Append the signed checkpoint (one JSON line) to this file.
        #[arg(long, value_name = "FILE")]
        append: Option<PathBuf>,
    },
    /// Work with the rule catalogue.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Validate rule files without running anything; every problem is
    /// printed with its file and line, and the exit status is 2 if any.
    Check {
        #[command(flatten)]
        rules: RulesArg,
    },
    /// Hold back alerts of findings like these until a time: add, list,
    /// expire. Silenced findings are still stored, and marked.
    Silence {
        #[command(subcommand)]
        command: SilenceCommand,
    },
    /// Run the daemon: read the configured sources continuously, store
    /// findings, serve /healthz, /readyz and /metrics. SIGTERM drains and
    /// stops; SIGHUP reloads the rules.
    Run {
        /// The configuration file (YAML): storage, sources, server, detection.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// More rule files or directories (after the config's).
        #[arg(long = "rules", value_name = "PATH")]
        rule_paths: Vec<PathBuf>,
    },
    /// Benchmark: generate the deterministic audit corpus, measure
    /// throughput, peak memory and the recall of planted attacks.
    Bench {
        #[command(subcommand)]
        command: kaudit::cli::bench::BenchCommand,
    },
}

#[derive(clap::Args)]
struct RulesArg {
    /// Rule files or directories of *.yaml files, loaded after the built-in
    /// catalogue: they add rules, replace built-ins by id, extend lists and
    /// disable or enable rules. Repeatable.
    #[arg(long = "rules", value_name = "PATH")]
    rule_paths: Vec<PathBuf>,
    /// The configuration file (YAML): default cluster, per-cluster networks
    /// and trust for the token detectors, rule paths, rules turned off.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl RulesArg {
    /// The configuration (defaults without --config).
    fn config(&self) -> anyhow::Result<Config> {
        match &self.config {
            Some(path) => Ok(Config::load(path)?),
            None => Ok(Config::default()),
        }
    }

    /// The rules: built-in, then the config's `detection.rules`, then
    /// --rules, then the config's `detection.disable`.
    fn load(&self, cfg: &Config) -> anyhow::Result<Arc<RuleSet>> {
        cfg.rules(self.config.as_deref(), &self.rule_paths)
            .map(Arc::new)
            .map_err(|e| anyhow::anyhow!("the rules have problems:\n{e}"))
    }
}

#[derive(Subcommand)]
enum SilenceCommand {
    /// Add a silence (at least one matcher, an expiry and a comment).
    Add(Box<kaudit::cli::silence::AddArgs>),
    /// List active silences (--all: ended ones too).
    List {
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
        #[arg(long)]
        all: bool,
    },
    /// End a silence now.
    Expire {
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
        /// The silence's id (from add or list).
        id: i64,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Print the catalogue: id, severity, category, title and the rules of
    /// other tools each one replaces.
    List {
        #[command(flatten)]
        rules: RulesArg,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Run every rule's inline tests.
    Test {
        #[command(flatten)]
        rules: RulesArg,
    },
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    s.parse()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = if matches!(cli.command, Command::Run { .. }) {
        "info"
    } else {
        "warn"
    };
    init_logging(cli.log_format, level);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kaudit: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Rules { command } => rules_command(command),
        Command::Silence { command } => {
            match command {
                SilenceCommand::Add(a) => kaudit::cli::silence::add(&a)?,
                SilenceCommand::List { db, all } => kaudit::cli::silence::list(&db, all)?,
                SilenceCommand::Expire { db, id } => kaudit::cli::silence::expire(&db, id)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { command } => {
            kaudit::cli::bench::run(command)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config, rule_paths } => {
            kaudit::daemon::run(&config, &rule_paths)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { rules } => {
            let cfg = rules.config()?;
            let set = rules.load(&cfg)?;
            TokenDetector::new(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
            let token_on = kaudit::detect::token::RULES
                .iter()
                .filter(|r| !cfg.detection.disable.contains(&r.meta.id))
                .count();
            println!(
                "kaudit check: {} rules ({} enabled) and {} token detectors ({} enabled) compiled without problems",
                set.rules().len(),
                set.rules().iter().filter(|r| r.enabled).count(),
                kaudit::detect::token::RULES.len(),
                token_on
            );
            if let Some(path) = &rules.config {
                // Sources: TLS files, secrets and Kafka settings, without
                // connecting anywhere.
                let mut problems = Vec::new();
                for (i, s) in cfg.sources.iter().enumerate() {
                    let name = s.name(i);
                    let r = match s {
                        kaudit::config::SourceConfig::Webhook(w) => {
                            kaudit::source::webhook::check(&name, w)
                        }
                        kaudit::config::SourceConfig::Kafka(k) => {
                            kaudit::source::kafka::client_config(&name, k).map(|_| ())
                        }
                        kaudit::config::SourceConfig::File(f) => f
                            .patterns()
                            .iter()
                            .try_for_each(|p| glob::Pattern::new(p).map(|_| ()))
                            .map_err(|e| format!("source {name}: bad path pattern: {e}")),
                        kaudit::config::SourceConfig::Stdin(_) => Ok(()),
                    };
                    if let Err(e) = r {
                        problems.push(format!("{}: {e}", path.display()));
                    }
                }
                if let Err(e) = kaudit::alert::check(&cfg.alerts) {
                    problems.push(format!("{}: {e}", path.display()));
                }
                // The store's location (its secret read, not connected to).
                if let Some(storage) = &cfg.storage
                    && let Err(e) = storage.location()
                {
                    problems.push(format!("{}: {e}", path.display()));
                }
                if !problems.is_empty() {
                    anyhow::bail!("{}", problems.join("\n"));
                }
                println!(
                    "kaudit check: {}: {} cluster(s) configured, {} source(s)",
                    path.display(),
                    cfg.detection.clusters.len(),
                    cfg.sources.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Findings {
            db,
            filters,
            format,
            limit,
        } => {
            evidence::findings(&db, &filters, format, limit)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            db,
            out,
            filters,
            formats,
            sign_key,
            tar,
        } => {
            evidence::export(&db, &out, &filters, &formats, sign_key.as_deref(), tar)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            db,
            checkpoints,
            public_key,
            bundle,
        } => {
            let ok = evidence::verify(
                db.as_deref(),
                bundle.as_deref(),
                public_key.as_deref(),
                checkpoints.as_deref(),
            )?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Keygen { out } => {
            evidence::keygen(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Prune {
            db,
            older_than,
            sign_key,
            checkpoint_file,
        } => {
            evidence::prune(&db, &older_than, &sign_key, &checkpoint_file)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Checkpoint {
            db,
            sign_key,
            append,
        } => {
            evidence::checkpoint(&db, &sign_key, append.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Scan {
            format,
            fail_on,
            request_received,
            max_event_bytes,
            rules,
            db,
            sign_key,
            checkpoint_file,
            paths,
        } => {
            if max_event_bytes == 0 {
                anyhow::bail!("--max-event-bytes must be greater than 0");
            }
            let limits = Limits {
                max_event_bytes,
                max_document_bytes: Limits::default().max_document_bytes.max(max_event_bytes),
            };
            let config = rules.config()?;
            let opts = ScanOptions {
                paths,
                format,
                limits,
                rules: rules.load(&config)?,
                db: db.clone(),
                config,
                request_received,
            };
            let stdout = io::stdout();
            let mut out = io::BufWriter::new(stdout.lock());
            let mut err = io::stderr().lock();
            let summary = match scan(&opts, &mut out, &mut err) {
                Ok(s) => s,
                // A closed pipe (`kaudit scan | head`) is not an error.
                Err(ScanError::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
                    return Ok(ExitCode::SUCCESS);
                }
                Err(e) => return Err(e).context("the scan stopped"),
            };
            eprintln!("{}", summary.line());
            if let (Some(db), Some(key), Some(file)) = (&db, &sign_key, &checkpoint_file) {
                evidence::sign_and_append(db, key, file)?;
            }
            if summary.unreadable > 0 {
                return Ok(ExitCode::from(2));
            }
            if fail_on.is_some_and(|min| summary.max_severity.is_some_and(|s| s >= min)) {
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn rules_command(command: RulesCommand) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let mut out = io::stdout().lock();
    match command {
        RulesCommand::List { rules, format } => {
            let cfg = rules.config()?;
            let set = rules.load(&cfg)?;
            for r in set.rules() {
                let refs: Vec<String> = r
                    .meta
                    .references
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect();
                match format {
                    Format::Jsonl => {
                        let v = serde_json::json!({
                            "id": r.meta.id, "title": r.meta.title, "severity": r.meta.severity,
                            "category": r.meta.category, "mitre": r.meta.mitre,
                            "references": r.meta.references, "enabled": r.enabled,
                            "description": r.description, "file": r.file,
                        });
                        writeln!(out, "{v}")?;
                    }
                    Format::Text => writeln!(
                        out,
                        "{:<40} {:<8} {:<13} {}{}{}",
                        r.meta.id,
                        r.meta.severity,
                        r.meta.category,
                        r.meta.title,
                        if r.enabled { "" } else { " [disabled]" },
                        if refs.is_empty() {
                            String::new()
                        } else {
                            format!("  ({})", refs.join("; "))
                        }
                    )?,
                }
            }
            // The stateful detectors, in code rather than YAML.
            for r in kaudit::detect::token::RULES.iter() {
                let enabled = !cfg.detection.disable.contains(&r.meta.id);
                match format {
                    Format::Jsonl => {
                        let v = serde_json::json!({
                            "id": r.meta.id, "title": r.meta.title, "severity": r.meta.severity,
                            "category": r.meta.category, "mitre": r.meta.mitre,
                            "references": r.meta.references, "enabled": enabled,
                            "description": r.description, "file": "stateful (src/detect/token)",
                            "supersedes": r.supersedes,
                        });
                        writeln!(out, "{v}")?;
                    }
                    Format::Text => writeln!(
                        out,
                        "{:<40} {:<8} {:<13} {} [stateful]{}",
                        r.meta.id,
                        r.meta.severity,
                        r.meta.category,
                        r.meta.title,
                        if enabled { "" } else { " [disabled]" },
                    )?,
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        RulesCommand::Test { rules } => {
            let set = rules.load(&rules.config()?)?;
            let outcomes = set.run_tests();
            let mut failed = 0;
            for o in &outcomes {
                if let Some(why) = &o.failure {
                    failed += 1;
                    writeln!(
                        out,
                        "FAIL {} ({}:{}) {}: {why}",
                        o.rule.meta.id, o.rule.file, o.rule.line, o.label
                    )?;
                }
            }
            let untested: Vec<&str> = set
                .rules()
                .iter()
                .filter(|r| r.tests.is_empty())
                .map(|r| r.meta.id.as_str())
                .collect();
            writeln!(
                out,
                "kaudit rules test: {} passed, {} failed ({} rules, {} without tests{})",
                outcomes.len() - failed,
                failed,
                set.rules().len(),
                untested.len(),
                if untested.is_empty() {
                    String::new()
                } else {
                    format!(": {}", untested.join(", "))
                }
            )?;
            Ok(if failed > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// Logs go to stderr; `KAUDIT_LOG` (e.g. `debug`, `kaudit=trace`) sets the
/// level, by default `info` for the daemon and `warn` for the commands.
fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KAUDIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
