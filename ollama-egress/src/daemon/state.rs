//! `<log-dir>/state.json`: what a running daemon is doing, for `status`.

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::policy::PrefixTotals;

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
    /// Kernel ids of the attached programs, by program name.
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
    /// Counters since the daemon started (refreshed every few seconds): `connections.<verdict>`,
    /// `packets.<direction>.<verdict>`, `bytes.<direction>.<verdict>`, `events_lost`,
    /// `log_dropped`.
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
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
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn round_trip_and_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(DaemonState::read(dir.path()).expect("read"), None);
        let st = DaemonState {
            pid: std::process::id(),
            mode: "enforce".into(),
            target: "cgroup /x".into(),
            cgroup: "/x".into(),
            policy: "built-in".into(),
            generation: 2,
            programs: vec![("egress".into(), 7)],
            started: "2026-11-22T10:00:00Z".into(),
            geo_db: None,
            asn_db: None,
            rules: 3,
            prefixes: PrefixTotals::default(),
            metrics_addr: Some("127.0.0.1:9464".into()),
            counters: BTreeMap::from([("connections.blocked".into(), 2)]),
        };
        st.write(dir.path()).expect("write");
        let back = DaemonState::read(dir.path())
            .expect("read")
            .expect("present");
        assert_eq!(back, st);
        assert!(back.daemon_alive());
        let mode = fs::metadata(dir.path().join(STATE_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        DaemonState::remove(dir.path()).expect("remove");
        DaemonState::remove(dir.path()).expect("remove twice");
        assert_eq!(DaemonState::read(dir.path()).expect("read"), None);
    }
}
