//! [`Aggregate`]: the logged connections counted per name, address and private range.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use super::{Tally, kernel_guard};
use crate::logstore::EventRecord;
use crate::model::{Direction, Verdict};
use crate::policy::{Policy, canonical_name};

/// One address and what the log said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrTally {
    /// The connections.
    pub tally: Tally,
    /// The AS number the log tagged it with (the newest record's).
    pub asn: Option<u32>,
    /// The AS organisation the log tagged it with.
    pub as_org: Option<String>,
}

/// The addresses of one direction: public ones one by one, loopback and private ones per
/// range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Side {
    /// Public addresses (IPv4-mapped IPv6 as IPv4).
    pub addrs: BTreeMap<IpAddr, AddrTally>,
    /// Loopback and private ranges used, by range (`127.0.0.0/8`, `10.0.0.0/8`, …).
    pub ranges: BTreeMap<IpNet, Tally>,
}

/// What was left out, for the summary on stderr.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skipped {
    /// `blocked` records (enforce mode), left out unless `--include-blocked`.
    pub blocked: u64,
    /// Records a kernel guard decided (see [`kernel_guard`]).
    pub guards: u64,
    /// Inbound records without a source address.
    pub inbound_without_src: u64,
}

/// The log, counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    /// Outbound connections with a known `host`, by canonical name.
    pub names: BTreeMap<String, Tally>,
    /// Outbound connections without a name.
    pub outbound: Side,
    /// Inbound connections, by source.
    pub inbound: Side,
    /// Inbound records seen (the `[inbound]` section is written only when there are some).
    pub inbound_records: u64,
    /// Records counted.
    pub records: u64,
    /// Records left out.
    pub skipped: Skipped,
    /// Keep `blocked` records too.
    include_blocked: bool,
    /// Loopback and the private ranges of the built-in policy.
    local: Vec<IpNet>,
}

/// The peer of an inbound record: `src` on its line (the record type keeps the local side).
#[derive(Deserialize)]
struct InboundPeer {
    #[serde(default)]
    src: Option<IpAddr>,
}

impl Aggregate {
    /// An empty aggregate; `include_blocked` keeps `blocked` records too.
    pub fn new(include_blocked: bool) -> Aggregate {
        let mut local: Vec<IpNet> = Policy::builtin().allow.cidrs;
        // The most specific range first, so that a lookup finds the narrowest.
        local.sort_by_key(|n| std::cmp::Reverse(n.prefix_len()));
        Aggregate {
            names: BTreeMap::new(),
            outbound: Side::default(),
            inbound: Side::default(),
            inbound_records: 0,
            records: 0,
            skipped: Skipped::default(),
            include_blocked,
            local,
        }
    }

    /// Counts one record; `raw` is its log line (inbound records name their peer there).
    pub fn add(&mut self, r: &EventRecord, raw: &[u8]) {
        if r.verdict == Verdict::Blocked && !self.include_blocked {
            self.skipped.blocked += 1;
            return;
        }
        if kernel_guard(r) {
            self.skipped.guards += 1;
            return;
        }
        if r.direction == Direction::Inbound {
            self.inbound_records += 1;
            let peer = serde_json::from_slice::<InboundPeer>(raw)
                .ok()
                .and_then(|p| p.src);
            let Some(src) = peer else {
                self.skipped.inbound_without_src += 1;
                return;
            };
            self.records += 1;
            add_addr(&mut self.inbound, &self.local, src, r);
            return;
        }
        self.records += 1;
        if let Some(name) = r.host.as_deref().and_then(|h| canonical_name(h).ok()) {
            match self.names.get_mut(&name) {
                Some(t) => t.add(r),
                None => {
                    self.names.insert(name, Tally::of(r));
                }
            }
            return;
        }
        add_addr(&mut self.outbound, &self.local, r.dst, r);
    }

    /// The newest and oldest connection counted, if any.
    pub fn period(&self) -> Option<(time::OffsetDateTime, time::OffsetDateTime)> {
        let tallies = self
            .names
            .values()
            .chain(self.outbound.ranges.values())
            .chain(self.inbound.ranges.values())
            .chain(self.outbound.addrs.values().map(|a| &a.tally))
            .chain(self.inbound.addrs.values().map(|a| &a.tally));
        tallies.fold(None, |acc, t| match acc {
            None => Some((t.first, t.last)),
            Some((f, l)) => Some((f.min(t.first), l.max(t.last))),
        })
    }
}

fn add_addr(side: &mut Side, local: &[IpNet], ip: IpAddr, r: &EventRecord) {
    let ip = ollama_egress_geo::normalize_ip(ip);
    if let Some(range) = local.iter().find(|n| n.contains(&ip)) {
        match side.ranges.get_mut(range) {
            Some(t) => t.add(r),
            None => {
                side.ranges.insert(*range, Tally::of(r));
            }
        }
        return;
    }
    match side.addrs.get_mut(&ip) {
        Some(a) => {
            a.tally.add(r);
            if r.asn.is_some() {
                a.asn = r.asn;
                a.as_org.clone_from(&r.as_org);
            }
        }
        None => {
            side.addrs.insert(
                ip,
                AddrTally {
                    tally: Tally::of(r),
                    asn: r.asn,
                    as_org: r.as_org.clone(),
                },
            );
        }
    }
}
