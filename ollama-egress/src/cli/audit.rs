//! `ollama-egress audit`: Ollama's exposure as findings; exit 1 when one is high.

use std::{io::Write, path::PathBuf};

use clap::Args;

use super::{GeoArgs, TargetArgs};
use crate::{
    audit::{self, AuditError, AuditOptions, Report, SystemHost},
    defaults,
};

/// Options of `audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Which Ollama to audit (the same options as `run`).
    #[command(flatten)]
    pub target: TargetArgs,
    /// Policy file (TOML) `run` uses. [default: /etc/ollama-egress/policy.toml, or the built-in
    /// policy when that file does not exist]
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Geo databases (checked for age).
    #[command(flatten)]
    pub geo: GeoArgs,
    /// bpffs directory where `run --enforce` pins programs and links.
    #[arg(long, value_name = "DIR", default_value = defaults::PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Print one JSON document (findings and summary) instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl AuditArgs {
    /// The audit's options.
    pub fn options(&self) -> AuditOptions {
        AuditOptions {
            target: self.target.spec(),
            engine_socket: self.target.engine_socket.clone(),
            policy: self.policy.clone(),
            pin_dir: self.pin_dir.clone(),
            geo_db: self.geo.geo_db.clone(),
            asn_db: self.geo.asn_db.clone(),
        }
    }

    /// Audits and prints the report; returns the exit status (1 when a high-severity finding
    /// exists, else 0).
    pub fn run(&self, out: &mut dyn Write) -> Result<u8, AuditError> {
        let report = Report::new(audit::gather(&self.options(), &SystemHost)?);
        let written = if self.json {
            audit::render::json(&report, out)
        } else {
            audit::render::text(&report, out)
        };
        // A closed stdout (`audit | head`) does not change the verdict.
        let _ = written.and_then(|()| out.flush());
        Ok(report.exit_code())
    }
}
