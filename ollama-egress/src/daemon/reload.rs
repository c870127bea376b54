//! Keeping the policy current: SIGHUP, or a change of the policy file or a geo database,
//! re-reads the inputs, re-expands the geo rules and switches the new policy in. Any failure
//! keeps the policy in force.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use ollama_egress_geo::GeoDb;

use super::{DaemonError, inputs, table_policy};
use crate::{
    loader::PolicyTables,
    logstore::Mode,
    pipeline::{Decoder, GenerationInfo},
    policy::CompiledPolicy,
};

/// Identity and version of a file: a rename over it, a rewrite or a removal all change it.
type Stamp = Option<(u64, u64, i64, i64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
}

/// The inputs of the policy in force.
pub struct PolicySource {
    mode: Mode,
    policy: Option<PathBuf>,
    /// Explicit database paths, or the default files `geo update` writes.
    geo_files: (PathBuf, PathBuf),
    geo: Option<Arc<GeoDb>>,
    stamps: Vec<(PathBuf, Stamp)>,
}

impl PolicySource {
    /// Inputs as resolved at start-up.
    pub fn new(
        mode: Mode,
        policy: Option<PathBuf>,
        geo_db: Option<PathBuf>,
        asn_db: Option<PathBuf>,
        geo: Option<Arc<GeoDb>>,
    ) -> Self {
        let dir = Path::new(ollama_egress_geo::DEFAULT_DIR);
        let geo_files = (
            geo_db.unwrap_or_else(|| dir.join(ollama_egress_geo::COUNTRY_FILE)),
            asn_db.unwrap_or_else(|| dir.join(ollama_egress_geo::ASN_FILE)),
        );
        let mut s = Self {
            mode,
            policy,
            geo_files,
            geo,
            stamps: Vec::new(),
        };
        s.stamps = s
            .watched()
            .into_iter()
            .map(|p| {
                let st = stamp(&p);
                (p, st)
            })
            .collect();
        s
    }

    fn watched(&self) -> Vec<PathBuf> {
        vec![
            self.policy
                .clone()
                .unwrap_or_else(|| PathBuf::from(inputs::DEFAULT_POLICY)),
            self.geo_files.0.clone(),
            self.geo_files.1.clone(),
        ]
    }

    /// The files that changed since the last call (or since start-up).
    pub fn changed_files(&mut self) -> Vec<PathBuf> {
        let mut changed = Vec::new();
        for (path, old) in &mut self.stamps {
            let now = stamp(path);
            if now != *old {
                *old = now;
                changed.push(path.clone());
            }
        }
        changed
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
            let (country, asn) = &self.geo_files;
            inputs::open_geo(
                Some(country.as_path()).filter(|p| p.exists()),
                Some(asn.as_path()).filter(|p| p.exists()),
            )?
        } else {
            self.geo.clone()
        };
        let policy = inputs::load_policy(self.policy.as_deref())?;
        let compiled = inputs::compile_policy(&policy, geo.as_deref())?;
        // Known before the switch, so events of the new generation decode at once.
        let next = tables.generation().wrapping_add(1).max(1);
        push_generation(decoder, next, &compiled, self.mode);
        let generation = tables.apply(table_policy(&compiled, self.mode))?;
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
