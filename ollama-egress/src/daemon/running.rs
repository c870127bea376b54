//! The main loop (reloads, attachment checks, the state file) and the shutdown.

use tracing::{error, info, warn};

use super::{
    DaemonError, RunOptions, kernel::KernelHandles, report::Report, runtime::PolicyRuntime,
    tasks::Tasks, tasks::Wake,
};
use crate::{
    loader::Follow,
    model::Mode,
    targeting::{
        Seen,
        follow::{ContainerFollow, Recreated},
    },
};

/// A started daemon: attached, verified, recording.
pub(super) struct Daemon {
    opts: RunOptions,
    report: Report,
    runtime: PolicyRuntime,
    tasks: Tasks,
    kernel: KernelHandles,
    /// Writes the names table's snapshot next to the log.
    names: super::names::SnapshotWriter,
    /// The container followed by name, for `--container`.
    container: Option<ContainerFollow>,
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
            container: None,
        }
    }

    /// The daemon follows this container by name (restarts and re-creation).
    pub(super) fn following(mut self, container: Option<ContainerFollow>) -> Self {
        self.container = container;
        self
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
                Wake::TargetRecreated(seen) => self.follow(seen).await,
                Wake::PodReplaced(t) => self.move_to_pod(&t),
            }
        }
        self.shutdown().await
    }

    /// The target's parent has a new directory, or the backstop timer fired: the target made
    /// again at its path is re-attached to; a container followed by name that came back under
    /// a new id is moved to.
    async fn follow(&mut self, seen: Seen) {
        if let Some((cgroup, restarts)) = self.kernel.follow_unit() {
            self.tasks.moved_to(&cgroup, None);
            self.report.retargeted(cgroup, restarts);
            return;
        }
        let found = self.kernel.follow_target();
        let Some(container) = self.container.clone() else {
            return;
        };
        if let Some(Follow::Reattached { .. }) = found {
            info!(
                container = container.name(),
                "re-attached to {} {:.1} ms after its cgroup appeared{}",
                container.describe(),
                ms_since(&seen),
                by_timer(&seen)
            );
            return;
        }
        let candidates = container.candidates(&seen.created);
        // The backstop asks the engine only while the cgroup followed is gone and the watch may
        // have missed its new one (no watch, or a parent made again).
        let backstop = seen.unwatched && found == Some(Follow::Gone);
        if candidates.is_empty() && !backstop {
            return;
        }
        let Some(parent) = self.kernel.cgroup().parent().map(ToOwned::to_owned) else {
            return;
        };
        let asked = tokio::task::spawn_blocking(move || {
            if backstop {
                container.look_up(&parent)
            } else {
                container.identify(&parent, &candidates)
            }
        })
        .await;
        match asked {
            Ok(Ok(Some(moved))) => self.move_to(moved, &seen),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => warn!("asking the engine about a new container cgroup: {e}"),
            Err(e) => error!("asking the engine about a new container cgroup panicked: {e}"),
        }
    }

    fn move_to(&mut self, moved: Recreated, seen: &Seen) {
        let Some(container) = self.container.as_mut() else {
            return;
        };
        let cgroup = moved.cgroup.clone();
        if let Err(e) = self.kernel.switch_target(&cgroup) {
            error!(
                "{} was made again as {}, but attaching to its cgroup {} failed: {e}",
                container.name(),
                moved.id,
                cgroup.display()
            );
            return;
        }
        container.moved_to(moved.id);
        self.tasks.moved_to(&cgroup, None);
        self.report.set_target(container.describe(), cgroup.clone());
        info!(
            container = container.name(),
            cgroup = %cgroup.display(),
            "re-attached to {} {:.1} ms after its cgroup appeared{}",
            container.describe(),
            ms_since(seen),
            by_timer(seen)
        );
    }

    /// `--pod-selector`: the programs go to the replacement pod's cgroup; events name it.
    fn move_to_pod(&mut self, t: &crate::targeting::kube::PodTarget) {
        let moved = self.kernel.switch_target(&t.cgroup);
        super::kube::log_move(t, &moved);
        if moved.is_ok() {
            if let Ok(mut d) = self.runtime.decoder().lock() {
                d.set_container(Some(t.pod.key()));
            }
            self.report.set_target(t.describe(), t.cgroup.clone());
            self.tasks.moved_to(&t.cgroup, Some(&t.pod.uid));
        }
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
            container: _,
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

/// Milliseconds since the watch saw the new directory.
fn ms_since(seen: &Seen) -> f64 {
    seen.at.elapsed().as_secs_f64() * 1000.0
}

/// Said of a wake-up by the backstop timer rather than the watch.
fn by_timer(seen: &Seen) -> &'static str {
    if seen.created.is_empty() {
        " (found by the periodic check)"
    } else {
        ""
    }
}
