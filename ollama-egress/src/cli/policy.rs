//! `ollama-egress policy check`, `policy suggest`, `policy replay`.

use std::{io::Write, net::IpAddr, path::PathBuf};

use anyhow::Context as _;
use clap::Subcommand;

use ollama_egress_common::ACTION_DENY;

use super::GeoArgs;
use crate::{
    daemon::names::NamesSnapshot,
    inputs,
    pipeline::{NameBinding, bound_form},
    policy::{CompiledPolicy, canonical_name},
};

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
        /// Also show the verdict and rule for these addresses, or the domain rule for these
        /// names and the addresses a running daemon has bound to them (repeatable).
        #[arg(long, value_name = "IP|NAME", value_parser = explain_arg)]
        explain: Vec<Explain>,
        /// The running daemon's --log-dir, where it keeps the names it learned (names.json),
        /// for --explain.
        #[arg(long, value_name = "DIR", default_value = crate::defaults::LOG_DIR)]
        log_dir: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a policy (TOML, on stdout) that allows what the log shows was needed.
    ///
    /// Names where the log knows the `host` (exact; 3 or more names directly under one
    /// parent become `*.parent`, see --wildcard-siblings, never `*.com` or `*.co.uk`). Other
    /// addresses: one alone is a /32 (/128); several in one /24 (/48) become that /24 (/48);
    /// with an ASN database, several in one network of their AS become the narrowest network
    /// covering them (at least the /24 or /48, never past the AS's network); with --asns, the
    /// AS number instead. Loopback always; a private or link-local range whole when the log
    /// used it. `default = "deny"`. Every entry has a comment: connections, processes, ports,
    /// first and last seen. Sources of inbound connections (and loopback) go in `[inbound]`,
    /// only when the log has some. `allowed` and `would_block` records count, `blocked` ones only with
    /// --include-blocked. Malformed log lines are counted on stderr and skipped.
    Suggest(SuggestArgs),
    /// Judge the logged connections with a policy file and print what would change, per
    /// destination: allowed → blocked and blocked → allowed (host, address, the rule that
    /// would decide, count, last seen), then a summary.
    ///
    /// Names are judged through the logged `host` (the domain rule for it, else the address
    /// rules), as the kernel judges an address bound to that name. Exit status: 0 when
    /// nothing that was allowed would be blocked, 1 when something would be, 2 on an error
    /// (unreadable log, invalid policy).
    Replay(ReplayArgs),
}

/// `policy suggest` options.
#[derive(Debug, clap::Args)]
pub struct SuggestArgs {
    /// Only connections at or after this time: a duration ago (90s, 15m, 1h, 2d, 1h30m) or an
    /// RFC 3339 time (2026-11-22T10:00:00Z).
    #[arg(long, value_name = "DUR|TIME", value_parser = super::logs::since_arg)]
    pub since: Option<time::OffsetDateTime>,
    /// Directory holding events.jsonl: the daemon's --log-dir.
    #[arg(long, value_name = "DIR", default_value = crate::defaults::LOG_DIR)]
    pub log_dir: PathBuf,
    /// Allow addresses the ASN database (or the log) tags by their AS number (`asns = [...]`:
    /// every network of the AS) rather than by networks; the policy then needs the ASN
    /// database to be checked and enforced.
    #[arg(long)]
    pub asns: bool,
    /// How many sibling names under one parent become one `*.parent` rule (0 or 1: never).
    #[arg(long, value_name = "N", default_value_t = crate::suggest::WILDCARD_SIBLINGS)]
    pub wildcard_siblings: usize,
    /// Count `blocked` records (enforce mode) as needed too.
    #[arg(long)]
    pub include_blocked: bool,
    /// Geo databases: the ASN database bounds merged networks by AS.
    #[command(flatten)]
    pub geo: GeoArgs,
}

/// `policy replay` options.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The policy file (TOML) to judge the log with.
    pub file: PathBuf,
    /// Only connections at or after this time: a duration ago (90s, 15m, 1h, 2d, 1h30m) or an
    /// RFC 3339 time (2026-11-22T10:00:00Z).
    #[arg(long, value_name = "DUR|TIME", value_parser = super::logs::since_arg)]
    pub since: Option<time::OffsetDateTime>,
    /// Directory holding events.jsonl: the daemon's --log-dir.
    #[arg(long, value_name = "DIR", default_value = crate::defaults::LOG_DIR)]
    pub log_dir: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Geo databases, for country and ASN rules.
    #[command(flatten)]
    pub geo: GeoArgs,
}

