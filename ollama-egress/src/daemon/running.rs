//! The main loop (reloads, attachment checks, the state file) and the shutdown.

use tracing::{error, info, warn};

use super::{
    DaemonError, RunOptions, kernel::KernelHandles, report::Report, runtime::PolicyRuntime,
    tasks::Tasks, tasks::Wake,
};
use crate::model::Mode;

/// A started daemon: attached, verified, recording.
pub(super) struct Daemon {
    opts: RunOptions,
    report: Report,
    runtime: PolicyRuntime,
    tasks: Tasks,
    kernel: KernelHandles,
    /// Writes the names table's snapshot next to the log.
    names: super::names::SnapshotWriter,
}

impl Daemon {
    /// A daemon of these parts: the options it runs with, what it reports, the policy in
    /// force, the task set and the kernel objects.
    pub(super) fn new(
        opts: RunOptions,
        report: Report,
        runtime: PolicyRuntime,
        tasks: Tasks,
        kernel: KernelHandles,
    ) -> Self {
        Self {
            opts,
            report,
            runtime,
            tasks,
            kernel,
            names: Default::default(),
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
                Wake::TargetRecreated => {
                    if let Some((cgroup, restarts)) = self.kernel.follow_target() {
                        self.tasks.watch(&cgroup);
                        self.report.retargeted(cgroup, restarts);
                    }
                }
            }
        }
        self.shutdown().await
    }

    fn reload(&mut self, reopen_geo: bool) {
        match self.runtime.reload(reopen_geo) {
            Ok((generation, compiled)) => {
                info!(generation, policy = %compiled.origin, "policy reloaded:\n{}", compiled.summary());
                self.report.reloaded(generation, compiled);
            }
            Err(e) => {
                self.report.reload_failed();
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
        self.report
            .set_enforcing(self.opts.mode == Mode::Enforce && ok.is_ok());
        self.kernel.check_resolver();
        let (pairs, evicted) = self
            .names
            .refresh(&self.runtime.decoder(), &self.opts.log_dir);
        self.report.set_dns_bindings(pairs, evicted);
        let snap = self
            .kernel
            .counters()
            .snapshot()
            .inspect_err(|e| warn!("reading the kernel counters failed: {e}"))
            .ok();
        self.report.refresh(snap.as_ref());
        ok.is_ok()
    }

    /// In enforce mode the pinned links stay: enforcement goes on without the daemon, and what
    /// the kernel records meanwhile waits in the pinned ring buffer for the next daemon. In
    /// monitor mode nothing is pinned: the links close with the daemon.
    async fn shutdown(self) -> Result<(), DaemonError> {
        let Self {
            opts,
            report,
            runtime,
            tasks,
            kernel,
            names: _,
        } = self;
        // The tables before the programs, the programs before the tasks; the locks last.
        drop(runtime);
        let (cgroup, _locks) = kernel.close();
        tasks.stop().await;
        report.remove_state();
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
