//! [`Filter`]: which records a query or a follow returns.

use std::net::IpAddr;

use ipnet::IpNet;
use time::OffsetDateTime;

use super::EventRecord;
use crate::model::{Direction, Verdict};
use crate::policy::DomainPattern;

/// Which records a query returns. Every field left `None` matches everything; the fields that
/// are set must all match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this verdict.
    pub verdict: Option<Verdict>,
    /// Only this direction (`outbound`, `inbound`).
    pub direction: Option<Direction>,
    /// Only records at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only records at or before this time.
    pub until: Option<OffsetDateTime>,
    /// Only this ISO 3166 alpha-2 country, compared case-insensitively; records without a
    /// country never match.
    pub country: Option<String>,
    /// Only destinations inside this network. An IPv4-mapped IPv6 destination
    /// (`::ffff:a.b.c.d`) matches an IPv4 network holding `a.b.c.d`, and an IPv4 destination
    /// matches an IPv6 network holding its mapped form.
    pub dst: Option<IpNet>,
    /// Only this host name, or names under a `*.suffix`; records without a host never match.
    pub host: Option<DomainPattern>,
    /// Only this destination port.
    pub port: Option<u16>,
    /// Only this command name (exact).
    pub comm: Option<String>,
    /// Only this rule id; a trailing `*` makes it a prefix (`deny.*`, `deny.countries:*`).
    pub rule: Option<String>,
    /// Return only the newest N matches (still printed oldest first). Not part of
    /// [`matches`](Self::matches).
    pub limit: Option<usize>,
}

impl Filter {
    /// True when `r` passes every criterion that is set (`limit` aside).
    pub fn matches(&self, r: &EventRecord) -> bool {
        self.verdict.is_none_or(|v| v == r.verdict)
            && self.direction.is_none_or(|d| d == r.direction)
            && self.since.is_none_or(|t| r.ts >= t)
            && self.until.is_none_or(|t| r.ts <= t)
            && self.port.is_none_or(|p| p == r.dport)
            && self.comm.as_deref().is_none_or(|c| c == r.comm)
            && self.dst.as_ref().is_none_or(|net| net_contains(net, r.dst))
            && self.host.as_ref().is_none_or(|p| {
                r.host
                    .as_deref()
                    .is_some_and(|h| p.matches(&h.trim_end_matches('.').to_ascii_lowercase()))
            })
            && self.country.as_deref().is_none_or(|c| {
                r.country
                    .as_deref()
                    .is_some_and(|rc| rc.eq_ignore_ascii_case(c))
            })
            && self
                .rule
                .as_deref()
                .is_none_or(|want| match want.strip_suffix('*') {
                    Some(prefix) => r.rule.starts_with(prefix),
                    None => r.rule == want,
                })
    }
}

/// `net` holds `ip`, also across the IPv4-mapped IPv6 form.
pub(super) fn net_contains(net: &IpNet, ip: IpAddr) -> bool {
    if net.contains(&ip) {
        return true;
    }
    match (net, ip) {
        (IpNet::V4(net), IpAddr::V6(v6)) => v6.to_ipv4_mapped().is_some_and(|v4| net.contains(&v4)),
        (IpNet::V6(net), IpAddr::V4(v4)) => net.contains(&v4.to_ipv6_mapped()),
        _ => false,
    }
}
