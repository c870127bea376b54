//! Every default path, address and name of the command line and the daemon, in one place.
//!
//! | default | used by |
//! |---|---|
//! | [`LOG_DIR`] | `run --log-dir`, `logs --log-dir`, `status --log-dir` |
//! | [`POLICY_FILE`] | `run --policy`, `policy check` (the built-in policy when it is missing) |
//! | [`GEO_DIR`], [`geo_files`] | `--geo-db`/`--asn-db` (used when present), `geo update --dir` |
//! | [`PIN_DIR`] | `run --pin-dir`, `status`, `detach` |
//! | [`METRICS_ADDR`] | `run --metrics-addr` |
//! | [`PROCESS`] | `run` without `--cgroup`/`--unit` |

use std::path::{Path, PathBuf};

/// The directory of the event log and the daemon's state files.
pub const LOG_DIR: &str = "/var/lib/ollama-egress";

/// Where the policy is read from when `--policy` is not given.
pub const POLICY_FILE: &str = "/etc/ollama-egress/policy.toml";

/// Where `geo update` installs the databases, and where the other commands look for them.
pub use ollama_egress_geo::DEFAULT_DIR as GEO_DIR;

/// The bpffs directory of the pinned programs, links and maps.
pub const PIN_DIR: &str = "/sys/fs/bpf/ollama-egress";

/// The address of the Prometheus metrics endpoint.
pub const METRICS_ADDR: &str = "127.0.0.1:9464";

/// The process name `run` targets when no target is given.
pub const PROCESS: &str = "ollama";

/// The country and ASN database files: the given ones, else those `geo update` writes in
/// [`GEO_DIR`].
pub fn geo_files(country: Option<PathBuf>, asn: Option<PathBuf>) -> (PathBuf, PathBuf) {
    let dir = Path::new(GEO_DIR);
    (
        country.unwrap_or_else(|| dir.join(ollama_egress_geo::COUNTRY_FILE)),
        asn.unwrap_or_else(|| dir.join(ollama_egress_geo::ASN_FILE)),
    )
}
