//! The `kaudit` command line: parses arguments, sets up logging, and calls
//! into the library. Errors that stop a command are printed as
//! `kaudit: <error>` and exit with status 2.

use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use std::sync::Arc;

use kaudit::decode::Limits;
use kaudit::detect::RuleSet;
use kaudit::finding::Severity;
use kaudit::output::Format;
use kaudit::scan::{ScanOptions, scan};

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
        /// Largest audit event accepted, in bytes; larger ones are quarantined.
        #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_event_bytes)]
        max_event_bytes: usize,
        #[command(flatten)]
        rules: RulesArg,
        /// Files, directories, or - for stdin.
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
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
}

#[derive(clap::Args)]
struct RulesArg {
    /// Rule files or directories of *.yaml files, loaded after the built-in
    /// catalogue: they add rules, replace built-ins by id, extend lists and
    /// disable or enable rules. Repeatable.
    #[arg(long = "rules", value_name = "PATH")]
    rule_paths: Vec<PathBuf>,
}

impl RulesArg {
    fn load(&self) -> anyhow::Result<Arc<RuleSet>> {
        RuleSet::load(&self.rule_paths)
            .map(Arc::new)
            .map_err(|e| anyhow::anyhow!("the rules have problems:\n{e}"))
    }
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
    init_logging(cli.log_format);
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
        Command::Check { rules } => {
            let set = rules.load()?;
            println!(
                "kaudit check: {} rules ({} enabled) compiled without problems",
                set.rules().len(),
                set.rules().iter().filter(|r| r.enabled).count()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Scan {
            format,
            fail_on,
            max_event_bytes,
            rules,
            paths,
        } => {
            if max_event_bytes == 0 {
                anyhow::bail!("--max-event-bytes must be greater than 0");
            }
            let limits = Limits {
                max_event_bytes,
                max_document_bytes: Limits::default().max_document_bytes.max(max_event_bytes),
            };
            let opts = ScanOptions {
                paths,
                format,
                limits,
                rules: rules.load()?,
            };
            let stdout = io::stdout();
            let mut out = io::BufWriter::new(stdout.lock());
            let mut err = io::stderr().lock();
            let summary = match scan(&opts, &mut out, &mut err) {
                Ok(s) => s,
                // A closed pipe (`kaudit scan | head`) is not an error.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
                Err(e) => return Err(e).context("cannot write findings"),
            };
            eprintln!("{}", summary.line());
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
            let set = rules.load()?;
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
            Ok(ExitCode::SUCCESS)
        }
        RulesCommand::Test { rules } => {
            let set = rules.load()?;
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

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KAUDIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
