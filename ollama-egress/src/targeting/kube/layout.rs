//! Where kubelet puts a pod's cgroup and its containers' cgroups, for both cgroup drivers, and
//! the reverse: which pod and container a cgroup path (a `/proc/PID/cgroup` line) belongs to.
//!
//! systemd driver: `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`
//! (besteffort likewise, guaranteed pods directly as `kubepods.slice/kubepods-pod<uid>.slice`;
//! the uid's `-` written `_`), containers in `cri-containerd-<id>.scope`, `crio-<id>.scope` or
//! `docker-<id>.scope`. cgroupfs driver: `kubepods/burstable/pod<uid>`, `kubepods/pod<uid>`,
//! containers in `<id>` (or `crio-<id>`). Some set-ups nest these under another cgroup (kubelet's
//! `--cgroup-root`, kind's `kubelet.slice/kubelet-kubepods.slice/...`): the reverse reading
//! takes the pod component wherever it is, and [`find_pod_cgroup`] searches when the usual
//! places have nothing.

use std::{
    fmt, fs,
    path::{Path, PathBuf},
};

/// The cgroup driver kubelet runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// `--cgroup-driver=systemd`: slices and scopes.
    Systemd,
    /// `--cgroup-driver=cgroupfs`: plain directories.
    Cgroupfs,
}

/// A pod's QoS class (`status.qosClass`), which places its cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QosClass {
    /// Requests equal limits for every container: directly under `kubepods`.
    Guaranteed,
    /// Under `kubepods/burstable`.
    Burstable,
    /// No requests or limits: under `kubepods/besteffort`.
    BestEffort,
}

impl QosClass {
    /// The API's word for it (`Guaranteed`, `Burstable`, `BestEffort`).
    pub fn from_api(s: &str) -> Option<Self> {
        match s {
            "Guaranteed" => Some(Self::Guaranteed),
            "Burstable" => Some(Self::Burstable),
            "BestEffort" => Some(Self::BestEffort),
            _ => None,
        }
    }

    /// The QoS level's directory word, none for guaranteed pods.
    fn word(self) -> Option<&'static str> {
        match self {
            Self::Guaranteed => None,
            Self::Burstable => Some("burstable"),
            Self::BestEffort => Some("besteffort"),
        }
    }
}

impl fmt::Display for QosClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Guaranteed => "Guaranteed",
            Self::Burstable => "Burstable",
            Self::BestEffort => "BestEffort",
        })
    }
}

/// The container runtime whose naming a container's cgroup has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// containerd's CRI plugin: `cri-containerd-<id>.scope`.
    Containerd,
    /// CRI-O: `crio-<id>.scope` (cgroupfs: `crio-<id>`).
    Crio,
    /// Docker through cri-dockerd: `docker-<id>.scope`.
    Docker,
    /// A bare `<id>` directory (cgroupfs driver, containerd or Docker): the name does not say.
    Unnamed,
}

impl Runtime {
    /// The runtime's word, as shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Containerd => "containerd",
            Self::Crio => "cri-o",
            Self::Docker => "docker",
            Self::Unnamed => "unnamed",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::Containerd => "cri-containerd-",
            Self::Crio => "crio-",
            Self::Docker => "docker-",
            Self::Unnamed => "",
        }
    }
}

/// A pod's cgroup as read from a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodCgroup {
    /// The driver its naming shows.
    pub driver: Driver,
    /// Its QoS class.
    pub qos: QosClass,
    /// The pod's uid, with `-` (as the API writes it).
    pub uid: String,
    /// The pod cgroup's path relative to the cgroup v2 root.
    pub path: String,
    /// The container, when the path goes into one.
    pub container: Option<ContainerCgroup>,
}

/// A container's cgroup inside a pod's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerCgroup {
    /// The runtime its name shows.
    pub runtime: Runtime,
    /// The container id (hex), as in the pod's `status.containerStatuses[].containerID` after
    /// `runtime://`.
    pub id: String,
}

/// Whether `uid` is one the API gives pods (a UUID: hex digits and `-`).
pub fn valid_uid(uid: &str) -> bool {
    (8..=64).contains(&uid.len())
        && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        && uid.bytes().any(|b| b.is_ascii_hexdigit())
}

/// The pod cgroup's path relative to the cgroup v2 root, for a driver.
pub fn pod_cgroup_path(driver: Driver, uid: &str, qos: QosClass) -> PathBuf {
    match driver {
        Driver::Systemd => {
            let uid = uid.replace('-', "_");
            match qos.word() {
                None => PathBuf::from(format!("kubepods.slice/kubepods-pod{uid}.slice")),
                Some(w) => PathBuf::from(format!(
                    "kubepods.slice/kubepods-{w}.slice/kubepods-{w}-pod{uid}.slice"
                )),
            }
        }
        Driver::Cgroupfs => match qos.word() {
            None => PathBuf::from(format!("kubepods/pod{uid}")),
            Some(w) => PathBuf::from(format!("kubepods/{w}/pod{uid}")),
        },
    }
}

/// A container cgroup's directory name inside its pod's.
pub fn container_dir_name(driver: Driver, runtime: Runtime, id: &str) -> String {
    match (driver, runtime) {
        (_, Runtime::Unnamed) => id.to_owned(),
        (Driver::Systemd, r) => format!("{}{id}.scope", r.prefix()),
        (Driver::Cgroupfs, r) => format!("{}{id}", r.prefix()),
    }
}

