//! `ollama-egress geo lookup|update`.

use std::{io::Write, net::IpAddr, path::PathBuf};

use clap::Subcommand;

use super::GeoArgs;
use crate::daemon::inputs;

/// Geo subcommands.
#[derive(Debug, Subcommand)]
pub enum GeoCommand {
    /// Print what the databases say about an address.
    Lookup {
        /// The address (IPv4, IPv6, or IPv4-mapped IPv6).
        ip: IpAddr,
        /// The databases.
        #[command(flatten)]
        geo: GeoArgs,
    },
    /// Download the country and ASN databases (ip-location-db, CC BY 4.0) from the npm
    /// registry, verify them, and replace the old files atomically.
    Update {
        /// Where to write country.mmdb and asn.mmdb.
        #[arg(long, value_name = "DIR", default_value = ollama_egress_geo::DEFAULT_DIR)]
        dir: PathBuf,
        /// npm registry base URL.
        #[arg(long, value_name = "URL", default_value = ollama_egress_geo::DEFAULT_REGISTRY)]
        registry: String,
    },
}

impl GeoCommand {
    /// Runs the subcommand.
    pub fn run(&self, out: &mut dyn Write) -> anyhow::Result<()> {
        match self {
            Self::Lookup { ip, geo } => {
                let (country, asn) =
                    inputs::geo_paths(geo.geo_db.as_deref(), geo.asn_db.as_deref());
                let Some(db) = inputs::open_geo(country.as_deref(), asn.as_deref())? else {
                    anyhow::bail!(
                        "no geo database: run `ollama-egress geo update` or pass --geo-db/--asn-db"
                    );
                };
                let info = db.lookup(*ip);
                let show = |v: Option<String>| v.unwrap_or_else(|| "unknown".to_owned());
                writeln!(out, "address: {ip}")?;
                writeln!(out, "country: {}", show(info.country))?;
                writeln!(out, "asn:     {}", show(info.asn.map(|a| a.to_string())))?;
                writeln!(out, "as_org:  {}", show(info.as_org))?;
                Ok(())
            }
            Self::Update { dir, registry } => {
                let opts = ollama_egress_geo::UpdateOptions {
                    dir: dir.clone(),
                    registry: registry.clone(),
                    ..Default::default()
                };
                let report = ollama_egress_geo::update(&opts)?;
                for p in [&report.country, &report.asn] {
                    writeln!(out, "{} {} -> {}", p.package, p.version, p.path.display())?;
                }
                writeln!(out, "{}", ollama_egress_geo::ATTRIBUTION)?;
                Ok(())
            }
        }
    }
}
