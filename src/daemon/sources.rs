//! The daemon's running sources, each with its own stop signal, so that a
//! reload (SIGHUP) can stop, start or restart one source without touching
//! the others, and shutdown can stop them all.
//!
//! A source is restarted when its configuration or anything it reads at
//! start changed: TLS certificates and keys (a renewed certificate), token
//! and password files, environment variables. A stopped source finishes
//! the batch it sent (its acknowledgement waits for the commit, as always);
//! the new one resumes from the committed positions, so a restart loses
//! and repeats nothing. stdin cannot be reopened and is left as it runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

use super::engine::StoreHealth;
use crate::config::{Config, SourceConfig};
use crate::metrics::Metrics;
use crate::source::{Readiness, Tx};
use crate::store::Store;

/// What every source is started with.
pub struct SourceEnv {
    pub tx: Tx,
    pub metrics: Arc<Metrics>,
    pub health: Arc<StoreHealth>,
    pub readiness: Arc<Readiness>,
    pub handle: tokio::runtime::Handle,
    /// The store, to read a restarted source's committed positions.
    pub db: PathBuf,
    /// Lines up to this long are read whole (the decoder's document cap).
    pub max_line: usize,
}

struct Running {
    /// The configuration and what it reads at start, hashed.
    identity: String,
    stop: Arc<AtomicBool>,
    stop_tx: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    stdin: bool,
}

pub struct Sources {
    env: SourceEnv,
    running: BTreeMap<String, Running>,
}

impl Sources {
    /// Starts every source of `config`, each from `positions` (by index).
    ///
    /// # Errors
    /// A source that cannot start (a listener that cannot bind, a secret
    /// that cannot be read).
    pub fn start_all(
        env: SourceEnv,
        config: &Config,
        positions: Vec<Vec<(String, String)>>,
    ) -> Result<Sources, String> {
        let mut s = Sources {
            env,
            running: BTreeMap::new(),
        };
        for (i, (source, positions)) in config.sources.iter().zip(positions).enumerate() {
            s.start(&source.name(i), source, positions)?;
        }
        Ok(s)
    }

    fn start(
        &mut self,
        name: &str,
        source: &SourceConfig,
        positions: Vec<(String, String)>,
    ) -> Result<(), String> {
        let env = &self.env;
        env.readiness.set(name, Err("starting".into()));
        let stop = Arc::new(AtomicBool::new(false));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut running = Running {
            identity: identity(source, env.max_line),
            stop: stop.clone(),
            stop_tx,
            thread: None,
            task: None,
            stdin: false,
        };
        let spawn_err = |e: std::io::Error| format!("source {name}: cannot start a thread: {e}");
        match source {
            SourceConfig::File(f) => {
                let tailer = crate::source::file::FileTailer::new(
                    name,
                    f.clone(),
                    env.tx.clone(),
                    stop,
                    env.readiness.clone(),
                    positions,
                )
                .with_max_line(env.max_line);
                running.thread = Some(
                    std::thread::Builder::new()
                        .name(format!("kaudit-file-{name}"))
                        .spawn(move || tailer.run())
                        .map_err(spawn_err)?,
                );
            }
            SourceConfig::Stdin(s) => {
                let (s, tx, ready, name) = (
                    s.clone(),
                    env.tx.clone(),
                    env.readiness.clone(),
                    name.to_owned(),
                );
                running.stdin = true;
                running.thread = Some(
                    std::thread::Builder::new()
                        .name("kaudit-stdin".into())
                        .spawn(move || crate::source::stdin::run(&name, &s, tx, stop, ready))
                        .map_err(spawn_err)?,
                );
            }
            SourceConfig::Webhook(w) => {
                let (listener, tls, state) = env.handle.block_on(crate::source::webhook::bind(
                    name,
                    w.clone(),
                    env.tx.clone(),
                    env.metrics.clone(),
                    env.health.clone(),
                ))?;
                running.task = Some(env.handle.spawn(crate::source::webhook::serve(
                    listener,
                    tls,
                    state,
                    env.readiness.clone(),
                    stop_rx,
                )));
            }
            SourceConfig::Kafka(k) => {
                // Settings are checked before starting (a missing secret is
                // an error now, not a retry loop later).
                crate::source::kafka::client_config(name, k)?;
                running.task = Some(env.handle.spawn(crate::source::kafka::run(
                    name.to_owned(),
                    k.clone(),
                    env.tx.clone(),
                    env.metrics.clone(),
                    env.readiness.clone(),
                    Some(env.db.clone()),
                    stop_rx,
                )));
            }
        }
        self.running.insert(name.to_owned(), running);
        Ok(())
    }

