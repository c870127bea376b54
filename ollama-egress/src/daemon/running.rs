//! The main loop (signals, reloads, process watching, attachment checks) and the shutdown.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::watch,
    task::JoinHandle,
};
use tracing::{error, info, warn};

use super::{DaemonError, DaemonState, EventTally, PolicySource, RunOptions, io_err};
use crate::{
    loader::{DirLock, KernelCounters, Loaded, PolicyTables},
    metrics::{self, Metrics},
    model::Mode,
    pipeline::{Decoder, PipelineStats},
    targeting::{CgroupWatch, ProcessWatcher},
};

/// How often `--process` looks for new processes.
const PROCESS_SCAN_INTERVAL: Duration = Duration::from_millis(250);
/// How often the policy file and the geo databases are checked for changes.
const INPUT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often the attachment is verified with the kernel and the state file refreshed.
const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The signals the daemon handles, installed before start-up so that one arriving while it
/// starts (after its state file says it is ready, say) is handled, not fatal.
pub(super) struct Signals {
    sigint: Signal,
    sigterm: Signal,
    sighup: Signal,
}

impl Signals {
    /// Installs the handlers.
    pub(super) fn install() -> Result<Self, DaemonError> {
        Ok(Self {
            sigint: signal(SignalKind::interrupt()).map_err(io_err("installing SIGINT handler"))?,
            sigterm: signal(SignalKind::terminate())
                .map_err(io_err("installing SIGTERM handler"))?,
            sighup: signal(SignalKind::hangup()).map_err(io_err("installing SIGHUP handler"))?,
        })
    }
}

/// A started daemon: attached, verified, recording.
pub(super) struct Daemon {
    pub(super) opts: RunOptions,
    pub(super) cgroup: PathBuf,
    pub(super) loaded: Loaded,
    pub(super) tables: PolicyTables,
    pub(super) counters: Arc<KernelCounters>,
    pub(super) decoder: Arc<Mutex<Decoder>>,
    pub(super) source: PolicySource,
    pub(super) state: DaemonState,
    pub(super) watcher: Option<ProcessWatcher>,
    /// Wakes when the target cgroup may have been made again.
    pub(super) follow: CgroupWatch,
    pub(super) metrics: Arc<Metrics>,
    pub(super) tally: Arc<EventTally>,
    pub(super) reader: JoinHandle<std::io::Result<PipelineStats>>,
    pub(super) server: JoinHandle<std::io::Result<()>>,
    pub(super) stop_tx: watch::Sender<bool>,
    /// Writes the names table's snapshot next to the log.
    pub(super) names: super::names::SnapshotWriter,
    /// The resolver's cgroup, when names are learned there too.
    pub(super) resolver: Option<super::dns::Resolver>,
    /// The pin directory's and the target's locks, released when the daemon ends.
    pub(super) _locks: (Option<DirLock>, DirLock),
}

impl Daemon {
    /// Runs until SIGINT or SIGTERM, then shuts down.
    pub(super) async fn run(mut self, signals: Signals) -> Result<(), DaemonError> {
        let Signals {
            mut sigint,
            mut sigterm,
            mut sighup,
        } = signals;
        let mut scan = tokio::time::interval(PROCESS_SCAN_INTERVAL);
        let mut inputs = tokio::time::interval(INPUT_POLL_INTERVAL);
        // Polls stay a full interval apart even after a slow reload: a change counts as settled
        // only when two polls that far apart see the same file.
        inputs.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut check = tokio::time::interval(CHECK_INTERVAL);
        let mut verified = true;
        loop {
            tokio::select! {
                _ = sigint.recv() => { info!("SIGINT: stopping"); break; }
                _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
                _ = sighup.recv() => {
                    info!("SIGHUP: reloading the policy and the geo databases");
                    self.source.mark_current();
                    self.reload(true);
                }
                _ = inputs.tick() => {
                    let changed = self.source.changed_files();
                    if !changed.is_empty() {
                        info!(?changed, "inputs changed: reloading");
                        let reopen_geo = self.source.touches_geo(&changed);
                        self.reload(reopen_geo);
                    }
                }
                _ = scan.tick(), if self.watcher.is_some() => self.scan_processes(),
                _ = check.tick() => verified = self.check(verified),
                () = self.follow.wait() => self.follow_target(),
            }
        }
        self.shutdown().await
    }

    fn reload(&mut self, reopen_geo: bool) {
        match self
            .source
            .reload(&mut self.tables, &self.decoder, reopen_geo)
        {
            Ok((generation, compiled)) => {
                let summary = compiled.summary();
                info!(generation, policy = %compiled.origin, "policy reloaded:\n{summary}");
                self.metrics.reload(true);
                self.metrics.set_policy(&summary);
                self.state.generation = generation;
                self.state.policy = compiled.origin;
                self.state.rules = compiled.rules.len();
                self.state.prefixes = summary.prefixes;
                self.write_state();
            }
            Err(e) => {
                self.metrics.reload(false);
                error!("policy reload failed, the previous policy stays in force: {e}");
            }
        }
    }

