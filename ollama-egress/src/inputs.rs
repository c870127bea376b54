//! The daemon's inputs, resolved the same way by `run`, `policy check`, `geo lookup` and the
//! benchmarks: the policy file (or the built-in policy) and the geo databases, read through
//! [`crate::files`] (regular files of bounded size, stable while read) and compiled.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use ipnet::IpNet;
use ollama_egress_geo::{GeoDb, GeoError};

use crate::files;
use crate::policy::{CompiledPolicy, ExpandError, Expander, Policy, PolicyError, compile};

use crate::defaults::POLICY_FILE as DEFAULT_POLICY;

/// The policy: `path` when given (it must exist), else the default file when it exists, else
/// the built-in policy. The file must be a regular file (a symlink to one is fine) of at most
/// [`MAX_POLICY_BYTES`](crate::files::MAX_POLICY_BYTES), not empty, and not change while it is
/// read.
pub fn load_policy(path: Option<&Path>) -> Result<Policy, PolicyError> {
    load_policy_checked(path, false)
}

/// [`load_policy`] for the daemon: the file must also be root's (or this user's) and not
/// writable by everyone, since it decides what the kernel enforces.
pub fn load_daemon_policy(path: Option<&Path>) -> Result<Policy, PolicyError> {
    load_policy_checked(path, true)
}

fn load_policy_checked(path: Option<&Path>, trusted: bool) -> Result<Policy, PolicyError> {
    let default = Path::new(DEFAULT_POLICY);
    let path = match path {
        Some(p) => p,
        None => match std::fs::symlink_metadata(default) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Policy::builtin()),
            _ => default,
        },
    };
    let read_err = |e: files::InputError| PolicyError::Read {
        path: path.to_owned(),
        source: e.into_io(),
    };
    if trusted {
        let (_, meta) = files::open_regular(path, files::MAX_POLICY_BYTES).map_err(read_err)?;
        files::check_trusted(&meta).map_err(read_err)?;
    }
    let bytes = files::read_stable(path, files::MAX_POLICY_BYTES).map_err(read_err)?;
    let text = String::from_utf8(bytes).map_err(|e| PolicyError::Read {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
    })?;
    Policy::from_toml_str(&text, &path.display().to_string())
}

/// The geo database files to use: the given paths, else the files `geo update` writes when
/// they exist (or cannot be examined: opening them then says why, instead of claiming there
/// are none).
pub fn geo_paths(country: Option<&Path>, asn: Option<&Path>) -> (Option<PathBuf>, Option<PathBuf>) {
    geo_paths_in(Path::new(crate::defaults::GEO_DIR), country, asn)
}

fn geo_paths_in(
    dir: &Path,
    country: Option<&Path>,
    asn: Option<&Path>,
) -> (Option<PathBuf>, Option<PathBuf>) {
    let pick = |given: Option<&Path>, file: &str| match given {
        Some(p) => Some(p.to_owned()),
        None => Some(dir.join(file)).filter(|p| !matches!(p.try_exists(), Ok(false))),
    };
    (
        pick(country, ollama_egress_geo::COUNTRY_FILE),
        pick(asn, ollama_egress_geo::ASN_FILE),
    )
}

/// Opens the geo databases; `None` when there are none at all. Each must be a regular file
/// (a symlink to one is fine) of at most [`MAX_GEO_BYTES`](crate::files::MAX_GEO_BYTES); the
/// file checked is the file mapped (not read into memory).
pub fn open_geo(
    country: Option<&Path>,
    asn: Option<&Path>,
) -> Result<Option<Arc<GeoDb>>, GeoError> {
    if country.is_none() && asn.is_none() {
        return Ok(None);
    }
    let open = |p: &Path| {
        files::open_regular(p, files::MAX_GEO_BYTES)
            .map(|(f, _)| f)
            .map_err(|e| GeoError::Io {
                action: "cannot read geo database",
                path: p.to_owned(),
                source: e.into_io(),
            })
    };
    let country = country.map(|p| open(p).map(|f| (p, f))).transpose()?;
    let asn = asn.map(|p| open(p).map(|f| (p, f))).transpose()?;
    GeoDb::open_files(
        country.as_ref().map(|(p, f)| (*p, f)),
        asn.as_ref().map(|(p, f)| (*p, f)),
    )
    .map(|db| Some(Arc::new(db)))
}

/// Opens the geo databases a running daemon watches (see
/// [`defaults::geo_files`](crate::defaults::geo_files)), each only if it exists now.
pub fn open_geo_files(files: &(PathBuf, PathBuf)) -> Result<Option<Arc<GeoDb>>, GeoError> {
    let (country, asn) = files;
    open_geo(
        Some(country.as_path()).filter(|p| p.exists()),
        Some(asn.as_path()).filter(|p| p.exists()),
    )
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

#[cfg(test)]
mod tests;
