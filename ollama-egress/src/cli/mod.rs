//! The command line: `run`, `logs`, `status`, `policy check`, `audit`, `detach`, `geo lookup|update`.

mod audit;
mod detach;
mod docs;
mod geo;
pub mod logs;
mod policy;
mod run;
mod status;
mod target;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use audit::AuditArgs;
pub use detach::DetachArgs;
pub use docs::{CompletionsArgs, LONG_VERSION, ManpagesArgs};
pub use geo::GeoCommand;
pub use logs::LogsArgs;
pub use policy::PolicyCommand;
pub use run::RunArgs;
pub use status::StatusArgs;
pub use target::TargetArgs;

/// Watch and control where a local LLM server (Ollama) connects, in the kernel, with eBPF.
///
/// Start with `run --monitor` to record every outbound connection of Ollama's processes with
/// the policy's verdict (nothing is blocked), review them with `logs`, then switch to
/// `run --enforce` to drop denied connections in the kernel.
#[derive(Debug, Parser)]
#[command(
    name = "ollama-egress",
    version,
    long_version = LONG_VERSION,
    propagate_version = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per invocation; `run` has the most options
pub enum Command {
    /// Attach to Ollama's cgroup and record (--monitor) or enforce (--enforce) the policy.
    Run(RunArgs),
    /// Query the event log.
    Logs(LogsArgs),
    /// Show what a running daemon is doing.
    Status(StatusArgs),
    /// Report Ollama's exposure (listening addresses, environment, user, sandboxing, policy,
    /// enforcement, geo databases) as findings with fixes; exit 1 when one is high, 2 when the
    /// audit cannot be done.
    Audit(AuditArgs),
    /// Stop enforcing: detach the pinned programs from the cgroup and remove the pins.
    Detach(DetachArgs),
    /// Work with policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Geo databases: look up an address, download the databases.
    #[command(subcommand)]
    Geo(GeoCommand),
    /// Print a shell completion script, e.g. `ollama-egress completions bash >
    /// /etc/bash_completion.d/ollama-egress`.
    Completions(CompletionsArgs),
    /// Write the man pages into a directory (used by packaging).
    #[command(hide = true)]
    Manpages(ManpagesArgs),
}

/// Options shared by commands that read the geo databases.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GeoArgs {
    /// Country database (mmdb, ip-location-db or GeoLite2 layout).
    /// [default: /var/lib/ollama-egress/geo/country.mmdb when present]
    #[arg(long, value_name = "FILE")]
    pub geo_db: Option<PathBuf>,
    /// ASN database (mmdb, GeoLite2-ASN layout).
    /// [default: /var/lib/ollama-egress/geo/asn.mmdb when present]
    #[arg(long, value_name = "FILE")]
    pub asn_db: Option<PathBuf>,
}
