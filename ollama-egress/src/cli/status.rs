//! `ollama-egress status`.

use std::{io::Write, path::PathBuf};

use clap::Args;

use crate::{
    daemon::DaemonState,
    loader::{AttachPoint, PinLayout, attached_program_ids},
    logstore::DEFAULT_LOG_DIR,
    targeting,
};

/// Options of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Directory of the event log and the daemon's state.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_LOG_DIR)]
    pub log_dir: PathBuf,
    /// bpffs directory of the pinned enforcement.
    #[arg(long, value_name = "DIR", default_value = crate::loader::DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// One pinned link, as the kernel describes it.
#[derive(Debug, serde::Serialize)]
pub struct PinnedLink {
    /// The program's name.
    pub program: &'static str,
    /// The kernel's link id.
    pub link_id: u32,
    /// The program it runs.
    pub prog_id: u32,
    /// The cgroup it is attached to; 0 when detached.
    pub cgroup_id: u64,
}

/// What `status` reports.
#[derive(Debug, serde::Serialize)]
pub struct StatusReport {
    /// The daemon's recorded state, if a daemon wrote one.
    pub daemon: Option<DaemonState>,
    /// Whether that daemon is alive.
    pub daemon_running: bool,
    /// Whether the kernel lists every program of the daemon on its cgroup.
    pub attached_verified: bool,
    /// Processes in the target cgroup.
    pub processes: Vec<u32>,
    /// Links pinned in the pin directory (enforcement that outlives the daemon).
    pub pinned: Vec<PinnedLink>,
    /// Pinned enforcement is attached but no daemon runs: the kernel still enforces the last
    /// policy, and nothing records events until a daemon starts again.
    pub enforcing_without_daemon: bool,
}

impl StatusArgs {
    /// Builds the report.
    pub fn report(&self) -> anyhow::Result<StatusReport> {
        let pinned: Vec<PinnedLink> = PinLayout::new(&self.pin_dir)
            .links()
            .into_iter()
            .filter_map(|(p, info)| {
                let info = info.ok()?;
                Some(PinnedLink {
                    program: p.program_name(),
                    link_id: info.id,
                    prog_id: info.prog_id,
                    cgroup_id: info.cgroup_id,
                })
            })
            .collect();
        let pinned_attached = !pinned.is_empty() && pinned.iter().all(|l| l.cgroup_id != 0);
        let daemon = DaemonState::read(&self.log_dir)?;
        let Some(st) = daemon else {
            return Ok(StatusReport {
                daemon: None,
                daemon_running: false,
                attached_verified: false,
                processes: Vec::new(),
                enforcing_without_daemon: pinned_attached,
                pinned,
            });
        };
        let running = st.daemon_alive();
        if !running {
            return Ok(StatusReport {
                daemon: Some(st),
                daemon_running: false,
                attached_verified: false,
                processes: Vec::new(),
                enforcing_without_daemon: pinned_attached,
                pinned,
            });
        }
        let attached_verified = AttachPoint::ALL.iter().all(|p| {
            let want = st.programs.iter().find(|(n, _)| n == p.program_name());
            match (want, attached_program_ids(&st.cgroup, *p)) {
                (Some((_, id)), Ok(ids)) => ids.contains(id),
                _ => false,
            }
        });
        let processes = targeting::processes_in(&st.cgroup).unwrap_or_default();
        Ok(StatusReport {
            daemon: Some(st),
            daemon_running: running,
            attached_verified,
            processes,
            enforcing_without_daemon: pinned_attached && !running,
            pinned,
        })
    }

    /// Prints the report.
    pub fn run(&self, out: &mut dyn Write) -> anyhow::Result<()> {
        let r = self.report()?;
        if self.json {
            serde_json::to_writer_pretty(&mut *out, &r)?;
            writeln!(out)?;
            return Ok(());
        }
        if r.enforcing_without_daemon {
            writeln!(
                out,
                "ENFORCING WITHOUT A DAEMON: {} programs pinned in {} are attached and enforce the last policy; start `ollama-egress run --enforce` to record events again, or `ollama-egress detach` to stop",
                r.pinned.len(),
                self.pin_dir.display()
            )?;
        }
        let Some(st) = &r.daemon else {
            writeln!(
                out,
                "no daemon state in {}: ollama-egress run is not running",
                self.log_dir.display()
            )?;
            return Ok(());
        };
        writeln!(
            out,
            "daemon:    pid {} ({})",
            st.pid,
            if r.daemon_running {
                "running"
            } else {
                "not running"
            }
        )?;
        writeln!(out, "mode:      {}", st.mode)?;
        writeln!(out, "target:    {} ({})", st.target, st.cgroup.display())?;
        writeln!(out, "processes: {:?}", r.processes)?;
        writeln!(
            out,
            "policy:    {} (generation {}): {} rules; IPv4 {} allow / {} deny, IPv6 {} allow / {} deny prefixes",
            st.policy,
            st.generation,
            st.rules,
            st.prefixes.ipv4.allow,
            st.prefixes.ipv4.deny,
            st.prefixes.ipv6.allow,
            st.prefixes.ipv6.deny
        )?;
        writeln!(
            out,
            "attached:  {}",
            if r.attached_verified {
                "verified by the kernel"
            } else {
                "NOT attached"
            }
        )?;
        writeln!(
            out,
            "log:       {}",
            self.log_dir.join(crate::logstore::EVENTS_FILE).display()
        )?;
        let db = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or("none".to_owned(), |p| p.display().to_string())
        };
        writeln!(
            out,
            "geo:       country {}, asn {}",
            db(&st.geo_db),
            db(&st.asn_db)
        )?;
        if let Some(addr) = &st.metrics_addr {
            writeln!(out, "metrics:   http://{addr}/metrics")?;
        }
        if !st.counters.is_empty() {
            writeln!(out, "counters since start:")?;
            for (k, v) in &st.counters {
                writeln!(out, "  {k:<28} {v}")?;
            }
        }
        Ok(())
    }
}
