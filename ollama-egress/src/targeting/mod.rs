//! What to attach to: the cgroup v2 mount, a cgroup path, a systemd unit's slice or cgroup, a
//! managed cgroup that processes found by name are moved into, a container's, a Kubernetes
//! pod's.

pub mod auto;
pub mod containers;
pub mod follow;
pub mod kube;
mod marks;
mod procs;
mod sockets;
pub mod unit;
mod watch;

use std::{
    fs, io,
    path::{Path, PathBuf},
};

pub use marks::{comm_bytes, ensure_tracefs, mark_offsets};
pub use procs::{
    MarkMap, ProcStat, ProcessWatcher, SockMap, all_processes, find_processes_by_comm, parse_stat,
    targets,
};
pub use watch::{CgroupWatch, FOLLOW_INTERVAL, Seen};

/// Errors of finding or preparing the target cgroup.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// `/proc/self/mountinfo` lists no cgroup2 file system.
    #[error(
        "no cgroup v2 file system is mounted (none in /proc/self/mountinfo); mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`"
    )]
    NoCgroup2,
    /// Reading a system file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The `--cgroup` path is not a directory of the cgroup v2 hierarchy.
    #[error("{path} is not a cgroup v2 directory (the cgroup v2 hierarchy is mounted at {mount})")]
    NotCgroup2 {
        /// The path given.
        path: PathBuf,
        /// The cgroup2 mount point.
        mount: PathBuf,
    },
    /// No cgroup of that systemd unit exists.
    #[error(
        "no cgroup for unit {unit} under {mount}: is the unit running? (`systemctl status {unit}`)"
    )]
    UnitNotFound {
        /// The unit name.
        unit: String,
        /// The cgroup2 mount point.
        mount: PathBuf,
    },
    /// Marking a process as a target in the kernel failed.
    #[error("marking process {pid} as a target: {source}")]
    Mark {
        /// The process.
        pid: u32,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// Mounting tracefs (for the exec, fork and exit tracepoints) failed.
    #[error(
        "--process needs tracefs for its exec/fork/exit tracepoints, and mounting it at {path} failed: {detail}; mount it with `mount -t tracefs nodev {path}`"
    )]
    Tracefs {
        /// Where it was to be mounted.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// Finding a container failed.
    #[error(transparent)]
    Container(#[from] containers::ContainerError),
    /// Finding the Kubernetes pod failed.
    #[error(transparent)]
    Kube(#[from] kube::KubeError),
    /// Creating the managed cgroup or moving a process into it failed.
    #[error("{what} {path}: {source}")]
    Write {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The target as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    /// A cgroup v2 directory.
    Cgroup(PathBuf),
    /// A systemd unit, e.g. `ollama.service`.
    Unit(String),
    /// Processes whose `comm` is this name, moved into the managed cgroup.
    Process(String),
    /// A Docker or Podman container, by name or id.
    Container(String),
    /// The one pod on this Kubernetes node that a label selector matches.
    Pod(kube::PodSpec),
    /// None given: picked at start-up ([`auto::choose`]).
    Auto,
}

impl std::fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cgroup(p) => write!(f, "cgroup {}", p.display()),
            Self::Unit(u) => write!(f, "unit {u}"),
            Self::Process(n) => write!(f, "processes named {n}"),
            Self::Container(c) => write!(f, "container {c}"),
            Self::Pod(p) => write!(f, "pod matching {}", p.selector),
            Self::Auto => write!(f, "automatic"),
        }
    }
}

/// The cgroup v2 mount point, read from `/proc/self/mountinfo`.
pub fn cgroup2_mount() -> Result<PathBuf, TargetError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(path).map_err(|source| TargetError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_cgroup2_mount(&text).ok_or(TargetError::NoCgroup2)
}

/// The first cgroup2 mount point in a mountinfo text.
pub fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mount_point = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks that `path` is a directory inside the cgroup v2 hierarchy mounted at `mount`.
pub fn check_cgroup_dir(path: &Path, mount: &Path) -> Result<PathBuf, TargetError> {
    let not = || TargetError::NotCgroup2 {
        path: path.to_owned(),
        mount: mount.to_owned(),
    };
    let canon = path.canonicalize().map_err(|_| not())?;
    let mount = mount.canonicalize().map_err(|_| not())?;
    if !canon.starts_with(&mount) || !canon.join("cgroup.procs").is_file() {
        return Err(not());
    }
    Ok(canon)
}

/// Finds the cgroup of a systemd unit (e.g. `system.slice/ollama.service`) under `mount`.
pub fn find_unit_cgroup(mount: &Path, unit: &str) -> Result<PathBuf, TargetError> {
    let unit = if unit.contains('.') {
        unit.to_owned()
    } else {
        format!("{unit}.service")
    };
    let mut stack = vec![(mount.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            let p = entry.path();
            if entry.file_name().to_str() == Some(unit.as_str()) {
                return Ok(p);
            }
            if depth < 4 {
                stack.push((p, depth + 1));
            }
        }
    }
    Err(TargetError::UnitNotFound {
        unit,
        mount: mount.to_owned(),
    })
}

/// Process ids in `cgroup` (not its children).
pub fn processes_in(cgroup: &Path) -> Result<Vec<u32>, TargetError> {
    let procs = cgroup.join("cgroup.procs");
    let text = fs::read_to_string(&procs).map_err(|source| TargetError::Read {
        path: procs,
        source,
    })?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

#[cfg(test)]
mod tests;
