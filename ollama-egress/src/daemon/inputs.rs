//! The daemon's inputs, resolved the same way by `run`, `policy check` and `geo lookup`: the
//! policy file (or the built-in policy) and the geo databases.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use ipnet::IpNet;
use ollama_egress_geo::{GeoDb, GeoError};

use crate::policy::{CompiledPolicy, ExpandError, Expander, Policy, PolicyError, compile};

/// Where the policy is read from when `--policy` is not given.
pub const DEFAULT_POLICY: &str = "/etc/ollama-egress/policy.toml";

/// The policy: `path` when given (it must exist), else the default file when it exists, else
/// the built-in policy.
pub fn load_policy(path: Option<&Path>) -> Result<Policy, PolicyError> {
    match path {
        Some(p) => Policy::from_file(p),
        None if Path::new(DEFAULT_POLICY).exists() => Policy::from_file(Path::new(DEFAULT_POLICY)),
        None => Ok(Policy::builtin()),
    }
}

/// The geo database files to use: the given paths, else the files `geo update` writes when
/// they exist.
pub fn geo_paths(country: Option<&Path>, asn: Option<&Path>) -> (Option<PathBuf>, Option<PathBuf>) {
    let dir = Path::new(ollama_egress_geo::DEFAULT_DIR);
    let pick = |given: Option<&Path>, file: &str| match given {
        Some(p) => Some(p.to_owned()),
        None => Some(dir.join(file)).filter(|p| p.exists()),
    };
    (
        pick(country, ollama_egress_geo::COUNTRY_FILE),
        pick(asn, ollama_egress_geo::ASN_FILE),
    )
}

/// Opens the geo databases; `None` when there are none at all.
pub fn open_geo(
    country: Option<&Path>,
    asn: Option<&Path>,
) -> Result<Option<Arc<GeoDb>>, GeoError> {
    if country.is_none() && asn.is_none() {
        return Ok(None);
    }
    GeoDb::open(country, asn).map(|db| Some(Arc::new(db)))
}

/// Compiles `policy`, expanding country and ASN rules through `geo` when present.
pub fn compile_policy(policy: &Policy, geo: Option<&GeoDb>) -> Result<CompiledPolicy, PolicyError> {
    match geo {
        Some(db) => compile(policy, Some(&GeoExpander(db))),
        None => compile(policy, None),
    }
}

/// The geo databases as a policy [`Expander`].
pub struct GeoExpander<'a>(pub &'a GeoDb);

fn expand_err(e: GeoError) -> ExpandError {
    match e {
        GeoError::UnknownCountry(_) | GeoError::UnknownAsn(_) => ExpandError::Unknown,
        other => ExpandError::Database(other.to_string()),
    }
}

impl Expander for GeoExpander<'_> {
    fn country_networks(&self, cc: &str) -> Result<Vec<IpNet>, ExpandError> {
        self.0.country_networks(cc).map_err(expand_err)
    }

    fn asn_networks(&self, asn: u32) -> Result<Vec<IpNet>, ExpandError> {
        self.0.asn_networks(asn).map_err(expand_err)
    }
}