    fn scan_processes(&mut self) {
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        match w.scan() {
            Ok(marked) if !marked.is_empty() => {
                info!(?marked, "marked processes the kernel had not marked");
            }
            Ok(_) => {}
            Err(e) => warn!("marking processes failed: {e}"),
        }
    }

    /// Re-attaches when the target cgroup was replaced (removed and made again at its path).
    fn follow_target(&mut self) {
        match self.loaded.follow(&self.cgroup) {
            Ok(crate::loader::Follow::Reattached { old, new }) => {
                warn!(
                    old_cgroup_id = old,
                    new_cgroup_id = new,
                    "the target cgroup {} was made again: attached to the new one",
                    self.cgroup.display()
                );
                // The lock was on the old directory: take the new one's.
                match super::startup::lock_target(&self.cgroup) {
                    Ok(lock) => self._locks.1 = lock,
                    Err(e) => error!("locking the re-created target cgroup: {e}"),
                }
            }
            Ok(_) => {}
            Err(e) => error!(
                "the target cgroup {} was made again, but attaching to it failed: {e}",
                self.cgroup.display()
            ),
        }
    }

    /// Verifies the attachment with the kernel and refreshes the counters and the state file.
    /// Returns whether the programs are attached.
    fn check(&mut self, was_verified: bool) -> bool {
        let ok = self.loaded.verify_attached(&self.cgroup);
        match (&ok, was_verified) {
            (Err(e), true) => error!("the programs are no longer attached: {e}"),
            (Ok(()), false) => info!("the programs are attached again"),
            _ => {}
        }
        self.metrics
            .set_enforcing(self.opts.mode == Mode::Enforce && ok.is_ok());
        if let Some(r) = &mut self.resolver {
            r.check(&mut self.loaded);
        }
        let (pairs, evicted) = self.names.refresh(&self.decoder, &self.opts.log_dir);
        self.metrics.set_dns_bindings(pairs, evicted);
        match self.counters.snapshot() {
            Ok(snap) => {
                self.metrics.set_kernel(&snap);
                let lost_before = self.state.counters.get("events_lost").copied().unwrap_or(0);
                if snap.events_lost > lost_before {
                    warn!(
                        lost = snap.events_lost - lost_before,
                        total = snap.events_lost,
                        "the event ring buffer was full: events were lost (counted in ollama_egress_events_lost_total; raise --event-buffer-bytes)"
                    );
                }
                let c = &mut self.state.counters;
                for (d, per_dir) in snap.packets.iter().enumerate() {
                    for (v, counter) in per_dir.iter().enumerate() {
                        let key = format!(
                            "{}.{}",
                            metrics::direction_name(d as u32),
                            metrics::verdict_name(v as u32)
                        );
                        c.insert(format!("packets.{key}"), counter.packets);
                        c.insert(format!("bytes.{key}"), counter.bytes);
                    }
                }
                c.insert("events_lost".into(), snap.events_lost);
            }
            Err(e) => warn!("reading the kernel counters failed: {e}"),
        }
        for (k, v) in self.tally.values() {
            self.state.counters.insert(k.into(), v);
        }
        self.write_state();
        ok.is_ok()
    }

    fn write_state(&self) {
        if let Err(e) = self.state.write(&self.opts.log_dir) {
            warn!(error = %e, "could not update the state file");
        }
    }

    /// In enforce mode the pinned links stay: enforcement goes on without the daemon, and what
    /// the kernel records meanwhile waits in the pinned ring buffer for the next daemon. In
    /// monitor mode nothing is pinned: the links close with the daemon.
    async fn shutdown(self) -> Result<(), DaemonError> {
        let Self {
            opts,
            cgroup,
            loaded,
            tables,
            reader,
            server,
            stop_tx,
            ..
        } = self;
        drop(tables);
        drop(loaded);
        let _ = stop_tx.send(true);
        match reader.await {
            Ok(Ok(stats)) => info!(events = stats.decoded, "event log flushed"),
            Ok(Err(e)) => error!("event reader failed: {e}"),
            Err(e) => error!("event reader panicked: {e}"),
        }
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!("metrics server failed: {e}"),
            Err(e) => error!("metrics server panicked: {e}"),
        }
        if let Err(e) = DaemonState::remove(&opts.log_dir) {
            warn!(error = %e, "could not remove the state file");
        }
        if opts.mode == Mode::Enforce {
            info!(
                "enforcement stays attached to {} (pinned in {}); `ollama-egress detach` stops it",
                cgroup.display(),
                opts.pin_dir.display()
            );
        } else {
            info!("detached from {}", cgroup.display());
        }
        Ok(())
    }
}
