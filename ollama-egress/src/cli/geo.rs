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
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::PathBuf;
    use std::time::Duration;

    use ollama_egress_geo::PackageReport;

    use super::*;
    use crate::terminal::is_unsafe;

    const NASTY: &str = "Evil\u{1b}]0;x\u{7}\u{9b}2J\u{85}Org\u{202e}gro\u{2066}";

    fn assert_safe(out: &[u8]) -> String {
        let out = String::from_utf8(out.to_vec()).unwrap();
        assert!(
            !out.chars().any(|c| c != '\n' && is_unsafe(c)),
            "raw control or bidi character reaches the terminal: {out:?}"
        );
        out
    }

    #[test]
    fn lookup_output_is_sanitised() {
        let info = GeoInfo {
            country: Some("CN".into()),
            asn: Some(64500),
            as_org: Some(NASTY.into()),
        };
        let mut out = Vec::new();
        print_lookup(&mut out, "203.0.113.7".parse().unwrap(), &info).unwrap();
        let out = assert_safe(&out);
        assert!(out.contains("as_org:  Evil?]0;x??2J?Org?gro?\n"), "{out}");
        assert!(
            out.contains("country: CN\n") && out.contains("asn:     64500\n"),
            "{out}"
        );
    }

    #[test]
    fn update_output_is_sanitised() {
        let package = |version: &str| PackageReport {
            package: "@ip-location-db/asn".into(),
            version: version.into(),
            integrity: "sha512-x".into(),
            tarball: "http://127.0.0.1/t.tgz".into(),
            path: PathBuf::from("/var/lib/ollama-egress/geo/asn.mmdb"),
            bytes: 1,
            ipv4_networks: 1,
            ipv6_networks: 0,
        };
        let report = UpdateReport {
            country: package(NASTY),
            asn: package("1.2.3"),
            source_file: PathBuf::from("/var/lib/ollama-egress/geo/SOURCE.json"),
            elapsed: Duration::from_secs(1),
        };
        let mut out = Vec::new();
        print_update(&mut out, &report).unwrap();
        let out = assert_safe(&out);
        assert!(
            out.contains("@ip-location-db/asn Evil?]0;x??2J?Org?gro? -> "),
            "{out}"
        );
        assert!(out.contains("@ip-location-db/asn 1.2.3 -> "), "{out}");
    }
}
