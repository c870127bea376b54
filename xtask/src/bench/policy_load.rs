//! Policy compile + load time. ollama-egress is timed in-process with its own library (the same
//! calls the daemon makes: parse the file, expand countries through the geo database, merge,
//! then write the tries with `PolicyTables::apply`); nftables and ipset are timed loading the
//! same prefixes with their own tools.

use std::{path::Path, time::Duration};

use super::{
    configs::{Firewall, Stage},
    pairs::median,
    prefixes::PrefixSet,
    sys::check_interrupted,
};

/// Times of one policy load, each a median over the repetitions.
#[derive(Clone, Debug)]
pub struct LoadTimes {
    /// `CN` or `500k`.
    pub set: String,
    /// Prefixes in the set (both families).
    pub prefixes: usize,
    /// Opening the geo databases (once per daemon start, not per reload).
    pub geo_open: Option<Duration>,
    /// Parse + expand + merge.
    pub compile: Option<Duration>,
    /// Writing the compiled prefixes into the kernel tries.
    pub load: Option<Duration>,
    /// `nft -f` of the same prefixes.
    pub nft: Option<Duration>,
    /// `ipset restore` of the same prefixes.
    pub ipset: Option<Duration>,
    /// Why a measurement is missing.
    pub notes: Vec<String>,
}

impl LoadTimes {
    /// Compile + load.
    pub fn total(&self) -> Option<Duration> {
        Some(self.compile? + self.load?)
    }
}

fn med(v: &[Duration]) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    let secs: Vec<f64> = v.iter().map(Duration::as_secs_f64).collect();
    Some(Duration::from_secs_f64(median(&secs)))
}

/// Measures the CN and the 500k set, `reps` times each; then policies that list
/// `cidr_lists` prefixes as `cidrs` (ollama-egress only, once: parsing them is slow).
pub fn measure(stage: &Stage, reps: usize, cidr_lists: &[usize]) -> anyhow::Result<Vec<LoadTimes>> {
    let mut out = Vec::new();
    for (set, name, country) in [
        (&stage.cn, "cn", &stage.geo.0),
        (&stage.big, "500k", &stage.big_geo),
    ] {
        check_interrupted()?;
        let mut t = LoadTimes::new(set.name.clone(), set.len());
        let policy = stage.file(&format!("{name}.toml"));
        t.ollama_egress(&policy, (country, &stage.geo.1), reps);
        let mut nft = Vec::new();
        let mut ipset = Vec::new();
        for _ in 0..reps {
            check_interrupted()?;
            match Firewall::nft(&stage.ns, &stage.file(&format!("{name}.nft"))) {
                Ok((_guard, took)) => nft.push(took),
                Err(e) => {
                    t.notes.push(format!("nft: {e:#}"));
                    break;
                }
            }
        }
        for _ in 0..reps {
            check_interrupted()?;
            match Firewall::ipset(
                &stage.ns,
                &stage.file(&format!("{name}.ipset")),
                &stage.client.name,
            ) {
                Ok((_guard, took)) => ipset.push(took),
                Err(e) => {
                    t.notes.push(format!("ipset: {e:#}"));
                    break;
                }
            }
        }
        t.nft = med(&nft);
        t.ipset = med(&ipset);
        out.push(t);
    }
    for &n in cidr_lists {
        check_interrupted()?;
        let mut set = PrefixSet::synthetic(&format!("{}k as `cidrs`", n / 1000), n * 4 / 5, n / 5);
        set.name = format!("{}k prefixes listed as `cidrs`", n / 1000);
        let policy = stage.file(&format!("cidrs-{n}.toml"));
        std::fs::write(&policy, set.policy_toml())?;
        let mut t = LoadTimes::new(set.name.clone(), set.len());
        t.ollama_egress(&policy, (&stage.geo.0, &stage.geo.1), 1);
        out.push(t);
    }
    Ok(out)
}

impl LoadTimes {
    fn new(set: String, prefixes: usize) -> Self {
        Self {
            set,
            prefixes,
            geo_open: None,
            compile: None,
            load: None,
            nft: None,
            ipset: None,
            notes: Vec::new(),
        }
    }

    fn ollama_egress(&mut self, policy: &Path, geo: (&Path, &Path), reps: usize) {
        match inproc::measure(policy, geo, reps) {
            Ok(samples) => {
                self.geo_open = med(&samples.iter().map(|s| s.0).collect::<Vec<_>>());
                self.compile = med(&samples.iter().map(|s| s.1).collect::<Vec<_>>());
                self.load = med(&samples.iter().map(|s| s.2).collect::<Vec<_>>());
            }
            Err(e) => self.notes.push(format!("ollama-egress: {e:#}")),
        }
    }
}

#[cfg(feature = "bench")]
mod inproc {
    use std::{
        path::Path,
        time::{Duration, Instant},
    };

    use ollama_egress::{
        daemon::table_policy,
        inputs,
        loader::{Loaded, MapSizes},
        model::Mode,
        policy::Policy,
    };

    /// `(geo open, compile, load)` per repetition. Each repetition opens the databases afresh
    /// (no expansion memo) and loads a fresh, unattached object (nothing to clean up).
    pub fn measure(
        policy: &Path,
        geo: (&Path, &Path),
        reps: usize,
    ) -> anyhow::Result<Vec<(Duration, Duration, Duration)>> {
        let mut out = Vec::new();
        for _ in 0..reps {
            super::check_interrupted()?;
            let t = Instant::now();
            let db = inputs::open_geo(Some(geo.0), Some(geo.1))?;
            let open = t.elapsed();
            let t = Instant::now();
            let parsed = Policy::from_file(policy)?;
            let compiled = inputs::compile_policy(&parsed, db.as_deref())?;
            let compile = t.elapsed();
            let mut loaded = Loaded::load(MapSizes::default(), None)?;
            let mut tables = loaded.policy_tables()?;
            let t = Instant::now();
            tables.apply(table_policy(&compiled, Mode::Enforce))?;
            let load = t.elapsed();
            out.push((open, compile, load));
        }
        Ok(out)
    }
}

#[cfg(not(feature = "bench"))]
mod inproc {
    use std::{path::Path, time::Duration};

    /// Without the `bench` feature xtask does not link the daemon's library.
    pub fn measure(
        _policy: &Path,
        _geo: (&Path, &Path),
        _reps: usize,
    ) -> anyhow::Result<Vec<(Duration, Duration, Duration)>> {
        anyhow::bail!("xtask was built without the `bench` feature (run `cargo xtask bench`)")
    }
}
