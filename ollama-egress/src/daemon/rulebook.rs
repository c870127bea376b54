//! `<log-dir>/rules.json`: the rule names of the recent policy generations written into a
//! pinned policy. Enforcement outlives the daemon, and so do the events it decides meanwhile
//! (in the pinned ring buffer); a restarted daemon decodes them with these names instead of
//! `rule#N@G`.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::files;
use crate::{model::Mode, pipeline::GenerationInfo, policy::CompiledPolicy};

/// File name inside the log directory.
pub const RULES_FILE: &str = "rules.json";
/// Generations kept (as many as the decoder keeps).
const KEPT: usize = 8;
/// Largest rules file read back.
const MAX_BYTES: u64 = 64 << 20;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Book {
    /// The pin directory the generations were written into.
    pin_dir: PathBuf,
    /// Inode of its pinned `SLOT_CONFIG`: a re-created pin is another policy history.
    slot_config_ino: u64,
    generations: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    generation: u32,
    mode: String,
    rules: Vec<String>,
}

/// Where the rule names of one pinned policy are recorded.
#[derive(Clone, Debug)]
pub struct RuleBook {
    log_dir: PathBuf,
    pin_dir: PathBuf,
    slot_config_ino: u64,
}

impl RuleBook {
    /// The book of the pinned policy whose `SLOT_CONFIG` pin is `slot_config`; `None` when it
    /// cannot be examined.
    pub fn new(log_dir: &Path, pin_dir: &Path, slot_config: &Path) -> Option<Self> {
        let ino = std::fs::symlink_metadata(slot_config).ok()?.ino();
        Some(Self {
            log_dir: log_dir.to_owned(),
            pin_dir: pin_dir.to_owned(),
            slot_config_ino: ino,
        })
    }

    fn read(&self) -> Book {
        let bytes = match files::read_own(&self.log_dir, RULES_FILE, MAX_BYTES) {
            Ok(Some(b)) => b,
            Ok(None) => return Book::default(),
            Err(e) => {
                warn!(error = %e, "cannot read {RULES_FILE}: earlier rule names are unknown");
                return Book::default();
            }
        };
        match serde_json::from_slice::<Book>(&bytes) {
            Ok(b) if b.pin_dir == self.pin_dir && b.slot_config_ino == self.slot_config_ino => b,
            Ok(_) => Book::default(),
            Err(e) => {
                warn!(error = %e, "{RULES_FILE} is not readable: earlier rule names are unknown");
                Book::default()
            }
        }
    }

    /// The generations recorded for this pinned policy, oldest first.
    pub fn generations(&self) -> Vec<GenerationInfo> {
        self.read()
            .generations
            .into_iter()
            .map(|e| GenerationInfo {
                generation: e.generation,
                rules: Arc::new(e.rules),
                mode: if e.mode == Mode::Enforce.as_str() {
                    Mode::Enforce
                } else {
                    Mode::Monitor
                },
            })
            .collect()
    }

    /// Records `generation` (before it is switched in); a failure is logged, not fatal.
    pub fn record(&self, generation: u32, compiled: &CompiledPolicy, mode: Mode) {
        let mut book = self.read();
        book.pin_dir = self.pin_dir.clone();
        book.slot_config_ino = self.slot_config_ino;
        book.generations.retain(|e| e.generation != generation);
        book.generations.push(Entry {
            generation,
            mode: mode.as_str().to_owned(),
            rules: compiled.rules.iter().map(|r| r.id.clone()).collect(),
        });
        let excess = book.generations.len().saturating_sub(KEPT);
        book.generations.drain(..excess);
        let res = serde_json::to_vec(&book)
            .map_err(std::io::Error::other)
            .and_then(|bytes| files::write_atomic(&self.log_dir, RULES_FILE, &bytes, 0o640));
        if let Err(e) = res {
            warn!(error = %e, "cannot write {RULES_FILE}: a restarted daemon will not name the rules of events decided meanwhile");
        }
    }
}

#[cfg(test)]
mod tests;
