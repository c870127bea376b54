//! Names at start-up and while running: the settings of name learning (`DNS_CONFIG`, written
//! before anything is attached) and the resolver's cgroup (`--dns-cgroup`, `--dns-unit`, or systemd-resolved found
//! automatically) with the learn-only programs on it, followed when it is made again.

use std::path::{Path, PathBuf};

use ollama_egress_common::dns::{
    DEFAULT_DNS_MAX_TTL_S, DEFAULT_DNS_MIN_TTL_S, DEFAULT_DNS_QUERY_WINDOW_MS, DnsConfig,
};
use tracing::{info, warn};

use super::DaemonError;
use crate::{
    loader::{Loaded, LoaderError, RESOLVER_PROGRAMS, cgroup_id},
    targeting,
};

/// The resolver unit watched when neither `--dns-cgroup` nor `--dns-unit` is given.
pub const DEFAULT_RESOLVER_UNIT: &str = "systemd-resolved.service";

/// How names are learned, from the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsOptions {
    /// `--dns-cgroup`: the resolver's cgroup.
    pub cgroup: Option<PathBuf>,
    /// `--dns-unit`: the resolver's systemd unit.
    pub unit: Option<String>,
    /// `--dns-min-ttl`, seconds.
    pub min_ttl_s: u32,
    /// `--dns-max-ttl`, seconds.
    pub max_ttl_s: u32,
}

impl Default for DnsOptions {
    fn default() -> Self {
        Self {
            cgroup: None,
            unit: None,
            min_ttl_s: DEFAULT_DNS_MIN_TTL_S,
            max_ttl_s: DEFAULT_DNS_MAX_TTL_S,
        }
    }
}

impl DnsOptions {
    /// The kernel's settings; an error for bounds that cannot hold.
    pub fn config(&self) -> Result<DnsConfig, DnsError> {
        if self.min_ttl_s == 0 || self.max_ttl_s < self.min_ttl_s {
            return Err(DnsError::TtlBounds {
                min: self.min_ttl_s,
                max: self.max_ttl_s,
            });
        }
        Ok(DnsConfig {
            min_ttl_s: self.min_ttl_s,
            max_ttl_s: self.max_ttl_s,
            query_window_ms: DEFAULT_DNS_QUERY_WINDOW_MS,
            reserved: 0,
        })
    }
}

/// Why names cannot be learned as asked.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// `--dns-min-ttl` is 0 or above `--dns-max-ttl`.
    #[error(
        "--dns-min-ttl {min} and --dns-max-ttl {max}: the minimum must be at least 1 and at most the maximum"
    )]
    TtlBounds {
        /// The minimum given.
        min: u32,
        /// The maximum given.
        max: u32,
    },
    /// The `--dns-cgroup` directory does not exist.
    #[error(
        "--dns-cgroup {path} does not exist (the cgroup v2 hierarchy is mounted at {mount}; a relative path is taken from there)"
    )]
    NoCgroup {
        /// The path, made absolute.
        path: String,
        /// The cgroup2 mount point.
        mount: String,
    },
    /// The `--dns-unit` has no cgroup (not running, or no such unit).
    #[error(
        "--dns-unit {unit}: no cgroup of that unit under {mount}; is it running? (systemctl status {unit})"
    )]
    NoUnit {
        /// The unit.
        unit: String,
        /// The cgroup2 mount point.
        mount: String,
    },
    /// A resolver was asked for but the loaded object cannot learn from it.
    #[error(
        "this build's eBPF object has no {program} program: it cannot learn names from the resolver's cgroup; rebuild ollama-egress"
    )]
    NoPrograms {
        /// The missing program.
        program: &'static str,
    },
}

/// The resolver's cgroup, followed while the daemon runs.
#[derive(Debug)]
pub(super) struct Resolver {
    path: PathBuf,
    id: u64,
}

