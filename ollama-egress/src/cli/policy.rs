//! `ollama-egress policy check`.

use std::{io::Write, net::IpAddr, path::PathBuf};

use anyhow::Context as _;
use clap::Subcommand;

use super::GeoArgs;
use crate::inputs;

/// Policy subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file and print what it compiles to; exits non-zero with the line and
    /// the problem when it is invalid.
    Check {
        /// The policy file (TOML).
        file: PathBuf,
        /// Geo databases, for country and ASN rules.
        #[command(flatten)]
        geo: GeoArgs,
        /// Also show the verdict and rule for these addresses.
        #[arg(long, value_name = "IP")]
        explain: Vec<IpAddr>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

impl PolicyCommand {
    /// Runs the subcommand.
    pub fn run(&self, out: &mut dyn Write) -> anyhow::Result<()> {
        let Self::Check {
            file,
            geo,
            explain,
            json,
        } = self;
        let policy = inputs::load_policy(Some(file))?;
        let (country, asn) = inputs::geo_paths(geo.geo_db.as_deref(), geo.asn_db.as_deref());
        let db = inputs::open_geo(country.as_deref(), asn.as_deref())?;
        let compiled = inputs::compile_policy(&policy, db.as_deref())?;
        let summary = compiled.summary();
        if *json {
            serde_json::to_writer_pretty(&mut *out, &summary).context("writing JSON")?;
            writeln!(out)?;
        } else {
            let text = summary.to_string();
            write!(out, "{text}")?;
            if !text.ends_with('\n') {
                writeln!(out)?;
            }
            writeln!(out, "policy OK")?;
        }
        for ip in explain {
            let (action, rule) = compiled.lookup(*ip);
            writeln!(
                out,
                "{ip}{}: {} by {}",
                judged_as(*ip),
                action.as_str(),
                compiled.rule_name(rule)
            )?;
        }
        Ok(())
    }
}

/// How an IPv6 address that carries an IPv4 address is judged, e.g. ` (NAT64 of 203.0.113.7)`;
/// empty for any other address.
fn judged_as(ip: IpAddr) -> String {
    let IpAddr::V6(v6) = ip else {
        return String::new();
    };
    match ollama_egress_common::embedded_ipv4(&v6.octets()) {
        Some((v4, form)) => format!(
            " ({} of {})",
            crate::model::Via::from_kernel(form)
                .ok()
                .flatten()
                .map_or("IPv6", crate::model::Via::describe),
            std::net::Ipv4Addr::from(v4)
        ),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explain_names_the_ipv4_address_an_ipv6_form_carries() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            judged_as(ip("64:ff9b::203.0.113.7")),
            " (NAT64 of 203.0.113.7)"
        );
        assert_eq!(judged_as(ip("2002:cb00:7107::1")), " (6to4 of 203.0.113.7)");
        assert_eq!(judged_as(ip("2001:db8::1")), "");
        assert_eq!(judged_as(ip("203.0.113.7")), "");
    }
}
