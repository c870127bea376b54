//! `ollama-egress geo lookup|update`.

use std::{io::Write, net::IpAddr, path::PathBuf};

use clap::Subcommand;

use ollama_egress_geo::{GeoInfo, UpdateReport};

use super::GeoArgs;
use crate::inputs;
use crate::terminal::printable;

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
        #[arg(long, value_name = "DIR", default_value = crate::defaults::GEO_DIR)]
        dir: PathBuf,
        /// npm registry base URL.
        #[arg(long, value_name = "URL", default_value = ollama_egress_geo::DEFAULT_REGISTRY)]
        registry: String,
    },
}

impl GeoCommand {
    /// Runs the subcommand.
    ///
    /// Text that comes from the databases or the registry (organisation names, package
    /// versions, messages that quote them) goes through [`printable`]: it never reaches the
    /// terminal with control or bidirectional-override characters.
    pub fn run(&self, out: &mut dyn Write) -> anyhow::Result<()> {
        match self {
            Self::Lookup { ip, geo } => {
                let (country, asn) =
                    inputs::geo_paths(geo.geo_db.as_deref(), geo.asn_db.as_deref());
                let db = inputs::open_geo(country.as_deref(), asn.as_deref())
                    .map_err(|e| anyhow::anyhow!("{}", printable(&e.to_string())))?;
                let Some(db) = db else {
                    anyhow::bail!(
                        "no geo database: run `ollama-egress geo update` or pass --geo-db/--asn-db"
                    );
                };
                print_lookup(out, *ip, &db.lookup(*ip))
            }
            Self::Update { dir, registry } => {
                let opts = ollama_egress_geo::UpdateOptions {
                    dir: dir.clone(),
                    registry: registry.clone(),
                    ..Default::default()
                };
                let report = ollama_egress_geo::update(&opts)
                    .map_err(|e| anyhow::anyhow!("{}", printable(&e.to_string())))?;
                print_update(out, &report)
            }
        }
    }
}

/// The `geo lookup` answer.
fn print_lookup(out: &mut dyn Write, ip: IpAddr, info: &GeoInfo) -> anyhow::Result<()> {
    let show = |v: Option<&str>| printable(v.unwrap_or("unknown")).into_owned();
    writeln!(out, "address: {ip}")?;
    writeln!(out, "country: {}", show(info.country.as_deref()))?;
    writeln!(
        out,
        "asn:     {}",
        show(info.asn.map(|a| a.to_string()).as_deref())
    )?;
    writeln!(out, "as_org:  {}", show(info.as_org.as_deref()))?;
    Ok(())
}

/// What `geo update` installed.
fn print_update(out: &mut dyn Write, report: &UpdateReport) -> anyhow::Result<()> {
    for p in [&report.country, &report.asn] {
        writeln!(
            out,
            "{} {} -> {}",
            printable(&p.package),
            printable(&p.version),
            printable(&p.path.display().to_string())
        )?;
    }
    writeln!(out, "{}", ollama_egress_geo::ATTRIBUTION)?;
    Ok(())
}

#[cfg(test)]
mod tests;
