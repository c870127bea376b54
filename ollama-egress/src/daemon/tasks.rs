//! The daemon's task set: the signal handlers, the timers, the followers (processes by name,
//! a re-created target cgroup) and the spawned tasks (event reader, metrics server, kernel log
//! forwarder), with the one stop signal they share.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use tokio::{
    net::TcpListener,
    signal::unix::{Signal, SignalKind, signal},
    sync::watch,
    task::JoinHandle,
    time::{Interval, MissedTickBehavior, interval},
};
use tracing::{error, info, warn};

use super::{DaemonError, LogSink, io_err};
use crate::{
    loader::{KernelCounters, KernelLogger},
    metrics::{self, Metrics},
    pipeline::{Decoder, PipelineStats, forward_kernel_log, run_reader},
    targeting::{CgroupWatch, ProcessWatcher, Seen},
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

    /// Returns at SIGINT or SIGTERM (for waits before the daemon runs).
    pub(super) async fn stopped(&mut self) {
        tokio::select! {
            _ = self.sigint.recv() => info!("SIGINT: stopping"),
            _ = self.sigterm.recv() => info!("SIGTERM: stopping"),
        }
    }
}

/// What the task set woke the daemon for.
pub(super) enum Wake {
    /// SIGINT or SIGTERM.
    Stop,
    /// SIGHUP: reload the policy and the geo databases.
    Hangup,
    /// Time to look for changed inputs.
    PollInputs,
    /// Time to verify the attachment and refresh the state.
    Check,
    /// The target cgroup may have been made again (or, for a container, made anew beside).
    TargetRecreated(Seen),
    /// `--pod-selector`: the pod was replaced by this one.
    PodReplaced(crate::targeting::kube::PodTarget),
}

/// The spawned workers' inputs.
pub(super) struct Workers {
    /// The kernel's event ring buffer.
    pub(super) ring: RingBuf<MapData>,
    /// The decoder the runtime keeps current.
    pub(super) decoder: Arc<Mutex<Decoder>>,
    /// Where decoded events go.
    pub(super) sink: LogSink,
    /// The metrics endpoint's socket.
    pub(super) listener: TcpListener,
    /// The metrics registry.
    pub(super) metrics: Arc<Metrics>,
    /// The kernel counters, read on each scrape.
    pub(super) counters: Arc<KernelCounters>,
    /// The kernel programs' log.
    pub(super) kernel_log: KernelLogger,
}

/// The daemon's signals, timers, followers and tasks.
pub(super) struct Tasks {
    signals: Signals,
    scan: Interval,
    inputs: Interval,
    check: Interval,
    watcher: Option<ProcessWatcher>,
    follow: CgroupWatch,
    pods: Option<super::kube::PodFollow>,
    reader: JoinHandle<std::io::Result<PipelineStats>>,
    server: JoinHandle<std::io::Result<()>>,
    stop_tx: watch::Sender<bool>,
}

impl Tasks {
    /// Spawns the workers and starts the timers.
    pub(super) fn spawn(
        signals: Signals,
        watcher: Option<ProcessWatcher>,
        follow: CgroupWatch,
        workers: Workers,
    ) -> Self {
        let Workers {
            ring,
            decoder,
            mut sink,
            listener,
            metrics,
            counters,
            kernel_log,
        } = workers;
        let (stop_tx, stop_rx) = watch::channel(false);
        let reader = {
            let stop = stop_rx.clone();
            tokio::spawn(async move { run_reader(ring, decoder, &mut sink, stop).await })
        };
        let server = {
            let metrics_for_refresh = Arc::clone(&metrics);
            let refresh = move || match counters.snapshot() {
                Ok(snap) => metrics_for_refresh.set_kernel(&snap),
                Err(e) => warn!("reading the kernel counters failed: {e}"),
            };
            tokio::spawn(metrics::serve(listener, metrics, refresh, stop_rx.clone()))
        };
        tokio::spawn({
            let stop = stop_rx;
            async move {
                if let Err(e) = forward_kernel_log(kernel_log, stop).await {
                    warn!("forwarding the kernel programs' log failed: {e}");
                }
            }
        });
        let mut inputs = interval(INPUT_POLL_INTERVAL);
        // Polls stay a full interval apart even after a slow reload: a change counts as settled
        // only when two polls that far apart see the same file.
        inputs.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            signals,
            scan: interval(PROCESS_SCAN_INTERVAL),
            inputs,
            check: interval(CHECK_INTERVAL),
            watcher,
            follow,
            pods: None,
            reader,
            server,
            stop_tx,
        }
    }

    /// Follows a Kubernetes pod's replacements too.
    pub(super) fn with_pods(mut self, pods: Option<super::kube::PodFollow>) -> Self {
        self.pods = pods;
        self
    }

    /// The daemon moved to another target cgroup (a container re-created under a new id, or a
    /// replacement pod, `pod_uid`): its parent is watched from now on.
    pub(super) fn moved_to(&mut self, cgroup: &std::path::Path, pod_uid: Option<&str>) {
        self.follow.retarget(cgroup);
        if let (Some(p), Some(uid)) = (&mut self.pods, pod_uid) {
            p.moved_to(uid);
        }
    }

    /// Waits for the next thing the daemon must do. Marking processes by name is done here.
    pub(super) async fn next(&mut self) -> Wake {
        loop {
            tokio::select! {
                _ = self.signals.sigint.recv() => { info!("SIGINT: stopping"); return Wake::Stop; }
                _ = self.signals.sigterm.recv() => { info!("SIGTERM: stopping"); return Wake::Stop; }
                _ = self.signals.sighup.recv() => return Wake::Hangup,
                _ = self.inputs.tick() => return Wake::PollInputs,
                _ = self.scan.tick(), if self.watcher.is_some() => self.scan_processes(),
                _ = self.check.tick() => return Wake::Check,
                seen = self.follow.wait() => return Wake::TargetRecreated(seen),
                r = pod_lookup(&mut self.pods) => {
                    if let Some(t) = self.pods.as_mut().and_then(|p| p.decide(r)) {
                        return Wake::PodReplaced(t);
                    }
                }
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

    /// Tells the tasks to stop and waits for the event reader (which flushes the log) and the
    /// metrics server.
    pub(super) async fn stop(self) {
        let _ = self.stop_tx.send(true);
        match self.reader.await {
            Ok(Ok(stats)) => info!(events = stats.decoded, "event log flushed"),
            Ok(Err(e)) => error!("event reader failed: {e}"),
            Err(e) => error!("event reader panicked: {e}"),
        }
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!("metrics server failed: {e}"),
            Err(e) => error!("metrics server panicked: {e}"),
        }
    }
}

/// The next pod lookup; never, without `--pod-selector`.
async fn pod_lookup(
    pods: &mut Option<super::kube::PodFollow>,
) -> Result<crate::targeting::kube::Lookup, crate::targeting::kube::KubeError> {
    match pods {
        Some(p) => p.recv().await,
        None => std::future::pending().await,
    }
}
