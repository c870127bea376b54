//! What the audit looked at, gathered once ([`super::gather`]) and judged by the pure checks of
//! [`super::checks`]: every check is a function of these facts only.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use crate::{loader::AttachPoint, model::Action};

/// Everything the checks judge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// The target as picked, e.g. `cgroup /sys/fs/cgroup/ollama`.
    pub target: String,
    /// Its cgroup v2 directory (the cgroup v2 root for processes found by name).
    pub cgroup: PathBuf,
    /// The systemd unit the target is, when it is one (`--unit`, a `*.service` cgroup).
    pub unit: Option<String>,
    /// The target's processes.
    pub processes: Vec<ProcessFacts>,
    /// TCP sockets of the target's processes in the listening state, each once.
    pub listeners: Vec<Listener>,
    /// The policy that `run` would enforce.
    pub policy: PolicyFacts,
    /// What the kernel has attached to the target's cgroup and what is pinned.
    pub enforcement: Enforcement,
    /// The unit's sandboxing, as systemd reports it.
    pub systemd: Systemd,
    /// The geo databases `run` would use.
    pub geo: Vec<GeoDbFacts>,
    /// When the audit ran, seconds since the Unix epoch.
    pub now: u64,
}

/// One process of the target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessFacts {
    /// Its pid.
    pub pid: u32,
    /// Its name (`/proc/PID/comm`).
    pub comm: String,
    /// Its effective user id.
    pub uid: u32,
    /// The variables of its environment the checks read ([`ENV_VARS`]), as set.
    pub env: BTreeMap<String, String>,
}

/// The environment variables the audit reads; nothing else of a process's environment is
/// kept (it may hold secrets).
pub const ENV_VARS: [&str; 3] = ["OLLAMA_HOST", "OLLAMA_ORIGINS", "OLLAMA_NO_CLOUD"];

/// A listening TCP socket of the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// The local address and port.
    pub addr: SocketAddr,
    /// The socket's inode.
    pub inode: u64,
    /// The processes that hold it.
    pub pids: Vec<u32>,
}

/// The policy, as far as the checks need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyFacts {
    /// The file, or `built-in`.
    pub origin: String,
    /// The outbound `default`.
    pub default: Action,
    /// Whether the file has an `[inbound]` table.
    pub inbound: bool,
    /// Whether any rule names countries or ASNs (they need the geo databases).
    pub uses_geo: bool,
}

impl Default for PolicyFacts {
    fn default() -> Self {
        Self {
            origin: crate::policy::Policy::BUILTIN_ORIGIN.to_owned(),
            default: Action::Deny,
            inbound: false,
            uses_geo: false,
        }
    }
}

/// How the target's cgroup is watched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Enforcement {
    /// The pin directory looked in.
    pub pin_dir: PathBuf,
    /// Hooks (of [`HOOKS`]) whose pinned link is attached to the target's cgroup.
    pub pinned: Vec<&'static str>,
    /// Hooks (of [`HOOKS`]) the kernel lists at least one program for on the target's cgroup.
    pub attached: Vec<&'static str>,
    /// Why the kernel could not be asked, when it could not.
    pub error: Option<String>,
}

/// The hooks enforcement consists of, by program name: every attach point the loader pins.
pub const HOOKS: [&str; AttachPoint::ALL.len()] = {
    let mut names = [""; AttachPoint::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = AttachPoint::ALL[i].program_name();
        i += 1;
    }
    names
};

/// The unit's sandboxing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Systemd {
    /// systemd is not the init system here (no `/run/systemd/system`).
    #[default]
    NotRunning,
    /// systemd runs, but the target is not a unit.
    NotAUnit,
    /// `systemctl show` failed.
    Failed {
        /// The unit.
        unit: String,
        /// What went wrong.
        detail: String,
    },
    /// The unit's properties (`systemctl show -p ...`).
    Unit {
        /// The unit.
        unit: String,
        /// Property name → value.
        props: BTreeMap<String, String>,
    },
}

/// One geo database file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeoDbFacts {
    /// `country` or `asn`.
    pub kind: &'static str,
    /// The file.
    pub path: PathBuf,
    /// Its build time (mmdb metadata), seconds since the Unix epoch.
    pub built: u64,
}
