//! `kaudit run`: the daemon. It wires the configured sources to the
//! pipeline thread (`engine`) over one bounded channel, serves the
//! operations endpoints, and handles signals:
//!
//! - SIGTERM / SIGINT: sources stop taking input, the pipeline drains what
//!   was sent, commits, and the process exits 0;
//! - SIGHUP: the configuration file (and the rule files it names) is read
//!   and checked again; when usable, rules, detector settings (networks,
//!   identities, limits), alert sinks and routing, the default cluster and
//!   the stream settings are replaced between two batches: no event is
//!   lost, detector state is kept, alerts already queued stay queued.
//!   Sources that were added, removed or changed (their settings, or the
//!   certificates and secrets they read) are started, stopped or restarted
//!   from their committed positions ([`sources`]). A change to `server` or
//!   `storage` is reported and takes effect at the next restart.
//!
//! When every source has ended on its own (stdin at its end), the daemon
//! stops too.

pub mod engine;
pub mod silence;
pub mod sources;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, watch};

use crate::config::{Config, SourceConfig};
use crate::detect::Detector;
use crate::detect::token::TokenDetector;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::source::{Readiness, Work};
use crate::store::Store;

/// Batches waiting for the pipeline at most.
const QUEUE: usize = 64;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Invalid(String),
    #[error("the rules have problems:\n{0}")]
    Rules(#[from] crate::detect::LoadError),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("cannot start: {0}")]
    Io(#[from] std::io::Error),
}

/// What starts alert delivery threads.
struct Delivery {
    db: PathBuf,
    metrics: Arc<Metrics>,
    alive: Arc<std::sync::atomic::AtomicI64>,
}

impl Delivery {
    /// One thread per sink of `config`, until `stop`.
    fn start(
        &self,
        config: &Config,
        stop: Arc<AtomicBool>,
    ) -> Result<Vec<std::thread::JoinHandle<()>>, String> {
        if config.alerts.sinks.is_empty() {
            return Ok(Vec::new());
        }
        crate::alert::Deliverer::new(&self.db, &config.alerts, self.metrics.clone(), stop)?
            .with_cluster(config.cluster.as_deref())
            .with_alive(self.alive.clone())
            .spawn()
    }
}

/// Takes SIGHUPs: checks the configuration file again and, when it is
/// usable, restarts alert delivery with it and hands the rest to the
/// pipeline thread. Owns the delivery threads (returned at the end).
struct Reloader {
    path: PathBuf,
    extra_rules: Vec<PathBuf>,
    running: Arc<Config>,
    tx: crate::source::Tx,
    sources: Arc<std::sync::Mutex<sources::Sources>>,
    delivery: Delivery,
    delivery_stop: Arc<AtomicBool>,
    deliverers: Vec<std::thread::JoinHandle<()>>,
}

impl Reloader {
    fn run(
        mut self,
        hups: &std::sync::mpsc::Receiver<()>,
    ) -> (Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>) {
        while hups.recv().is_ok() {
            let outcome = match self.reload() {
                Ok(()) => "ok",
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: the configuration is not usable; the running one stays");
                    "failed"
                }
            };
            self.delivery
                .metrics
                .reloads
                .get_or_create(&crate::metrics::Outcome {
                    outcome: outcome.into(),
                })
                .inc();
        }
        (self.delivery_stop, self.deliverers)
    }

    fn reload(&mut self) -> Result<(), DaemonError> {
        let reload = prepare_reload(&self.path, &self.extra_rules, &self.running)?;
        // The old delivery threads finish or give back what they hold; the
        // new ones' claims keep an alert from going out twice meanwhile.
        let fresh = Arc::new(AtomicBool::new(false));
        let handles = self
            .delivery
            .start(&reload.config, fresh.clone())
            .map_err(|e| DaemonError::Invalid(format!("alert delivery: {e}")))?;
        self.delivery_stop.store(true, Ordering::Relaxed);
        self.delivery_stop = fresh;
        self.deliverers.retain(|h| !h.is_finished());
        self.deliverers.extend(handles);
        // Sources whose configuration (or certificate, or secret) changed
        // are restarted; the others run on untouched.
        let touched = match self.sources.lock() {
            Ok(mut s) => s.reload(&reload.config),
            Err(_) => Err("the sources are unavailable".to_owned()),
        };
        if let Ok(lines) = &touched {
            for l in lines {
                tracing::info!(source = %l, "SIGHUP: source reloaded");
            }
        }
        self.running = reload.config.clone();
        // Between two batches of the pipeline thread.
        self.tx
            .blocking_send(Work::Reload(Box::new(reload)))
            .map_err(|_| DaemonError::Invalid("the pipeline has stopped".into()))?;
        // The rest of the configuration is in use; the source that could not
        // start stays down until a reload starts it (/readyz says why).
        touched.map(|_| ()).map_err(|e| {
            DaemonError::Invalid(format!(
                "a source could not start and stays down until a reload starts it: {e}"
            ))
        })
    }
}

