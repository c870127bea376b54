//! The main loop (reloads, attachment checks, the state file) and the shutdown.

use std::sync::Arc;

use tracing::{error, info, warn};

use super::{
    DaemonError, DaemonState, EventTally, RunOptions, kernel::KernelHandles,
    runtime::PolicyRuntime, tasks::Tasks, tasks::Wake,
};
use crate::{
    loader::CounterSnapshot,
    metrics::Metrics,
    model::{Direction, Mode, Verdict},
};

/// A started daemon: attached, verified, recording.
pub(super) struct Daemon {
    opts: RunOptions,
    state: DaemonState,
    metrics: Arc<Metrics>,
    tally: Arc<EventTally>,
    runtime: PolicyRuntime,
    tasks: Tasks,
    kernel: KernelHandles,
}

impl Daemon {
    /// A daemon of these parts: the options it runs with, its state (as written to the state
    /// file), the metrics, the sink's tallies, the policy in force, the task set and the kernel
    /// objects.
    pub(super) fn new(
        opts: RunOptions,
        state: DaemonState,
        metrics: Arc<Metrics>,
        tally: Arc<EventTally>,
        runtime: PolicyRuntime,
        tasks: Tasks,
        kernel: KernelHandles,
    ) -> Self {
        Self {
            opts,
            state,
            metrics,
            tally,
            runtime,
            tasks,
            kernel,
        }
    }

    /// Runs until SIGINT or SIGTERM, then shuts down.
    pub(super) async fn run(mut self) -> Result<(), DaemonError> {
        let mut verified = true;
        loop {
            match self.tasks.next().await {
                Wake::Stop => break,
                Wake::Hangup => {
                    info!("SIGHUP: reloading the policy and the geo databases");
                    self.runtime.source_mut().mark_current();
                    self.reload(true);
                }
                Wake::PollInputs => {
                    let source = self.runtime.source_mut();
                    let changed = source.changed_files();
                    if !changed.is_empty() {
                        info!(?changed, "inputs changed: reloading");
                        let reopen_geo = source.touches_geo(&changed);
                        self.reload(reopen_geo);
                    }
                }
                Wake::Check => verified = self.check(verified),
                Wake::TargetRecreated => self.kernel.follow_target(),
            }
        }
        self.shutdown().await
    }

    fn reload(&mut self, reopen_geo: bool) {
        match self.runtime.reload(reopen_geo) {
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

    /// Verifies the attachment with the kernel and refreshes the counters and the state file.
    /// Returns whether the programs are attached.
    fn check(&mut self, was_verified: bool) -> bool {
        let ok = self.kernel.verify();
        match (&ok, was_verified) {
            (Err(e), true) => error!("the programs are no longer attached: {e}"),
            (Ok(()), false) => info!("the programs are attached again"),
            _ => {}
        }
        self.metrics
            .set_enforcing(self.opts.mode == Mode::Enforce && ok.is_ok());
        match self.kernel.counters().snapshot() {
            Ok(snap) => {
                self.metrics.set_kernel(&snap);
                self.take_kernel_counters(&snap);
            }
            Err(e) => warn!("reading the kernel counters failed: {e}"),
        }
        self.tally.fill(&mut self.state.counters);
        self.write_state();
        ok.is_ok()
    }

    /// Copies a kernel counter snapshot into the state, warning when events were lost.
    fn take_kernel_counters(&mut self, snap: &CounterSnapshot) {
        let c = &mut self.state.counters;
        if snap.events_lost > c.events_lost {
            warn!(
                lost = snap.events_lost - c.events_lost,
                total = snap.events_lost,
                "the event ring buffer was full: events were lost (counted in ollama_egress_events_lost_total; raise --event-buffer-bytes)"
            );
        }
        for (d, per_dir) in snap.packets.iter().enumerate() {
            let Ok(direction) = Direction::from_kernel(d as u32) else {
                continue;
            };
            for (v, counter) in per_dir.iter().enumerate() {
                let Ok(verdict) = Verdict::from_kernel(v as u32) else {
                    continue;
                };
                *c.packets.get_mut(direction).get_mut(verdict) = counter.packets;
                *c.bytes.get_mut(direction).get_mut(verdict) = counter.bytes;
            }
        }
        c.events_lost = snap.events_lost;
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
            runtime,
            tasks,
            kernel,
            ..
        } = self;
        // The tables before the programs, the programs before the tasks; the locks last.
        drop(runtime);
        let (cgroup, _locks) = kernel.close();
        tasks.stop().await;
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
