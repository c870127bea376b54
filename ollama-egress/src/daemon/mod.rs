//! `ollama-egress run`: load, attach, verify, then record events until told to stop.
//!
//! [`startup`] checks everything that can be wrong with the input before anything is attached,
//! then loads (or re-adopts pinned) programs, as a sequence of named steps. A started daemon
//! ([`running`]: the loop and the shutdown) has four owners: the policy runtime ([`runtime`]:
//! tables, decoder, rule book, the inputs of [`source`]), the task set ([`tasks`]: signals,
//! timers, followers, spawned tasks), the kernel handles ([`kernel`]: target cgroup, programs
//! and links, counters, locks) and what it reports ([`report`]: state file, metrics, tallies).

mod dns;
mod kernel;
mod kube;
pub mod names;
mod privileges;
mod report;
mod rulebook;
mod running;
mod runtime;
mod sink;
mod source;
mod startup;
pub mod state;
mod tasks;

use std::{net::SocketAddr, path::PathBuf};

use ollama_egress_geo::GeoError;

pub use dns::{DEFAULT_RESOLVER_UNIT, DnsError, DnsOptions};
pub use kernel::{Resolved, resolve as resolve_target};
pub use privileges::missing_capabilities;
pub use sink::{EventTally, LogSink};
pub use source::PolicySource;
pub use state::{Counters, DaemonState, DirectionCounts, VerdictCounts};

use crate::{
    loader::{LoaderError, PinError, TableError, TablePolicy},
    logstore::LogError,
    metrics::MetricsError,
    model::Mode,
    policy::{CompiledPolicy, PolicyError},
    targeting::{TargetError, TargetSpec},
};

/// Everything `run` needs, as resolved from the command line.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Monitor or enforce.
    pub mode: Mode,
    /// What to attach to.
    pub target: TargetSpec,
    /// The container engine's API socket for `--container` and automatic targeting; `None`:
    /// Docker's, then Podman's default socket.
    pub engine_socket: Option<PathBuf>,
    /// Policy file; `None` for the default file or the built-in policy.
    pub policy: Option<PathBuf>,
    /// Country database.
    pub geo_db: Option<PathBuf>,
    /// ASN database.
    pub asn_db: Option<PathBuf>,
    /// Where events and state are written.
    pub log_dir: PathBuf,
    /// Also write every event as a JSON line on stdout (`--log-stdout`).
    pub log_stdout: bool,
    /// Capacity of each policy table.
    pub max_prefixes: u32,
    /// Size of the event ring buffer in bytes.
    pub event_buffer_bytes: u32,
    /// bpffs directory for pinned programs, links and maps.
    pub pin_dir: PathBuf,
    /// Where the Prometheus metrics are served.
    pub metrics_addr: SocketAddr,
    /// Whether a non-loopback metrics address is allowed.
    pub metrics_allow_remote: bool,
    /// How names are learned.
    pub dns: DnsOptions,
}

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The process lacks capabilities.
    #[error("ollama-egress run needs {0} (run it as root or grant these capabilities)")]
    Privileges(String),
    /// The target could not be found or prepared.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The policy is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The geo databases could not be opened.
    #[error(transparent)]
    Geo(#[from] GeoError),
    /// Loading or attaching failed.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// Managing the pins failed.
    #[error(transparent)]
    Pin(#[from] PinError),
    /// Writing the policy into the kernel failed.
    #[error(transparent)]
    Table(#[from] TableError),
    /// Names cannot be learned as asked.
    #[error(transparent)]
    Dns(#[from] DnsError),
    /// The log could not be opened.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The metrics endpoint could not be set up.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// Enforcement is pinned and this daemon would run in monitor mode: taking it over would
    /// stop enforcing as a side effect.
    #[error(
        "enforcement is pinned in {pin_dir}: a monitor-mode daemon does not take it over (that would stop enforcing); run `ollama-egress detach --pin-dir {pin_dir}` first to switch to monitor mode, run with --enforce, or give a monitor of another target its own --pin-dir"
    )]
    PinnedEnforcement {
        /// The pin directory.
        pin_dir: String,
    },
    /// Another daemon is attached to the target.
    #[error(
        "cgroup {cgroup} is already the target of another ollama-egress daemon ({holder}); stop it first"
    )]
    TargetLocked {
        /// The target cgroup.
        cgroup: String,
        /// Who holds it.
        holder: String,
    },
    /// The `--cgroup` directory does not exist.
    #[error(
        "cgroup {path} does not exist (the cgroup v2 hierarchy is mounted at {mount}; a relative --cgroup is taken from there)"
    )]
    NoCgroup {
        /// The path, made absolute.
        path: String,
        /// The cgroup2 mount point.
        mount: String,
    },
    /// Another I/O failure (signals, state file, event reader).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> DaemonError {
    move |source| DaemonError::Io { what, source }
}

/// The policy in the form the kernel tables take.
pub fn table_policy(compiled: &CompiledPolicy, mode: Mode) -> TablePolicy<'_> {
    TablePolicy {
        v4: &compiled.v4,
        v6: &compiled.v6,
        default_action: compiled.default_action.to_kernel(),
        mode: mode.to_kernel(),
        domains: &compiled.domains,
        inbound_v4: &compiled.inbound_v4,
        inbound_v6: &compiled.inbound_v6,
    }
}

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn run(opts: RunOptions) -> Result<(), DaemonError> {
    let signals = tasks::Signals::install()?;
    let Some(daemon) = startup::start(opts, signals).await? else {
        // Stopped while waiting for the target (a Kubernetes pod): nothing was attached.
        return Ok(());
    };
    daemon.run().await
}