/// Reads and checks the configuration again for a reload, as at start
/// (rules, detector settings, alert sinks, sources); what cannot change
/// without a restart (the server, the store) is reported.
fn prepare_reload(
    path: &Path,
    extra_rules: &[PathBuf],
    running: &Config,
) -> Result<crate::source::Reload, DaemonError> {
    let config = Config::load(path)?;
    if config.sources.is_empty() {
        return Err(DaemonError::Invalid(format!(
            "{}: kaudit run needs at least one source under `sources`",
            path.display()
        )));
    }
    let rules = config.rules(Some(path), extra_rules)?;
    TokenDetector::new(&config).map_err(DaemonError::Invalid)?;
    if !config.alerts.sinks.is_empty() {
        crate::alert::Notifier::new(&config.alerts).map_err(DaemonError::Invalid)?;
    }
    for (i, s) in config.sources.iter().enumerate() {
        match s {
            SourceConfig::Webhook(w) => {
                crate::source::webhook::check(&s.name(i), w).map_err(DaemonError::Invalid)?;
            }
            SourceConfig::Kafka(k) => {
                crate::source::kafka::client_config(&s.name(i), k).map_err(DaemonError::Invalid)?;
            }
            SourceConfig::File(_) | SourceConfig::Stdin(_) => {}
        }
    }
    for (section, changed) in [
        (
            "server",
            format!("{:?}", config.server) != format!("{:?}", running.server),
        ),
        (
            "storage",
            format!("{:?}", config.storage) != format!("{:?}", running.storage),
        ),
    ] {
        if changed {
            tracing::warn!(
                section,
                "SIGHUP: this section changed; it takes effect at the next restart (the running one stays)"
            );
        }
    }
    // The sections a reload cannot change stay as they run.
    let config = Config {
        server: running.server.clone(),
        storage: running.storage.clone(),
        ..config
    };
    Ok(crate::source::Reload {
        config: Arc::new(config),
        rules: Arc::new(rules),
    })
}

/// Whether the store at `location` is shared by several instances.
fn store_is_shared(location: &Path) -> bool {
    location.to_str().is_some_and(crate::store::is_postgres_url)
}

