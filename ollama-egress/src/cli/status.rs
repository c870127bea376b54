//! `ollama-egress status`.

use std::{
    collections::{HashMap, HashSet},
    io::Write,
    os::unix::fs::DirEntryExt as _,
    path::{Path, PathBuf},
};

use clap::Args;

use crate::{
    daemon::{DaemonState, state::STATE_FILE},
    defaults,
    loader::{AttachPoint, MARK_LINKS, PinLayout, attached_program_ids, cgroup_id, sys},
    targeting::{self, unit},
};

/// Options of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Directory of the event log and the daemon's state.
    #[arg(long, value_name = "DIR", default_value = defaults::LOG_DIR)]
    pub log_dir: PathBuf,
    /// bpffs directory of the pinned enforcement.
    #[arg(long, value_name = "DIR", default_value = defaults::PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Why `status` could not report, or why it reports failure.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// A file that only root may read could not be read.
    #[error(
        "status needs root: it reads the daemon's state ({log_dir}/state.json, mode 0640) and asks the kernel about the links pinned in {pin_dir} (a root-only bpffs directory, opened with bpf(2)); reading {path} failed: {source}. Run it as root: `sudo ollama-egress status`"
    )]
    NeedsRoot {
        /// The log directory.
        log_dir: PathBuf,
        /// The pin directory.
        pin_dir: PathBuf,
        /// What could not be read.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// Reading a file failed for another reason.
    #[error("reading {path}: {source}")]
    Read {
        /// What could not be read.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The report was printed, and nothing verified enforces or monitors the target.
    #[error("not enforcing: {0}")]
    NotEnforcing(String),
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
    /// Where that cgroup is in the hierarchy now; `None` when it was removed (or the link is
    /// detached).
    pub cgroup: Option<PathBuf>,
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
    /// Every hook has a pinned link, and the kernel says each is attached to a cgroup that
    /// exists, the target's (the directory's inode) when the target is known.
    pub pinned_verified: bool,
    /// Pinned enforcement is attached and verified but no daemon runs: the kernel still
    /// enforces the last policy, and nothing records events until a daemon starts again.
    pub enforcing_without_daemon: bool,
    /// `--process` mode: the marking programs (exec, fork, exit tracepoints; socket
    /// create/release) pinned, and whether the kernel opens each.
    pub marking: Vec<(&'static str, bool)>,
    /// `--process` mode: the processes the kernel has marked as targets (from the pinned map).
    pub marked: Vec<u32>,
    /// What is not as it should be, one sentence each; empty when the target is enforced (or
    /// monitored) as reported. `status` exits non-zero when this is not empty.
    pub problems: Vec<String>,
}

fn read_err(args: &StatusArgs, path: &Path, source: std::io::Error) -> StatusError {
    if matches!(source.raw_os_error(), Some(libc::EACCES | libc::EPERM)) {
        StatusError::NeedsRoot {
            log_dir: args.log_dir.clone(),
            pin_dir: args.pin_dir.clone(),
            path: path.to_owned(),
            source,
        }
    } else {
        StatusError::Read {
            path: path.to_owned(),
            source,
        }
    }
}

impl StatusArgs {
    /// Builds the report, checking every claim with the kernel: which programs are attached
    /// to the daemon's cgroup, and for each pinned link, whether the cgroup it is attached to
    /// still exists and is the one now at the target's path (systemd removes a unit's cgroup
    /// and makes a new one at the same path on every restart).
    pub fn report(&self) -> Result<StatusReport, StatusError> {
        let layout = PinLayout::new(&self.pin_dir);
        let links_dir = self.pin_dir.join("links");
        match std::fs::read_dir(&links_dir) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(read_err(self, &links_dir, e)),
        }
        let mut problems = Vec::new();
        let mut pinned = Vec::new();
        for (point, info) in layout.links() {
            match info {
                Ok(info) => pinned.push(PinnedLink {
                    program: point.program_name(),
                    link_id: info.id,
                    prog_id: info.prog_id,
                    cgroup_id: info.cgroup_id,
                    cgroup: None,
                }),
                Err(e) => {
                    let path = layout.link(point);
                    if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) {
                        return Err(read_err(self, &path, e));
                    }
                    problems.push(format!(
                        "the pinned link {} cannot be read: {e}",
                        path.display()
                    ));
                }
            }
        }
        let daemon = DaemonState::read(&self.log_dir)
            .map_err(|e| read_err(self, &self.log_dir.join(STATE_FILE), e))?;
        let running = daemon.as_ref().is_some_and(DaemonState::daemon_alive);

        // Where each pinned link's cgroup is now.
        let ids: HashSet<u64> = pinned
            .iter()
            .map(|l| l.cgroup_id)
            .filter(|id| *id != 0)
            .collect();
        let found = match targeting::cgroup2_mount() {
            Ok(mount) => cgroup_paths(&mount, &ids),
            Err(e) => {
                if !ids.is_empty() {
                    problems.push(format!("cannot find the pinned links' cgroups: {e}"));
                }
                HashMap::new()
            }
        };
        for l in &mut pinned {
            l.cgroup = found.get(&l.cgroup_id).cloned();
        }
        let target = daemon.as_ref().map(|st| st.cgroup.clone());
        let target_id = target.as_deref().and_then(|t| cgroup_id(t).ok());
        if !pinned.is_empty() {
            pinned_problems(&pinned, target.as_deref(), target_id, &mut problems);
        }
        let process_mode = daemon
            .as_ref()
            .is_some_and(|st| st.target.starts_with("processes named"))
            || MARK_LINKS
                .iter()
                .any(|n| self.pin_dir.join("links").join(n).exists());
        let (marking, marked) = if process_mode {
            self.marking(&mut problems)
        } else {
            (Vec::new(), Vec::new())
        };
        let pinned_verified = !pinned.is_empty() && problems.is_empty();

        let (attached_verified, processes) = match daemon.as_ref().filter(|_| running) {
            Some(st) => {
                let ok = AttachPoint::ALL.iter().all(|p| {
                    let want = st.programs.iter().find(|(n, _)| n == p.program_name());
                    match (want, attached_program_ids(&st.cgroup, *p)) {
                        (Some((_, id)), Ok(ids)) => ids.contains(id),
                        _ => false,
                    }
                });
                if !ok {
                    problems.push(format!(
                        "the daemon (pid {}) runs, but the kernel does not list all its programs on {}",
                        st.pid,
                        st.cgroup.display()
                    ));
                }
                (ok, targeting::processes_in(&st.cgroup).unwrap_or_default())
            }
            None => (false, Vec::new()),
        };
        if !running && pinned.is_empty() {
            problems.push(format!(
                "no daemon runs and no enforcement is pinned in {}",
                self.pin_dir.display()
            ));
        }
        Ok(StatusReport {
            daemon,
            daemon_running: running,
            attached_verified,
            processes,
            enforcing_without_daemon: pinned_verified && !running,
            pinned_verified,
            pinned,
            marking,
            marked,
            problems,
        })
    }

    /// The `--process` marking links and the marked processes, from the pins.
    fn marking(&self, problems: &mut Vec<String>) -> (Vec<(&'static str, bool)>, Vec<u32>) {
        let links: Vec<(&'static str, bool)> = MARK_LINKS
            .iter()
            .map(|n| {
                let path = self.pin_dir.join("links").join(n);
                (*n, path.exists() && sys::obj_get(&path).is_ok())
            })
            .collect();
        let missing: Vec<&str> = links
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(n, _)| *n)
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "processes found by name are not marked in the kernel: no pinned {} link in {}",
                missing.join(", "),
                self.pin_dir.join("links").display()
            ));
        }
        let live: HashSet<u32> = targeting::all_processes(Path::new("/proc"))
            .into_iter()
            .map(|p| p.pid)
            .collect();
        let mut marked: Vec<u32> =
            aya::maps::MapData::from_pin(self.pin_dir.join("maps").join("TARGET_TASKS"))
                .ok()
                .and_then(|m| {
                    aya::maps::HashMap::<_, u32, u32>::try_from(aya::maps::Map::HashMap(m)).ok()
                })
                .map(|m| {
                    m.keys()
                        .filter_map(Result::ok)
                        .filter(|k| live.contains(k))
                        .collect()
                })
                .unwrap_or_default();
        marked.sort_unstable();
        (links, marked)
    }

    /// Prints the report.
    ///
    /// Fails (the process exits non-zero) after printing when [`StatusReport::problems`] is not
    /// empty: nothing verified enforces or monitors the target.
    pub fn run(&self, out: &mut dyn Write) -> anyhow::Result<()> {
        let r = self.report()?;
        if self.json {
            serde_json::to_writer_pretty(&mut *out, &r)?;
            writeln!(out)?;
        } else {
            self.print(&r, out)?;
        }
        if r.problems.is_empty() {
            Ok(())
        } else {
            Err(StatusError::NotEnforcing(r.problems.join("; ")).into())
        }
    }

    fn print(&self, r: &StatusReport, out: &mut dyn Write) -> anyhow::Result<()> {
        for p in &r.problems {
            writeln!(out, "NOT ENFORCING: {p}")?;
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
            if !r.marking.is_empty() {
                writeln!(
                    out,
                    "marked:    {:?} (processes the kernel judges as targets)",
                    r.marked
                )?;
            }
            let on = r.pinned.iter().map(|l| l.cgroup.as_deref());
            if let Some(text) = unit::pinned_restarts_text(on).filter(|_| r.marking.is_empty()) {
                writeln!(out, "restarts:  {text}")?;
            }
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
        if let Some(restarts) = st.restarts {
            let text = unit::restarts_text(restarts, &st.cgroup, r.daemon_running);
            writeln!(out, "restarts:  {text}")?;
        }
        if r.marking.is_empty() {
            writeln!(out, "processes: {:?}", r.processes)?;
        } else {
            writeln!(
                out,
                "marked:    {:?} (processes the kernel judges as targets)",
                r.marked
            )?;
        }
        for l in &r.pinned {
            writeln!(
                out,
                "pinned:    {:<9} link {} on cgroup id {} ({})",
                l.program,
                l.link_id,
                l.cgroup_id,
                l.cgroup
                    .as_ref()
                    .map_or("removed".to_owned(), |p| p.display().to_string())
            )?;
        }
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
        writeln!(out, "counters since start:")?;
        for (k, v) in &st.counters.entries() {
            writeln!(out, "  {k:<28} {v}")?;
        }
        Ok(())
    }
}

