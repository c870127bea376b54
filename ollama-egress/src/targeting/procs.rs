//! Finding processes by name and keeping them in the managed cgroup.

use std::{
    collections::HashSet,
    fs,
    path::{Path, PathBuf},
};

use super::{TargetError, move_process};

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

/// Moves processes named `name` into a cgroup, now and on every [`ProcessWatcher::scan`].
pub struct ProcessWatcher {
    name: String,
    cgroup: PathBuf,
    proc_root: PathBuf,
    moved: HashSet<u32>,
}

impl ProcessWatcher {
    /// A watcher for `name` that moves processes into `cgroup`.
    pub fn new(name: &str, cgroup: &Path) -> Self {
        Self {
            name: name.to_owned(),
            cgroup: cgroup.to_owned(),
            proc_root: PathBuf::from("/proc"),
            moved: HashSet::new(),
        }
    }

    /// Moves every matching process not yet in the cgroup; returns the pids moved now. A process
    /// that exits between the scan and the move is skipped.
    pub fn scan(&mut self) -> Result<Vec<u32>, TargetError> {
        let found = find_processes_by_comm(&self.proc_root, &self.name);
        let live: HashSet<u32> = found.iter().copied().collect();
        self.moved.retain(|p| live.contains(p));
        let mut now = Vec::new();
        for pid in found {
            if self.moved.contains(&pid) {
                continue;
            }
            match move_process(&self.cgroup, pid) {
                Ok(()) => {
                    self.moved.insert(pid);
                    now.push(pid);
                }
                Err(e) if !self.proc_root.join(pid.to_string()).exists() => {
                    tracing::debug!(pid, error = %e, "process exited before it could be moved");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_by_comm_in_a_fake_proc() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (pid, comm) in [
            (10, "ollama"),
            (11, "bash"),
            (12, "ollama"),
            (13, "ollama_llama_se"),
        ] {
            let d = dir.path().join(pid.to_string());
            fs::create_dir_all(&d).expect("mkdir");
            fs::write(d.join("comm"), format!("{comm}\n")).expect("write");
        }
        fs::create_dir_all(dir.path().join("self")).expect("mkdir");
        assert_eq!(find_processes_by_comm(dir.path(), "ollama"), vec![10, 12]);
        // Names longer than 15 bytes match the kernel's truncated comm.
        assert_eq!(
            find_processes_by_comm(dir.path(), "ollama_llama_server"),
            vec![13]
        );
        assert!(find_processes_by_comm(dir.path(), "nginx").is_empty());
    }
}