impl PolicyCommand {
    /// Runs the subcommand; `err` gets warnings and summaries. Returns the exit status.
    pub fn run(&self, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<u8> {
        match self {
            Self::Check {
                file,
                geo,
                explain,
                log_dir,
                json,
            } => check(file, geo, explain, log_dir, *json, out).map(|()| 0),
            Self::Suggest(args) => history::suggest(args, out, err).map(|()| 0),
            Self::Replay(args) => history::replay(args, out, err),
        }
    }

    /// The exit status for an error of [`run`](Self::run): 2 for `replay` (1 means "would
    /// block"), 1 otherwise.
    pub fn error_status(&self) -> u8 {
        match self {
            Self::Replay(_) => 2,
            _ => 1,
        }
    }
}

fn check(
    file: &std::path::Path,
    geo: &GeoArgs,
    explain: &[Explain],
    log_dir: &std::path::Path,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    {
        let policy = inputs::load_policy(Some(file))?;
        let (country, asn) = inputs::geo_paths(geo.geo_db.as_deref(), geo.asn_db.as_deref());
        let db = inputs::open_geo(country.as_deref(), asn.as_deref())?;
        let compiled = inputs::compile_policy(&policy, db.as_deref())?;
        let summary = compiled.summary();
        if json {
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
        let bound = if explain.is_empty() {
            None
        } else {
            match NamesSnapshot::read(log_dir) {
                Ok(snap) => snap.map(|s| s.live_now()),
                Err(e) => {
                    writeln!(out, "cannot read the names in {}: {e}", log_dir.display())?;
                    None
                }
            }
        };
        for item in explain {
            for line in explain_lines(&compiled, item, bound.as_deref()) {
                writeln!(out, "{line}")?;
            }
        }
        Ok(())
    }
}

/// What `--explain` was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Explain {
    /// An address.
    Ip(IpAddr),
    /// A name, canonical.
    Name(String),
}

fn explain_arg(s: &str) -> Result<Explain, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(Explain::Ip(ip));
    }
    canonical_name(s)
        .map(Explain::Name)
        .map_err(|reason| format!("neither an IP address nor a host name: {reason}"))
}

/// The verdict of one address: the domain rules of the names bound to it when one decides
/// (deny wins), else the IP rules.
fn judge_ip(compiled: &CompiledPolicy, ip: IpAddr, bound: Option<&[NameBinding]>) -> String {
    let canon = bound_form(ip);
    let mut allow: Option<(&str, &NameBinding)> = None;
    let mut deny: Option<(&str, &NameBinding)> = None;
    for b in bound
        .unwrap_or_default()
        .iter()
        .filter(|b| bound_form(b.addr) == canon)
    {
        let Some(rule) = compiled.lookup_domain(&b.name) else {
            continue;
        };
        let name = compiled.rule_name(rule.value.rule_id);
        if rule.value.action == ACTION_DENY {
            deny.get_or_insert((name, b));
        } else {
            allow.get_or_insert((name, b));
        }
    }
    if let Some((rule, b)) = deny.or(allow) {
        let action = if deny.is_some() { "deny" } else { "allow" };
        return format!(
            "{action} by {rule} (bound to {}, {}s left)",
            b.name, b.expires_in_s
        );
    }
    let (action, rule) = compiled.lookup(ip);
    format!("{} by {}", action.as_str(), compiled.rule_name(rule))
}

/// The lines `--explain` prints for one item; `bound` is the running daemon's names table, when
/// there is one.
fn explain_lines(
    compiled: &CompiledPolicy,
    item: &Explain,
    bound: Option<&[NameBinding]>,
) -> Vec<String> {
    match item {
        Explain::Ip(ip) => {
            let (action, rule) = compiled.lookup_inbound(*ip);
            vec![
                format!("{ip}{}: {}", judged_as(*ip), judge_ip(compiled, *ip, bound)),
                format!(
                    "{ip} as a source (inbound): {} by {}",
                    action.as_str(),
                    compiled.rule_name(rule)
                ),
            ]
        }
        Explain::Name(name) => {
            let mut lines = vec![match compiled.lookup_domain(name) {
                Some(rule) => format!(
                    "{name}: {} by {}",
                    if rule.value.action == ACTION_DENY {
                        "deny"
                    } else {
                        "allow"
                    },
                    compiled.rule_name(rule.value.rule_id)
                ),
                None => format!("{name}: no domain rule: IP rules decide the addresses"),
            }];
            match bound {
                None => lines.push(
                    "  no names learned here (no daemon's names.json in --log-dir)".to_owned(),
                ),
                Some(bound) => {
                    let addrs: Vec<&NameBinding> =
                        bound.iter().filter(|b| b.name == *name).collect();
                    if addrs.is_empty() {
                        lines.push("  no addresses bound to it now".to_owned());
                    }
                    for b in addrs {
                        lines.push(format!(
                            "  bound to {} for {}s: {}",
                            b.addr,
                            b.expires_in_s,
                            judge_ip(compiled, b.addr, Some(bound))
                        ));
                    }
                }
            }
            lines
        }
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

mod history;

#[cfg(test)]
mod tests;