/// The directories pod cgroups appear in (the QoS levels of both drivers) that exist under
/// `mount`: what a follower watches.
pub fn pod_parent_dirs(mount: &Path) -> Vec<PathBuf> {
    [
        "kubepods.slice",
        "kubepods.slice/kubepods-burstable.slice",
        "kubepods.slice/kubepods-besteffort.slice",
        "kubepods",
        "kubepods/burstable",
        "kubepods/besteffort",
    ]
    .iter()
    .map(|p| mount.join(p))
    .filter(|p| p.is_dir())
    .collect()
}

/// The pod's cgroup under `mount`: the usual place for either driver, else (nested set-ups)
/// a directory named for the pod found within a few levels. `None` when it does not exist (yet).
pub fn find_pod_cgroup(mount: &Path, uid: &str, qos: QosClass) -> Option<PathBuf> {
    if !valid_uid(uid) {
        return None;
    }
    for driver in [Driver::Systemd, Driver::Cgroupfs] {
        let p = mount.join(pod_cgroup_path(driver, uid, qos));
        if p.join("cgroup.procs").is_file() {
            return Some(p);
        }
    }
    search(mount, uid, 0)
}

const SEARCH_DEPTH: usize = 5;

fn search(dir: &Path, uid: &str, depth: usize) -> Option<PathBuf> {
    let entries = fs::read_dir(dir).ok()?;
    let mut subdirs = Vec::new();
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if pod_component(name, None).is_some_and(|(_, _, u)| u == uid) {
            return Some(entry.path());
        }
        // Only cgroups that can hold pods are walked: kubelet's and their parents' names.
        if depth < SEARCH_DEPTH && (name.contains("kube") || name.ends_with(".slice")) {
            subdirs.push(entry.path());
        }
    }
    subdirs.iter().find_map(|d| search(d, uid, depth + 1))
}

/// Reads a pod directory's name: its driver, QoS class (when the name or `parent` says) and
/// uid. `parent` is the directory above, for cgroupfs names (`burstable`, `besteffort`).
fn pod_component(name: &str, parent: Option<&str>) -> Option<(Driver, QosClass, String)> {
    if let Some(stem) = name.strip_suffix(".slice") {
        // `…kubepods-pod<uid>`, `…kubepods-burstable-pod<uid>`, `…kubepods-besteffort-pod<uid>`.
        let (head, uid) = stem.rsplit_once("-pod")?;
        let qos = if head.ends_with("kubepods-burstable") {
            QosClass::Burstable
        } else if head.ends_with("kubepods-besteffort") {
            QosClass::BestEffort
        } else if head.ends_with("kubepods") {
            QosClass::Guaranteed
        } else {
            return None;
        };
        let uid = uid.replace('_', "-");
        return valid_uid(&uid).then_some((Driver::Systemd, qos, uid));
    }
    let uid = name.strip_prefix("pod")?;
    if !valid_uid(uid) {
        return None;
    }
    let qos = match parent {
        Some("burstable") => QosClass::Burstable,
        Some("besteffort") => QosClass::BestEffort,
        _ => QosClass::Guaranteed,
    };
    Some((Driver::Cgroupfs, qos, uid.to_owned()))
}

/// Reads a container directory's name inside a pod's.
fn container_component(name: &str) -> Option<ContainerCgroup> {
    let hex = |s: &str| s.len() >= 12 && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let stem = name.strip_suffix(".scope").unwrap_or(name);
    for runtime in [Runtime::Containerd, Runtime::Crio, Runtime::Docker] {
        if let Some(id) = stem.strip_prefix(runtime.prefix()) {
            return hex(id).then(|| ContainerCgroup {
                runtime,
                id: id.to_owned(),
            });
        }
    }
    (hex(stem) && stem.len() == name.len()).then(|| ContainerCgroup {
        runtime: Runtime::Unnamed,
        id: stem.to_owned(),
    })
}

/// Which pod (and container) a cgroup v2 path relative to the root belongs to.
pub fn parse_cgroup_path(path: &str) -> Option<PodCgroup> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return None;
    }
    let (i, (driver, qos, uid)) = parts.iter().enumerate().find_map(|(i, name)| {
        let parent = i.checked_sub(1).map(|j| parts[j]);
        Some((i, pod_component(name, parent)?))
    })?;
    // A cgroupfs pod sits in `kubepods` or one of its QoS levels.
    if driver == Driver::Cgroupfs {
        let under_kubepods = match qos {
            QosClass::Guaranteed => i >= 1 && parts[i - 1] == "kubepods",
            _ => i >= 2 && parts[i - 2] == "kubepods",
        };
        if !under_kubepods {
            return None;
        }
    }
    let container = parts.get(i + 1).and_then(|c| container_component(c));
    Some(PodCgroup {
        driver,
        qos,
        uid,
        path: parts[..=i].join("/"),
        container,
    })
}

/// Which pod (and container) a process belongs to, from its `/proc/PID/cgroup` text: the
/// cgroup v2 (`0::`) line, which hybrid hosts list among the v1 lines.
pub fn parse_proc_cgroup(text: &str) -> Option<PodCgroup> {
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    parse_cgroup_path(path.trim())
}

#[cfg(test)]
mod tests;