    /// Every source has ended on its own (stdin at its end); a listening or
    /// consuming source never does.
    pub fn all_ended(&self) -> bool {
        // None running at all is a reload that stopped or could not start
        // them: the daemon waits for the next reload, it does not exit.
        !self.running.is_empty()
            && self
                .running
                .values()
                .all(|r| r.task.is_none() && r.thread.as_ref().is_none_or(|t| t.is_finished()))
    }

    /// Takes the sources of a new configuration: removed and changed ones
    /// are stopped (what they sent is committed first), new and changed
    /// ones started from their committed positions. Returns what happened,
    /// one line per source touched.
    ///
    /// # Errors
    /// A source that could not start; the others are as asked.
    pub fn reload(&mut self, config: &Config) -> Result<Vec<String>, String> {
        self.env.max_line = config.decode.max_document_bytes;
        let wanted: BTreeMap<String, &SourceConfig> = config
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name(i), s))
            .collect();
        let mut done = Vec::new();
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            let Some(r) = self.running.get(&name) else {
                continue;
            };
            if r.stdin {
                continue; // stdin cannot be reopened
            }
            match wanted.get(&name) {
                Some(s) if identity(s, self.env.max_line) == r.identity => {}
                Some(_) => {
                    self.stop_one(&name);
                    done.push(format!("{name}: restarted"));
                }
                None => {
                    self.stop_one(&name);
                    self.env.readiness.remove(&name);
                    done.push(format!("{name}: stopped"));
                }
            }
        }
        // A source that failed to start before and is gone from the
        // configuration no longer holds /readyz down.
        for (name, _) in self.env.readiness.all() {
            if !wanted.contains_key(&name) && !self.running.contains_key(&name) {
                self.env.readiness.remove(&name);
            }
        }
        let mut errors = Vec::new();
        for (name, source) in wanted {
            if self.running.contains_key(&name) || matches!(source, SourceConfig::Stdin(_)) {
                continue;
            }
            let positions = Store::open(&self.env.db)
                .and_then(|s| s.source_checkpoints(&name))
                .map_err(|e| format!("source {name}: {e}"));
            match positions.and_then(|p| self.start(&name, source, p)) {
                Ok(()) => {
                    if !done.iter().any(|d| d.starts_with(&format!("{name}:"))) {
                        done.push(format!("{name}: started"));
                    }
                }
                Err(e) => {
                    self.env.readiness.set(&name, Err(e.clone()));
                    errors.push(e);
                }
            }
        }
        if errors.is_empty() {
            Ok(done)
        } else {
            Err(errors.join("; "))
        }
    }

    /// Stops one source and waits until it has.
    fn stop_one(&mut self, name: &str) {
        let Some(r) = self.running.remove(name) else {
            return;
        };
        r.stop.store(true, Ordering::Relaxed);
        let _ = r.stop_tx.send(true);
        if let Some(t) = r.thread {
            let _ = t.join();
        }
        if let Some(t) = r.task {
            let _ = self.env.handle.block_on(t);
        }
    }

    /// Shutdown, first step: every source stops taking input.
    pub fn signal_all(&self) {
        for r in self.running.values() {
            r.stop.store(true, Ordering::Relaxed);
            let _ = r.stop_tx.send(true);
        }
    }

    /// Shutdown, second step (the pipeline still running, so that what the
    /// sources sent is committed): waits up to `limit` for the reading
    /// threads to end.
    pub fn wait_threads(&self, limit: std::time::Duration) {
        let start = std::time::Instant::now();
        while start.elapsed() < limit
            && self
                .running
                .values()
                .any(|r| !r.stdin && r.thread.as_ref().is_some_and(|t| !t.is_finished()))
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Shutdown, third step: the reading threads are joined (stdin's only
    /// if it is not sitting in a read forever).
    pub fn join_threads(&mut self) {
        for r in self.running.values_mut() {
            if let Some(t) = r.thread.take()
                && (!r.stdin || t.is_finished())
            {
                let _ = t.join();
            }
        }
    }

    /// Shutdown, last step (after the pipeline has drained): the listening
    /// and consuming tasks are awaited.
    pub fn join_tasks(&mut self, runtime: &tokio::runtime::Runtime) {
        for r in self.running.values_mut() {
            if let Some(t) = r.task.take() {
                let _ = runtime.block_on(t);
            }
        }
    }
}

/// A source's configuration and what it reads when it starts (certificate,
/// key and secret files, environment variables), hashed: when it changes,
/// the source is restarted. Secrets are never kept, only the hash.
fn identity(source: &SourceConfig, max_line: usize) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(format!("{source:?}").as_bytes());
    if let SourceConfig::File(_) = source {
        h.update(max_line.to_le_bytes());
    }
    let mut file = |p: &std::path::Path| {
        h.update(p.as_os_str().as_encoded_bytes());
        h.update(std::fs::read(p).unwrap_or_default());
        h.update([0]);
    };
    let mut files: Vec<PathBuf> = Vec::new();
    let mut vars: Vec<String> = Vec::new();
    let mut inline: Vec<String> = Vec::new();
    match source {
        SourceConfig::Webhook(w) => {
            if let Some(t) = &w.tls {
                files.extend([t.cert.clone(), t.key.clone()]);
                files.extend(t.client_ca.clone());
            }
            for c in &w.clients {
                files.extend(c.token_file.clone());
                vars.extend(c.token_env.clone());
                inline.extend(c.token.as_ref().map(|t| t.expose().to_owned()));
            }
            files.extend(w.firehose_access_key_file.clone());
            vars.extend(w.firehose_access_key_env.clone());
            inline.extend(
                w.firehose_access_key
                    .as_ref()
                    .map(|t| t.expose().to_owned()),
            );
        }
        SourceConfig::Kafka(k) => {
            let s = &k.security;
            files.extend(s.password_file.clone());
            files.extend(s.event_hubs_connection_string_file.clone());
            files.extend(s.ca_file.clone());
            vars.extend(s.password_env.clone());
            vars.extend(s.event_hubs_connection_string_env.clone());
            inline.extend(s.password.as_ref().map(|p| p.expose().to_owned()));
            for v in k.properties.values() {
                let v = v.expose();
                if let Some(var) = v.strip_prefix("env:") {
                    vars.push(var.to_owned());
                } else if let Some(p) = v.strip_prefix("file:") {
                    files.push(PathBuf::from(p));
                } else {
                    inline.push(v.to_owned());
                }
            }
        }
        SourceConfig::File(_) | SourceConfig::Stdin(_) => {}
    }
    for f in &files {
        file(f);
    }
    for v in vars {
        h.update(v.as_bytes());
        h.update(std::env::var(&v).unwrap_or_default().as_bytes());
        h.update([0]);
    }
    for v in inline {
        h.update(v.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(yaml: &str) -> SourceConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn identity_follows_the_files_a_source_reads() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "one").unwrap();
        let yaml = format!(
            "{{type: webhook, listen: \"127.0.0.1:1\", allow_anonymous: true, tls: {{cert: {}, key: {}}}}}",
            cert.display(),
            cert.display()
        );
        let a = identity(&source(&yaml), 1);
        assert_eq!(a, identity(&source(&yaml), 1), "stable");
        std::fs::write(&cert, "two").unwrap();
        assert_ne!(a, identity(&source(&yaml), 1), "a renewed certificate");
        let other = identity(&source(&yaml.replace("127.0.0.1:1", "127.0.0.1:2")), 1);
        assert_ne!(identity(&source(&yaml), 1), other, "another listen address");
        let file = source("{type: file, path: /var/log/a.log}");
        assert_ne!(identity(&file, 1), identity(&file, 2), "another line cap");
        // Inline secrets count, but are not in the identity in clear.
        let k = identity(
            &source(
                "{type: kafka, brokers: b, topic: t, group_id: g, security: {password: hunter2}}",
            ),
            1,
        );
        assert!(!k.contains("hunter2"));
        assert_ne!(
            k,
            identity(
                &source(
                    "{type: kafka, brokers: b, topic: t, group_id: g, security: {password: hunter3}}"
                ),
                1
            )
        );
    }
}
