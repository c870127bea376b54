//! The inputs of the policy in force: the policy file and the geo databases, watched for
//! settled changes, and re-read on SIGHUP or such a change. Switching the result in is the
//! [`PolicyRuntime`](super::runtime::PolicyRuntime)'s; any failure keeps the policy in force.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use ollama_egress_geo::GeoDb;

use super::DaemonError;
use crate::{defaults, inputs, policy::CompiledPolicy};

/// Identity and version of a file: a rename over it, a rewrite or a removal all change it.
type Stamp = Option<(u64, u64, i64, i64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
}

/// One watched input: the version in force and the one seen at the last poll.
struct Watched {
    path: PathBuf,
    applied: Stamp,
    seen: Stamp,
}

/// The inputs of the policy in force.
pub struct PolicySource {
    policy: Option<PathBuf>,
    /// Explicit database paths, or the default files `geo update` writes.
    geo_files: (PathBuf, PathBuf),
    geo: Option<Arc<GeoDb>>,
    stamps: Vec<Watched>,
}

/// A policy read from the inputs, not yet in force.
pub struct ReadPolicy {
    /// The compiled policy.
    pub compiled: CompiledPolicy,
    /// The geo databases it was expanded with.
    pub geo: Option<Arc<GeoDb>>,
}

impl PolicySource {
    /// Inputs as resolved at start-up.
    pub fn new(
        policy: Option<PathBuf>,
        geo_db: Option<PathBuf>,
        asn_db: Option<PathBuf>,
        geo: Option<Arc<GeoDb>>,
    ) -> Self {
        let geo_files = defaults::geo_files(geo_db, asn_db);
        let mut s = Self {
            policy,
            geo_files,
            geo,
            stamps: Vec::new(),
        };
        s.stamps = s
            .watched()
            .into_iter()
            .map(|path| {
                let st = stamp(&path);
                Watched {
                    path,
                    applied: st,
                    seen: st,
                }
            })
            .collect();
        s
    }

    fn watched(&self) -> Vec<PathBuf> {
        vec![
            self.policy
                .clone()
                .unwrap_or_else(|| PathBuf::from(defaults::POLICY_FILE)),
            self.geo_files.0.clone(),
            self.geo_files.1.clone(),
        ]
    }

    /// The files that changed since the last reload and have then stayed the same for one
    /// poll (an editor that truncates and then writes is not caught half-way).
    pub fn changed_files(&mut self) -> Vec<PathBuf> {
        let mut changed = Vec::new();
        for w in &mut self.stamps {
            let now = stamp(&w.path);
            if now == w.applied {
                w.seen = now;
            } else if now == w.seen {
                w.applied = now;
                changed.push(w.path.clone());
            } else {
                w.seen = now;
            }
        }
        changed
    }

    /// Takes the inputs as they are now as the ones in force (before a SIGHUP reload).
    pub fn mark_current(&mut self) {
        for w in &mut self.stamps {
            let now = stamp(&w.path);
            w.applied = now;
            w.seen = now;
        }
    }

    /// Whether `changed` (from [`changed_files`](Self::changed_files)) names a geo database.
    pub fn touches_geo(&self, changed: &[PathBuf]) -> bool {
        changed
            .iter()
            .any(|p| *p == self.geo_files.0 || *p == self.geo_files.1)
    }

    /// Re-reads the policy (and, with `reopen_geo`, the geo databases) and compiles it.
    /// Nothing changes until [`keep`](Self::keep) is told it went in force.
    ///
    /// The geo databases are re-opened only with `reopen_geo`: a re-opened database expands its
    /// countries and ASNs anew (tens of milliseconds each), the one in use remembers them.
    pub fn read(&self, reopen_geo: bool) -> Result<ReadPolicy, DaemonError> {
        let geo = if reopen_geo {
            inputs::open_geo_files(&self.geo_files)?
        } else {
            self.geo.clone()
        };
        let policy = inputs::load_daemon_policy(self.policy.as_deref())?;
        let compiled = inputs::compile_policy(&policy, geo.as_deref())?;
        Ok(ReadPolicy { compiled, geo })
    }

    /// The geo databases of a policy now in force become the ones in use.
    pub fn keep(&mut self, geo: Option<Arc<GeoDb>>) {
        self.geo = geo;
    }
}

#[cfg(test)]
mod tests;
