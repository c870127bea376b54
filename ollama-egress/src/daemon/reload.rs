//! Keeping the policy current: SIGHUP, or a change of the policy file or a geo database,
//! re-reads the inputs, re-expands the geo rules and switches the new policy in. Any failure
//! keeps the policy in force.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use ollama_egress_geo::GeoDb;

use super::{DaemonError, rulebook::RuleBook, table_policy};
use crate::inputs;
use crate::{
    defaults,
    loader::PolicyTables,
    model::Mode,
    pipeline::{DRAIN_INTERVAL, Decoder, GenerationInfo, boot_now_ns},
    policy::CompiledPolicy,
};

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
    mode: Mode,
    policy: Option<PathBuf>,
    /// Explicit database paths, or the default files `geo update` writes.
    geo_files: (PathBuf, PathBuf),
    geo: Option<Arc<GeoDb>>,
    stamps: Vec<Watched>,
    /// Where each generation's rule names are kept for a later daemon (enforce mode).
    rulebook: Option<RuleBook>,
}

impl PolicySource {
    /// Inputs as resolved at start-up.
    pub fn new(
        mode: Mode,
        policy: Option<PathBuf>,
        geo_db: Option<PathBuf>,
        asn_db: Option<PathBuf>,
        geo: Option<Arc<GeoDb>>,
        rulebook: Option<RuleBook>,
    ) -> Self {
        let geo_files = defaults::geo_files(geo_db, asn_db);
        let mut s = Self {
            mode,
            policy,
            geo_files,
            geo,
            stamps: Vec::new(),
            rulebook,
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

    /// Re-reads the policy (and, with `reopen_geo`, the geo databases) and switches the new policy in. Returns the new generation and the
    /// compiled policy; on error nothing changed in the kernel.
    ///
    /// The geo databases are re-opened only with `reopen_geo`: a re-opened database expands its
    /// countries and ASNs anew (tens of milliseconds each), the one in use remembers them.
    pub fn reload(
        &mut self,
        tables: &mut PolicyTables,
        decoder: &Mutex<Decoder>,
        reopen_geo: bool,
    ) -> Result<(u32, CompiledPolicy), DaemonError> {
        let geo = if reopen_geo {
            inputs::open_geo_files(&self.geo_files)?
        } else {
            self.geo.clone()
        };
        let policy = inputs::load_daemon_policy(self.policy.as_deref())?;
        let compiled = inputs::compile_policy(&policy, geo.as_deref())?;
        // Known before the switch, so events of the new generation decode at once.
        let next = tables.generation().wrapping_add(1).max(1);
        push_generation(decoder, next, &compiled, self.mode);
        if let Some(book) = &self.rulebook {
            book.record(next, &compiled, self.mode);
        }
        // The names learned so far, judged with the new rules (design: the kernel's bindings of
        // the old generation do not count for the new one).
        let generation = tables.apply_with_bindings(table_policy(&compiled, self.mode), |_| {
            if !compiled.domains.is_empty() {
                // The kernel binds into the new slot from now on; the answers it learned just
                // before are in the ring buffer: let the reader take them into the names table.
                std::thread::sleep(2 * DRAIN_INTERVAL);
            }
            let d = decoder.lock().unwrap_or_else(PoisonError::into_inner);
            d.names().bindings(&compiled, boot_now_ns())
        })?;
        decoder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_geo(geo.clone());
        self.geo = geo;
        Ok((generation, compiled))
    }
}

/// Makes a policy generation known to the decoder.
pub fn push_generation(
    decoder: &Mutex<Decoder>,
    generation: u32,
    compiled: &CompiledPolicy,
    mode: Mode,
) {
    let rules = compiled.rules.iter().map(|r| r.id.clone()).collect();
    decoder
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push_generation(GenerationInfo {
            generation,
            rules: Arc::new(rules),
            mode,
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_reported_once_it_has_settled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("policy.toml");
        std::fs::write(&p, "default = \"allow\"\n").expect("write");
        let geo = dir.path().join("none.mmdb");
        let mut src = PolicySource::new(
            Mode::Enforce,
            Some(p.clone()),
            Some(geo.clone()),
            Some(geo),
            None,
            None,
        );
        assert!(src.changed_files().is_empty());
        // Truncated: seen, not yet reported.
        std::fs::write(&p, "").expect("truncate");
        assert!(src.changed_files().is_empty());
        // Written before the next poll: still moving.
        std::fs::write(&p, "default = \"deny\"\n[allow]\n").expect("write");
        assert!(src.changed_files().is_empty());
        // Unchanged across a poll: reported, once.
        assert_eq!(src.changed_files(), vec![p.clone()]);
        assert!(src.changed_files().is_empty());
    }
}