/// This instance's name among several: `KAUDIT_INSTANCE`, else the host
/// name and the operations listener (unique per host and per pod).
fn instance_name(listen: Option<std::net::SocketAddr>) -> String {
    if let Ok(n) = std::env::var("KAUDIT_INSTANCE")
        && !n.trim().is_empty()
    {
        return n.trim().to_owned();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    match listen {
        Some(l) => format!("{host}:{}", l.port()),
        None => host,
    }
}

/// Runs the daemon until it is told to stop.
///
/// # Errors
/// When the configuration, rules or store are unusable, or a listener
/// cannot be bound.
pub fn run(config_path: &Path, extra_rules: &[PathBuf]) -> Result<(), DaemonError> {
    let config = Arc::new(Config::load(config_path)?);
    let storage = config.storage.as_ref().ok_or_else(|| {
        DaemonError::Invalid(format!(
            "{}: kaudit run needs storage.path (a SQLite file) or storage.postgres (a shared database)",
            config_path.display()
        ))
    })?;
    if config.sources.is_empty() {
        return Err(DaemonError::Invalid(format!(
            "{}: kaudit run needs at least one source under `sources`",
            config_path.display()
        )));
    }
    let rules = Arc::new(config.rules(Some(config_path), extra_rules)?);
    let token = TokenDetector::new(&config).map_err(DaemonError::Invalid)?;
    let location = storage
        .location()
        .map_err(|e| DaemonError::Invalid(format!("{}: {e}", config_path.display())))?;
    let store = Store::open(&location)?;
    // Each source resumes from its committed positions.
    let mut positions = Vec::new();
    for (i, s) in config.sources.iter().enumerate() {
        positions.push(store.source_checkpoints(&s.name(i))?);
    }
    let (mut pipeline, warning) = Pipeline::new(Detector::with_token(rules, token), Some(store))?;
    if !config.alerts.sinks.is_empty() {
        pipeline.set_alerts(Some(Arc::new(config.alerts.clone())));
    }
    // Detector state commits with every batch, in the same transaction as
    // the source's checkpoint (DESIGN, principle 1).
    pipeline.set_state_every(std::time::Duration::ZERO);
    // A batch redelivered (the API server retrying a webhook POST whose
    // answer timed out) is neither counted twice nor checked again.
    pipeline.drop_redeliveries(1 << 16);
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("kaudit-io")
        .build()?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(engine::StoreHealth::default());
    let readiness = Arc::new(Readiness::default());
    let (tx, rx) = mpsc::channel::<Work>(QUEUE);
    let stop = Arc::new(AtomicBool::new(false));
    let alive = Arc::new(std::sync::atomic::AtomicI64::new(crate::timespec::now()));
    let (stop_tx, stop_rx) = watch::channel(false);

    let shared = store_is_shared(&location);
    let instance = instance_name(config.server.as_ref().map(|s| s.listen));
    metrics
        .instance
        .get_or_create(&crate::metrics::InstanceLabel {
            name: instance.clone(),
            store: if shared { "postgres" } else { "sqlite" }.into(),
        })
        .set(1);
    let engine = engine::Engine {
        streams_state: if shared {
            format!("streams@{instance}")
        } else {
            "streams".to_owned()
        },
        instance,
        shared,
        pipeline,
        config: config.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
        watch: silence::StreamWatch::new(config.stream.silence_after),
        limits: config.decode.limits(),
        stop: stop.clone(),
        alive: alive.clone(),
        notifier: if config.alerts.sinks.is_empty() {
            None
        } else {
            Some(crate::alert::Notifier::new(&config.alerts).map_err(DaemonError::Invalid)?)
        },
    };
    // Alert delivery: its own threads and database connection. A reload
    // stops them (each finishes or gives back what it holds) and starts
    // the new configuration's; claims keep the two from sending one alert
    // twice.
    let delivery = Delivery {
        db: location.clone(),
        metrics: metrics.clone(),
        alive: alive.clone(),
    };
    let delivery_stop = Arc::new(AtomicBool::new(false));
    let deliverers = delivery
        .start(&config, delivery_stop.clone())
        .map_err(DaemonError::Invalid)?;
    let handle = runtime.handle().clone();
    let engine_thread = std::thread::Builder::new()
        .name("kaudit-pipeline".into())
        .spawn(move || engine.run(handle, rx))?;

    // The operations server.
    let server_cfg = config.server.clone().unwrap_or_default();
    let ops = crate::server::Ops {
        metrics: metrics.clone(),
        store: health.clone(),
        sources: readiness.clone(),
    };
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(server_cfg.listen))
        .map_err(|e| DaemonError::Invalid(format!("server.listen {}: {e}", server_cfg.listen)))?;
    let server = runtime.spawn(crate::server::serve(listener, ops, stop_rx.clone()));
    // The findings console, on its own listener, when enabled.
    let console = if server_cfg.ui.enabled {
        let (listener, tls, console) = runtime
            .block_on(crate::ui::bind(
                &server_cfg.ui,
                &location,
                storage
                    .postgres
                    .as_ref()
                    .and_then(|p| p.pool)
                    .map_or(2, |p| p as usize),
            ))
            .map_err(DaemonError::Invalid)?;
        Some(runtime.spawn(crate::ui::serve(listener, tls, console, stop_rx.clone())))
    } else {
        None
    };

    // The sources, each with its own stop signal (a reload may restart
    // one).
    let sources = Arc::new(std::sync::Mutex::new(
        sources::Sources::start_all(
            sources::SourceEnv {
                tx: tx.clone(),
                metrics: metrics.clone(),
                health: health.clone(),
                readiness: readiness.clone(),
                handle: runtime.handle().clone(),
                db: location.clone(),
                max_line: config.decode.max_document_bytes,
            },
            &config,
            positions,
        )
        .map_err(DaemonError::Invalid)?,
    ));
    tracing::info!(sources = config.sources.len(), "kaudit run started");

    // Reloads are prepared on their own thread (reading files and building
    // HTTP clients blocks), off the signal loop.
    let (hup_tx, hup_rx) = std::sync::mpsc::channel::<()>();
    let reloader = {
        let reloader = Reloader {
            path: config_path.to_owned(),
            extra_rules: extra_rules.to_vec(),
            running: config.clone(),
            tx: tx.clone(),
            sources: sources.clone(),
            delivery,
            delivery_stop,
            deliverers,
        };
        std::thread::Builder::new()
            .name("kaudit-reload".into())
            .spawn(move || reloader.run(&hup_rx))?
    };
    drop(tx);

    // Wait for a signal, or for every source to end on its own.
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut check = tokio::time::interval(std::time::Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
                _ = int.recv() => { tracing::info!("SIGINT: stopping"); break; }
                _ = hup.recv() => { let _ = hup_tx.send(()); }
                _ = check.tick() => {
                    // (Skipped while a reload holds the sources.)
                    if sources.try_lock().is_ok_and(|s| s.all_ended()) {
                        tracing::info!("every source has ended: stopping");
                        break;
                    }
                }
            }
        }
        Ok::<(), std::io::Error>(())
    })?;

    // Stop intake, drain, commit. A reload under way ends first; then the
    // sources stop taking input and finish what they sent while the
    // pipeline still commits (a store that is down does not hold the
    // shutdown longer than a few seconds: what is not committed is not
    // acknowledged); then the pipeline drains and stops.
    drop(hup_tx);
    let delivery = reloader.join();
    if let Ok(s) = sources.lock() {
        s.signal_all();
        s.wait_threads(std::time::Duration::from_secs(10));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    if let Ok(mut s) = sources.lock() {
        s.join_threads();
    }
    let _ = engine_thread.join();
    // Alert delivery stops last: what the pipeline committed at the end may
    // still go out.
    if let Ok((delivery_stop, deliverers)) = delivery {
        delivery_stop.store(true, Ordering::Relaxed);
        for d in deliverers {
            let _ = d.join();
        }
    }
    let _ = runtime.block_on(server);
    if let Some(c) = console {
        let _ = runtime.block_on(c);
    }
    if let Ok(mut s) = sources.lock() {
        s.join_tasks(&runtime);
    }
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    tracing::info!("kaudit run stopped");
    Ok(())
}
