//! Finding processes by name and keeping them in the managed cgroup.

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
};

use super::{TargetError, sockets};

/// The kernel keeps at most 15 bytes of a task name.
const COMM_MAX: usize = 15;

/// Process ids whose `comm` equals `name` (compared as the kernel stores it: at most 15 bytes).
pub fn find_processes_by_comm(proc_root: &Path, name: &str) -> Vec<u32> {
    let want = truncate_comm(name);
    let Ok(entries) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(proc_root.join(pid.to_string()).join("comm"))
                .map(|c| c.trim_end_matches('\n') == want)
                .unwrap_or(false)
        })
        .collect();
    pids.sort_unstable();
    pids
}

fn truncate_comm(name: &str) -> &str {
    if name.len() <= COMM_MAX {
        return name;
    }
    let mut end = COMM_MAX;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Marked by a scan of `/proc` (the kernel marks with 1 at exec and 2 at fork).
const MARK_SCAN: u32 = 3;

/// One process as `/proc/PID/stat` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// Its pid.
    pub pid: u32,
    /// Its parent's pid.
    pub ppid: u32,
    /// Its name.
    pub comm: String,
    /// When it started, in clock ticks after boot: with the pid, it names one process (a pid
    /// can be reused, a (pid, start time) pair cannot).
    pub start: u64,
}

/// Parses `/proc/PID/stat` (the name may hold spaces and parentheses: it ends at the last `)`).
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // After the name: state (3), ppid (4), ... starttime (22).
    let ppid = rest.get(1)?.parse().ok()?;
    let start = rest.get(19)?.parse().ok()?;
    Some(ProcStat {
        pid,
        ppid,
        comm,
        start,
    })
}

fn read_stat(proc_root: &Path, pid: u32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?)
}

/// Every process in a `/proc`.
pub fn all_processes(proc_root: &Path) -> Vec<ProcStat> {
    let Ok(entries) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| read_stat(proc_root, pid))
        .collect()
}

/// The pids to mark: processes named `name`, processes already `marked`, and every
/// descendant of either (children forked under another name, before anything was marked).
pub fn targets(procs: &[ProcStat], name: &str, marked: &HashSet<u32>) -> Vec<u32> {
    let want = truncate_comm(name);
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut out: HashSet<u32> = HashSet::new();
    let mut stack: Vec<u32> = procs
        .iter()
        .filter(|p| p.comm == want || marked.contains(&p.pid))
        .map(|p| p.pid)
        .collect();
    while let Some(pid) = stack.pop() {
        if out.insert(pid)
            && let Some(kids) = children.get(&pid)
        {
            stack.extend(kids.iter().copied());
        }
    }
    let mut v: Vec<u32> = out.into_iter().collect();
    v.sort_unstable();
    v
}

/// Marks processes named `name` (and their descendants) as targets in the kernel, now and on
/// every [`ProcessWatcher::scan`]. The kernel marks new ones itself at exec and fork; the scan
/// catches what ran before the marking programs were attached (and a process that renamed
/// itself after exec).
pub struct ProcessWatcher {
    name: String,
    proc_root: PathBuf,
    marks: MarkMap,
    socks: SockMap,
}

/// The kernel's map of marked tasks.
pub type MarkMap = aya::maps::HashMap<aya::maps::MapData, u32, u32>;
/// The kernel's map of the marked tasks' sockets, by cookie.
pub type SockMap = aya::maps::HashMap<aya::maps::MapData, u64, u32>;

impl ProcessWatcher {
    /// A watcher for `name` that marks processes in `marks` and records the sockets they
    /// already have in `socks`.
    pub fn new(name: &str, marks: MarkMap, socks: SockMap) -> Self {
        Self {
            name: name.to_owned(),
            proc_root: PathBuf::from("/proc"),
            marks,
            socks,
        }
    }

    /// Records the sockets process `pid` already has, so the packet programs judge them too
    /// (a socket made before the mark passed no hook that could record it). Returns how many.
    fn adopt_sockets(&mut self, pid: u32) -> usize {
        let cookies = match sockets::cookies(&self.proc_root, pid) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(
                    pid,
                    "cannot read the sockets process {pid} already has ({e}): the packet backstop does not judge them"
                );
                return 0;
            }
        };
        let mut n = 0;
        for cookie in cookies {
            match self.socks.insert(cookie, MARK_SCAN, 0) {
                Ok(()) => n += 1,
                Err(e) => tracing::warn!(pid, "recording a socket of process {pid}: {e}"),
            }
        }
        n
    }

    /// Marks every matching process the kernel has not marked; returns the pids marked now. A
    /// pid is marked only if it names the same process (same start time) after the mark was
    /// written, so a pid reused meanwhile is not marked by mistake.
    pub fn scan(&mut self) -> Result<Vec<u32>, TargetError> {
        let procs = all_processes(&self.proc_root);
        let marked: HashSet<u32> = self.marks.keys().filter_map(Result::ok).collect();
        let by_pid: HashMap<u32, &ProcStat> = procs.iter().map(|p| (p.pid, p)).collect();
        let mut now = Vec::new();
        for pid in targets(&procs, &self.name, &marked) {
            if marked.contains(&pid) {
                continue;
            }
            let Some(before) = by_pid.get(&pid) else {
                continue;
            };
            self.marks
                .insert(pid, MARK_SCAN, 0)
                .map_err(|e| TargetError::Mark {
                    pid,
                    source: std::io::Error::other(e),
                })?;
            match read_stat(&self.proc_root, pid) {
                Some(after) if after.start == before.start => {
                    let n = self.adopt_sockets(pid);
                    tracing::debug!(pid, sockets = n, "marked a running process");
                    now.push(pid);
                }
                _ => {
                    // Exited, or the pid now names another process: undo our mark (a mark the
                    // kernel wrote meanwhile, at fork, stays).
                    if self.marks.get(&pid, 0).ok() == Some(MARK_SCAN) {
                        let _ = self.marks.remove(&pid);
                    }
                    tracing::debug!(pid, "process exited before it could be marked");
                }
            }
        }
        Ok(now)
    }
}

#[cfg(test)]
mod tests;
