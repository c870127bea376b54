//! [`suggest`]: the log → an [`Aggregate`] → merged entries → policy TOML
//! ([`write_policy`]), checked by the policy parser before it is printed.

use std::fmt::Write as _;
use std::path::Path;

use ipnet::IpNet;
use ollama_egress_geo::GeoDb;
use time::OffsetDateTime;

use super::merge::{AsnBounds, AsnEntry, Bounds, NameEntry, NetEntry, merge_addrs, merge_names};
use super::{Aggregate, Side, SuggestError, Tally, short_time};
use crate::logstore::{Filter, QueryStats, scan};
use crate::policy::Policy;

/// What `suggest` made.
#[derive(Debug, Clone)]
pub struct Suggestion {
    /// The policy text.
    pub toml: String,
    /// The log as counted.
    pub aggregate: Aggregate,
    /// The log reading.
    pub stats: QueryStats,
}

/// Options of [`suggest`].
#[derive(Debug, Clone, Default)]
pub struct SuggestOptions<'a> {
    /// Only records at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Allow tagged addresses by AS number (`asns = […]`) instead of networks.
    pub by_asn: bool,
    /// See [`merge_names`].
    pub wildcard_siblings: usize,
    /// Keep `blocked` records too.
    pub include_blocked: bool,
    /// The ASN database, to bound merged networks by AS.
    pub geo: Option<&'a GeoDb>,
}

/// Reads the log in `dir` once and writes the policy that allows what it shows.
pub fn suggest(dir: &Path, opts: &SuggestOptions<'_>) -> Result<Suggestion, SuggestError> {
    let filter = Filter {
        since: opts.since,
        ..Filter::default()
    };
    let mut agg = Aggregate::new(opts.include_blocked);
    let stats = scan(dir, &filter, |r, raw| {
        agg.add(r, raw);
        Ok(())
    })?;
    let source = dir.display().to_string();
    let (toml, _inbound) = match opts.geo.filter(|g| g.has_asn()) {
        Some(db) => write_policy(&agg, &mut AsnBounds::new(db), opts, &source),
        None => write_policy(&agg, &mut (), opts, &source),
    };
    // What is printed parses as a policy, `[inbound]` included: a suggestion that does not is
    // a bug here, never a file to fix by hand.
    Policy::from_toml_str(&toml, "the suggested policy")
        .map_err(|e| SuggestError::Invalid(e.to_string()))?;
    Ok(Suggestion {
        toml,
        aggregate: agg,
        stats,
    })
}

/// The policy text for `agg`, and the `[inbound]` section at its end when there is one.
pub fn write_policy(
    agg: &Aggregate,
    bounds: &mut dyn Bounds,
    opts: &SuggestOptions<'_>,
    source: &str,
) -> (String, Option<String>) {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Suggested by `ollama-egress policy suggest` from {}:",
        comment_text(source)
    );
    let period = match agg.period() {
        Some((first, last)) => format!("{} to {}", short_time(first), short_time(last)),
        None => "no connections".to_owned(),
    };
    let _ = writeln!(
        s,
        "# {} connections ({period}). Review it, then try it with `policy replay`.",
        agg.records
    );
    s.push_str("default = \"deny\"\n\n[allow]\n");
    let names = merge_names(&agg.names, opts.wildcard_siblings);
    if !names.is_empty() {
        s.push_str("# Names are allowed while the daemon has seen them resolved to an address.\n");
        list(&mut s, "domains", names.iter().map(name_line));
    }
    let (nets, asns) = merge_addrs(&agg.outbound.addrs, bounds, opts.by_asn);
    list(&mut s, "cidrs", cidr_lines(&agg.outbound, &nets));
    if !asns.is_empty() {
        s.push_str("# AS numbers need the ASN database (--asn-db) to check and enforce.\n");
        list(&mut s, "asns", asns.iter().map(asn_line));
    }
    if agg.inbound_records == 0 {
        return (s, None);
    }
    let mut inbound = String::new();
    let _ = writeln!(
        inbound,
        "\n# Sources of the {} inbound connections.",
        agg.inbound_records
    );
    inbound.push_str("[inbound]\ndefault = \"deny\"\n\n[inbound.allow]\n");
    let (nets, asns) = merge_addrs(&agg.inbound.addrs, bounds, opts.by_asn);
    list(&mut inbound, "cidrs", cidr_lines(&agg.inbound, &nets));
    if !asns.is_empty() {
        list(&mut inbound, "asns", asns.iter().map(asn_line));
    }
    s.push_str(&inbound);
    (s, Some(inbound))
}

