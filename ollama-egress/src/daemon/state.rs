//! `<log-dir>/state.json`: what a running daemon is doing, for `status`.

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    model::{Direction, Verdict},
    policy::PrefixTotals,
    targeting::unit::Restarts,
};

/// File name of the state file inside the log directory.
pub const STATE_FILE: &str = "state.json";

/// The running daemon's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonState {
    /// Process id of the daemon.
    pub pid: u32,
    /// "monitor" or "enforce".
    pub mode: String,
    /// The target as given (`cgroup …`, `unit …`, `processes named …`).
    pub target: String,
    /// The cgroup the programs are attached to.
    pub cgroup: PathBuf,
    /// Where the policy came from (a path or "built-in").
    pub policy: String,
    /// Policy generation in force.
    pub generation: u32,
    /// Kernel ids of the loaded programs (cgroup and device), by program name.
    pub programs: Vec<(String, u32)>,
    /// When the daemon started (RFC 3339).
    pub started: String,
    /// Country database in use, if any.
    pub geo_db: Option<PathBuf>,
    /// ASN database in use, if any.
    pub asn_db: Option<PathBuf>,
    /// Number of rules of the policy in force (the default included).
    #[serde(default)]
    pub rules: usize,
    /// Prefixes per family and action in the kernel tables.
    #[serde(default)]
    pub prefixes: PrefixTotals,
    /// Where the metrics are served.
    #[serde(default)]
    pub metrics_addr: Option<String>,
    /// Counters since the daemon started (refreshed every few seconds).
    #[serde(default)]
    pub counters: Counters,
    /// For a unit: whether its restarts are covered (attached to its slice) or followed
    /// (attached to its own cgroup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<Restarts>,
}

/// Counts per verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerdictCounts {
    /// `allowed`.
    pub allowed: u64,
    /// `blocked`.
    pub blocked: u64,
    /// `would_block`.
    pub would_block: u64,
}

impl VerdictCounts {
    /// The count of `verdict`.
    pub fn get_mut(&mut self, verdict: Verdict) -> &mut u64 {
        match verdict {
            Verdict::Allowed => &mut self.allowed,
            Verdict::Blocked => &mut self.blocked,
            Verdict::WouldBlock => &mut self.would_block,
        }
    }
}

/// Counts per direction and verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionCounts {
    /// `egress`.
    pub egress: VerdictCounts,
    /// `ingress`.
    pub ingress: VerdictCounts,
}

impl DirectionCounts {
    /// The counts of `direction`.
    pub fn get_mut(&mut self, direction: Direction) -> &mut VerdictCounts {
        match direction {
            Direction::Outbound => &mut self.egress,
            Direction::Inbound => &mut self.ingress,
        }
    }
}

/// The counters of the state file. On disk they are one flat object keyed
/// `connections.<verdict>`, `packets.<direction>.<verdict>`, `bytes.<direction>.<verdict>`,
/// `events_lost`, `log_dropped` (directions and verdicts as the metric labels spell them); a
/// key missing from an older file reads as 0, an unknown one is ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "BTreeMap<String, u64>", from = "BTreeMap<String, u64>")]
pub struct Counters {
    /// Connection events seen, by verdict.
    pub connections: VerdictCounts,
    /// Packets the kernel counted.
    pub packets: DirectionCounts,
    /// Bytes the kernel counted.
    pub bytes: DirectionCounts,
    /// Events the ring buffer could not take.
    pub events_lost: u64,
    /// Log records lost to write errors.
    pub log_dropped: u64,
}

impl Counters {
    /// Every counter under its on-disk name: the one list both directions of the file use.
    fn named_mut(&mut self) -> Vec<(String, &mut u64)> {
        let mut out = Vec::new();
        let Self {
            connections,
            packets,
            bytes,
            events_lost,
            log_dropped,
        } = self;
        fn verdicts<'a>(
            prefix: &str,
            counts: &'a mut VerdictCounts,
            out: &mut Vec<(String, &'a mut u64)>,
        ) {
            let VerdictCounts {
                allowed,
                blocked,
                would_block,
            } = counts;
            for (v, c) in [
                (Verdict::Allowed, allowed),
                (Verdict::Blocked, blocked),
                (Verdict::WouldBlock, would_block),
            ] {
                out.push((format!("{prefix}.{}", v.as_str()), c));
            }
        }
        verdicts("connections", connections, &mut out);
        for (what, per_dir) in [("packets", packets), ("bytes", bytes)] {
            let DirectionCounts { egress, ingress } = per_dir;
            for (d, counts) in [(Direction::Outbound, egress), (Direction::Inbound, ingress)] {
                verdicts(&format!("{what}.{}", d.metric_label()), counts, &mut out);
            }
        }
        out.push(("events_lost".to_owned(), events_lost));
        out.push(("log_dropped".to_owned(), log_dropped));
        out
    }

    /// Every counter by its on-disk name, in name order (what `status` lists).
    pub fn entries(&self) -> BTreeMap<String, u64> {
        let mut copy = *self;
        copy.named_mut().into_iter().map(|(k, v)| (k, *v)).collect()
    }
}

impl From<Counters> for BTreeMap<String, u64> {
    fn from(c: Counters) -> Self {
        c.entries()
    }
}

impl From<BTreeMap<String, u64>> for Counters {
    fn from(map: BTreeMap<String, u64>) -> Self {
        let mut c = Counters::default();
        for (k, v) in c.named_mut() {
            if let Some(x) = map.get(&k) {
                *v = *x;
            }
        }
        c
    }
}

impl DaemonState {
    /// Writes the state atomically (a fresh temporary file, never a planted one, then a
    /// rename), mode 0640.
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        crate::files::write_atomic(dir, STATE_FILE, &bytes, 0o640)
    }

    /// Reads the state file of `dir`; `None` when there is none. A symlink or a FIFO in its
    /// place is an error, never followed or waited on.
    pub fn read(dir: &Path) -> io::Result<Option<Self>> {
        match crate::files::read_own(dir, STATE_FILE, 1 << 20)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(io::Error::other),
            None => Ok(None),
        }
    }

    /// Removes the state file of `dir` (a missing file is fine).
    pub fn remove(dir: &Path) -> io::Result<()> {
        match fs::remove_file(dir.join(STATE_FILE)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Whether the recorded daemon process is still alive.
    pub fn daemon_alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

#[cfg(test)]
mod tests;