impl Resolver {
    /// Finds the resolver's cgroup and attaches the learn-only programs to it. `None` when no
    /// resolver was asked for and systemd-resolved does not run (the daemon says so), or when
    /// it is the target itself (whose programs learn already).
    pub(super) fn start(
        opts: &DnsOptions,
        mount: &Path,
        target: &Path,
        loaded: &mut Loaded,
    ) -> Result<Option<Self>, DaemonError> {
        let explicit = opts.cgroup.is_some() || opts.unit.is_some();
        let Some(path) = resolver_cgroup(opts, mount)? else {
            info!(
                "{DEFAULT_RESOLVER_UNIT} does not run: names are learned from the DNS answers arriving at the target's own sockets only (pass --dns-cgroup or --dns-unit for another local resolver)"
            );
            return Ok(None);
        };
        if same_dir(&path, target) {
            info!(cgroup = %path.display(), "the resolver runs in the target cgroup: its answers are learned there");
            return Ok(None);
        }
        match loaded.attach_resolver(&path) {
            Ok(id) => {
                info!(cgroup = %path.display(), "learning names from the resolver's cgroup too (dns_egress, dns_ingress)");
                Ok(Some(Self { path, id }))
            }
            Err(LoaderError::Missing {
                kind: "program", ..
            }) if !explicit => {
                warn!(
                    "this build's eBPF object cannot learn names from {DEFAULT_RESOLVER_UNIT}: names are learned from the target's own sockets only"
                );
                Ok(None)
            }
            Err(LoaderError::Missing {
                kind: "program", ..
            }) => Err(DnsError::NoPrograms {
                program: RESOLVER_PROGRAMS[0],
            }
            .into()),
            Err(e) => Err(e.into()),
        }
    }

    /// Re-attaches when the resolver's cgroup was made again (the unit restarted); logs, never
    /// fails the daemon (enforcement does not depend on it).
    pub(super) fn check(&mut self, loaded: &mut Loaded) {
        let Ok(id) = cgroup_id(&self.path) else {
            return;
        };
        if id == self.id {
            if let Err(e) = loaded.verify_resolver(&self.path) {
                warn!("the resolver programs are not attached: {e}; attaching again");
            } else {
                return;
            }
        }
        match loaded.attach_resolver(&self.path) {
            Ok(id) => {
                info!(cgroup = %self.path.display(), "the resolver's cgroup was made again: learning from it again");
                self.id = id;
            }
            Err(e) => warn!(
                "attaching the resolver programs to {}: {e}",
                self.path.display()
            ),
        }
    }
}

/// The cgroup of the resolver: `--dns-cgroup` (must exist), `--dns-unit` (must have a
/// cgroup), or systemd-resolved when it runs.
fn resolver_cgroup(opts: &DnsOptions, mount: &Path) -> Result<Option<PathBuf>, DnsError> {
    if let Some(p) = &opts.cgroup {
        let path = if p.is_relative() {
            mount.join(p)
        } else {
            p.clone()
        };
        if !path.join("cgroup.procs").is_file() {
            return Err(DnsError::NoCgroup {
                path: path.display().to_string(),
                mount: mount.display().to_string(),
            });
        }
        return Ok(Some(path));
    }
    let (unit, explicit) = match &opts.unit {
        Some(u) => (u.as_str(), true),
        None => (DEFAULT_RESOLVER_UNIT, false),
    };
    match targeting::find_unit_cgroup(mount, unit) {
        Ok(path) if explicit || populated(&path) => Ok(Some(path)),
        Ok(_) => Ok(None),
        Err(_) if explicit => Err(DnsError::NoUnit {
            unit: unit.to_owned(),
            mount: mount.display().to_string(),
        }),
        Err(_) => Ok(None),
    }
}

/// Whether processes run in the cgroup (`populated 1` in `cgroup.events`).
fn populated(cgroup: &Path) -> bool {
    std::fs::read_to_string(cgroup.join("cgroup.events"))
        .is_ok_and(|s| s.lines().any(|l| l.trim() == "populated 1"))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests;
