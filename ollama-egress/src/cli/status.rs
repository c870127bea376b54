//! `ollama-egress status`.

use std::{io::Write, path::PathBuf};

use clap::Args;

use crate::{
    daemon::DaemonState,
    loader::{AttachPoint, attached_program_ids},
    logstore::DEFAULT_LOG_DIR,
    target,
};

/// Options of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Directory of the event log and the daemon's state.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_LOG_DIR)]
    pub log_dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
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
}

impl StatusArgs {
    /// Builds the report.
    pub fn report(&self) -> anyhow::Result<StatusReport> {
        let daemon = DaemonState::read(&self.log_dir)?;
        let Some(st) = daemon else {
            return Ok(StatusReport {
                daemon: None,
                daemon_running: false,
                attached_verified: false,
                processes: Vec::new(),
            });
        };
        let running = st.daemon_alive();
        let attached_verified = AttachPoint::ALL.iter().all(|p| {
            let want = st.programs.iter().find(|(n, _)| n == p.program_name());
            match (want, attached_program_ids(&st.cgroup, *p)) {
                (Some((_, id)), Ok(ids)) => ids.contains(id),
                _ => false,
            }
        });
        let processes = target::processes_in(&st.cgroup).unwrap_or_default();
        Ok(StatusReport {
            daemon: Some(st),
            daemon_running: running,
            attached_verified,
            processes,
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
            "policy:    {} (generation {})",
            st.policy, st.generation
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
        Ok(())
    }
}