/// The problems of the pinned links: a hook without a link, a detached link, a link on a
/// removed cgroup, or on another cgroup than the target's.
fn pinned_problems(
    pinned: &[PinnedLink],
    target: Option<&Path>,
    target_id: Option<u64>,
    problems: &mut Vec<String>,
) {
    if pinned.len() < AttachPoint::ALL.len() {
        problems.push(format!(
            "only {} of the {} links are pinned",
            pinned.len(),
            AttachPoint::ALL.len()
        ));
    }
    for l in pinned {
        match (&l.cgroup, target, target_id) {
            _ if l.cgroup_id == 0 => {
                problems.push(format!(
                    "the pinned {} link is attached to no cgroup (its cgroup was removed): it enforces nothing",
                    l.program
                ));
            }
            (None, _, _) => problems.push(format!(
                "the pinned {} link is attached to cgroup id {}, which was removed: it enforces nothing (a restarted unit gets a new cgroup; start `ollama-egress run --enforce` to attach to it)",
                l.program, l.cgroup_id
            )),
            (Some(_), Some(t), None) => problems.push(format!(
                "the target cgroup {} does not exist; the pinned {} link is on cgroup id {}",
                t.display(),
                l.program,
                l.cgroup_id
            )),
            (Some(p), Some(t), Some(id)) if id != l.cgroup_id => problems.push(format!(
                "the pinned {} link is on cgroup id {} ({}), not on the target {} (id {id})",
                l.program,
                l.cgroup_id,
                p.display(),
                t.display()
            )),
            _ => {}
        }
    }
}

/// The paths of the cgroups with the given ids (directory inodes) under `mount`.
fn cgroup_paths(mount: &Path, ids: &HashSet<u64>) -> HashMap<u64, PathBuf> {
    /// Bounds of the walk: deeper than any real hierarchy, and finite on a huge one.
    const MAX_DEPTH: usize = 32;
    const MAX_DIRS: usize = 200_000;
    let mut found = HashMap::new();
    if ids.is_empty() {
        return found;
    }
    if let Ok(id) = cgroup_id(mount)
        && ids.contains(&id)
    {
        found.insert(id, mount.to_owned());
    }
    let mut stack = vec![(mount.to_owned(), 0usize)];
    let mut visited = 0;
    while let Some((dir, depth)) = stack.pop() {
        visited += 1;
        if visited > MAX_DIRS || found.len() == ids.len() {
            break;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if ids.contains(&e.ino()) {
                found.insert(e.ino(), e.path());
            }
            if depth < MAX_DEPTH {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    found
}
