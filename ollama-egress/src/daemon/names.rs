//! The snapshot of the names table next to the log (`names.json`): what `policy check
//! --explain NAME` shows as the addresses currently bound, and what a restarted daemon learns
//! back (its bindings are rebuilt from the names table, which would otherwise start empty).

use std::{
    io,
    path::Path,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::pipeline::{Decoder, LearnedAnswer, NameBinding, boot_now_ns};

/// The snapshot's file name in the log directory.
pub const NAMES_FILE: &str = "names.json";
/// Bindings written at most (the table holds more only under a flood of names).
const MAX_WRITTEN: usize = 65_536;
/// The snapshot is rewritten at most this often.
const INTERVAL: Duration = Duration::from_secs(3);
/// Read back at most this many bytes.
const READ_CAP: u64 = 64 << 20;

/// The contents of `names.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamesSnapshot {
    /// The kernel's boot id when written: boot-time stamps mean nothing after a reboot.
    pub boot_id: String,
    /// `CLOCK_BOOTTIME` when written, nanoseconds.
    pub written_boot_ns: u64,
    /// Bindings evicted for room since the daemon started.
    pub evicted: u64,
    /// Whether more bindings were live than written.
    pub truncated: bool,
    /// The live bindings, by address then name.
    pub bindings: Vec<NameBinding>,
}

impl NamesSnapshot {
    /// Reads the snapshot of `log_dir`; `None` when there is none.
    pub fn read(log_dir: &Path) -> io::Result<Option<Self>> {
        match crate::files::read_own(log_dir, NAMES_FILE, READ_CAP)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(io::Error::other),
            None => Ok(None),
        }
    }

    /// The bindings still live now, with their lifetimes counted from now: empty after a
    /// reboot (another boot id).
    pub fn live_now(&self) -> Vec<NameBinding> {
        if self.boot_id != boot_id() {
            return Vec::new();
        }
        let elapsed_s = boot_now_ns().saturating_sub(self.written_boot_ns) / 1_000_000_000;
        self.bindings
            .iter()
            .filter(|b| b.expires_in_s > elapsed_s)
            .map(|b| NameBinding {
                expires_in_s: b.expires_in_s - elapsed_s,
                ..b.clone()
            })
            .collect()
    }
}

/// The kernel's boot id (`/proc/sys/kernel/random/boot_id`), empty when unreadable.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Writes the snapshot when the table changed, at most every [`INTERVAL`].
#[derive(Debug, Default)]
pub(super) struct SnapshotWriter {
    written_version: Option<u64>,
    written_at: Option<Instant>,
}

impl SnapshotWriter {
    /// Expires old names, then writes `names.json` if due and changed. Returns the live
    /// (address, name) pairs and the evictions so far, for the metrics.
    pub(super) fn refresh(&mut self, decoder: &Mutex<Decoder>, log_dir: &Path) -> (usize, u64) {
        let now = boot_now_ns();
        let mut d = decoder.lock().unwrap_or_else(PoisonError::into_inner);
        d.expire_names(now);
        let names = d.names();
        let pairs = (names.live_pairs(now), names.evicted());
        let due = self.written_at.is_none_or(|at| at.elapsed() >= INTERVAL);
        if !due || self.written_version == Some(names.version()) {
            return pairs;
        }
        let mut bindings = names.live(now);
        let truncated = bindings.len() > MAX_WRITTEN;
        bindings.truncate(MAX_WRITTEN);
        let snap = NamesSnapshot {
            boot_id: boot_id(),
            written_boot_ns: now,
            evicted: names.evicted(),
            truncated,
            bindings,
        };
        let version = names.version();
        drop(d);
        match serde_json::to_vec(&snap)
            .map_err(io::Error::other)
            .and_then(|bytes| crate::files::write_atomic(log_dir, NAMES_FILE, &bytes, 0o640))
        {
            Ok(()) => {
                self.written_version = Some(version);
                self.written_at = Some(Instant::now());
            }
            Err(e) => tracing::warn!("writing {NAMES_FILE}: {e}"),
        }
        pairs
    }
}

/// Learns back the bindings of a previous daemon's snapshot (same boot, still live).
pub(super) fn restore(decoder: &mut Decoder, log_dir: &Path) -> usize {
    let snap = match NamesSnapshot::read(log_dir) {
        Ok(Some(snap)) => snap,
        Ok(None) => return 0,
        Err(e) => {
            tracing::warn!("reading {NAMES_FILE}: {e}; starting with no names");
            return 0;
        }
    };
    let now = boot_now_ns();
    let live = snap.live_now();
    for b in &live {
        decoder.learn(&LearnedAnswer {
            at_boot_ns: now,
            name: b.name.clone(),
            addrs: vec![(b.addr, u32::try_from(b.expires_in_s).unwrap_or(u32::MAX))],
        });
    }
    live.len()
}

#[cfg(test)]
mod tests;
