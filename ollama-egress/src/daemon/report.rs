//! What a running daemon reports: the state file `status` reads, the metrics, and the event
//! tallies the sink keeps. Nothing here is fatal: a state file that cannot be written is
//! warned about.

use std::{path::PathBuf, sync::Arc};

use tracing::warn;

use super::{DaemonState, EventTally};
use crate::{
    loader::CounterSnapshot,
    metrics::Metrics,
    model::{Direction, Verdict},
    policy::CompiledPolicy,
    targeting::unit::Restarts,
};

/// The state file, the metrics and the tallies.
pub(super) struct Report {
    log_dir: PathBuf,
    state: DaemonState,
    metrics: Arc<Metrics>,
    tally: Arc<EventTally>,
}

impl Report {
    /// Reports `state` into `log_dir` (already written once by the start).
    pub(super) fn new(
        log_dir: PathBuf,
        state: DaemonState,
        metrics: Arc<Metrics>,
        tally: Arc<EventTally>,
    ) -> Self {
        Self {
            log_dir,
            state,
            metrics,
            tally,
        }
    }

    /// A new policy generation is in force.
    pub(super) fn reloaded(&mut self, generation: u32, compiled: CompiledPolicy) {
        let summary = compiled.summary();
        self.metrics.reload(true);
        self.metrics.set_policy(&summary);
        self.state.generation = generation;
        self.state.policy = compiled.origin;
        self.state.rules = compiled.rules.len();
        self.state.prefixes = summary.prefixes;
        self.write_state();
    }

    /// The target moved (a container re-created under a new id, a Kubernetes pod replaced):
    /// the state file says so.
    pub(super) fn set_target(&mut self, target: String, cgroup: PathBuf) {
        self.state.target = target;
        self.state.cgroup = cgroup;
        self.write_state();
    }

    /// The programs moved to `cgroup` (a unit entered its slice, or runs outside it).
    pub(super) fn retargeted(&mut self, cgroup: PathBuf, restarts: Restarts) {
        self.state.cgroup = cgroup;
        self.state.restarts = Some(restarts);
        self.write_state();
    }

    /// A reload failed; the policy in force stays.
    pub(super) fn reload_failed(&self) {
        self.metrics.reload(false);
    }

    /// The names table's live (address, name) pairs and the names evicted for room so far.
    pub(super) fn set_dns_bindings(&self, pairs: usize, evicted: u64) {
        self.metrics.set_dns_bindings(pairs, evicted);
    }

    /// Whether the programs are enforcing now.
    pub(super) fn set_enforcing(&self, enforcing: bool) {
        self.metrics.set_enforcing(enforcing);
    }

    /// Refreshes the counters (the kernel's snapshot, when it could be read, and the tallies)
    /// and writes the state file.
    pub(super) fn refresh(&mut self, snap: Option<&CounterSnapshot>) {
        if let Some(snap) = snap {
            self.metrics.set_kernel(snap);
            self.take_kernel_counters(snap);
        }
        self.tally.fill(&mut self.state.counters);
        self.write_state();
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
        if let Err(e) = self.state.write(&self.log_dir) {
            warn!(error = %e, "could not update the state file");
        }
    }

    /// Removes the state file: the daemon is gone.
    pub(super) fn remove_state(&self) {
        if let Err(e) = DaemonState::remove(&self.log_dir) {
            warn!(error = %e, "could not remove the state file");
        }
    }
}