/// `key = [` one value per line with its comment `]`.
fn list(s: &mut String, key: &str, lines: impl IntoIterator<Item = (String, String)>) {
    let _ = writeln!(s, "{key} = [");
    for (value, comment) in lines {
        let _ = writeln!(s, "  {value}, # {}", comment_text(&comment));
    }
    s.push_str("]\n");
}

fn name_line(e: &NameEntry) -> (String, String) {
    let what = if e.names > 1 {
        format!("{} names, ", e.names)
    } else {
        String::new()
    };
    (quoted(&e.pattern), format!("{what}{}", describe(&e.tally)))
}

fn asn_line(e: &AsnEntry) -> (String, String) {
    let org = e
        .as_org
        .as_deref()
        .map_or(String::new(), |o| format!(" {o}"));
    (
        e.asn.to_string(),
        format!(
            "AS{}{org}: {} addresses, {}",
            e.asn,
            e.addresses,
            describe(&e.tally)
        ),
    )
}

/// Loopback (always), the private ranges used and the merged networks.
fn cidr_lines(side: &Side, nets: &[NetEntry]) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    let lo: [IpNet; 2] = [
        "127.0.0.0/8".parse().expect("valid"),
        "::1/128".parse().expect("valid"),
    ];
    for net in lo {
        let comment = match side.ranges.get(&net) {
            Some(t) => format!("loopback: {}", describe(t)),
            None => "loopback: always allowed (Ollama serves and calls itself there)".into(),
        };
        lines.push((quoted(&net.to_string()), comment));
    }
    for (net, t) in side.ranges.iter().filter(|(n, _)| !lo.contains(n)) {
        lines.push((
            quoted(&net.to_string()),
            format!("private range: {}", describe(t)),
        ));
    }
    for e in nets {
        let mut what = match e.addresses {
            1 => String::new(),
            n => format!("{n} addresses, "),
        };
        if let Some(b) = &e.within {
            let org = b
                .as_org
                .as_deref()
                .map_or(String::new(), |o| format!(" {o}"));
            what = format!("AS{}{org} ({}): {what}", b.asn, b.net);
        }
        lines.push((
            quoted(&e.net.to_string()),
            format!("{what}{}", describe(&e.tally)),
        ));
    }
    lines
}

/// `12 connections, egress-probe, ports 443 8080, 2026-11-22T10:00:00Z .. 2026-11-22T11:00:00Z`.
pub(super) fn describe(t: &Tally) -> String {
    let more = |m: bool| if m { " …" } else { "" };
    let comms: Vec<&str> = t.comms.iter().map(String::as_str).collect();
    let ports: Vec<String> = t.ports.iter().map(u16::to_string).collect();
    let plural = |n: u64| if n == 1 { "" } else { "s" };
    format!(
        "{} connection{}, {}{}, port{} {}{}, {} .. {}",
        t.connections,
        plural(t.connections),
        comms.join(" "),
        more(t.more_comms),
        plural(t.ports.len() as u64),
        ports.join(" "),
        more(t.more_ports),
        short_time(t.first),
        short_time(t.last)
    )
}

/// A comment's text: controls (a newline would end the comment) and the characters a
/// terminal must not get become `?`.
fn comment_text(text: &str) -> String {
    crate::terminal::printable(text).into_owned()
}

/// A TOML basic string (names and networks need no escapes, but never trust that).
fn quoted(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 2);
    s.push('"');
    for c in text.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(s, "\\u{:04X}", u32::from(c));
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}
