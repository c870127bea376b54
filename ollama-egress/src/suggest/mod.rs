//! From the log to a policy and back: `policy suggest` ([`suggest()`]: aggregate the logged
//! connections, merge them into few rules, write TOML) and `policy replay` ([`replay()`]: judge
//! the logged connections with a compiled policy and list what would change).
//!
//! Both stream the log once through [`crate::logstore::scan`] (the reader `logs` uses: bounded
//! lines, malformed lines counted and skipped); memory grows with the number of distinct
//! destinations, never with the log's size.
//!
//! The merging rule (also in `policy suggest --help` and the README):
//! * a connection whose `host` is known allows that name; [`WILDCARD_SIBLINGS`] or more names
//!   directly under one parent (`a.cdn.example.net`, `b.cdn.example.net`, …) become
//!   `*.cdn.example.net`, never a wildcard over a bare top-level or common second-level suffix
//!   (`*.com`, `*.co.uk`);
//! * any other address is grouped with the addresses seen in the same /24 (IPv4) or /48
//!   (IPv6), or, when the ASN database holds it, in the same network of its AS: a group of one
//!   stays a /32 (/128); a group of several becomes the narrowest network covering it, at least
//!   the /24 (/48) — so it never spans two ASes' networks, and never grows past the /24 (/48)
//!   without an ASN database. With `--asns` an address the ASN database (or the log) tags is
//!   allowed through its AS number instead (`asns = […]`, which needs the ASN database when the
//!   policy is checked or enforced);
//! * loopback is always allowed; a private or link-local range is allowed whole when the log
//!   used it;
//! * `default = "deny"`; `[inbound]` with loopback and the sources seen (merged the same way)
//!   only when the log holds inbound connections.

mod aggregate;
mod merge;
mod replay;
mod write;

use std::collections::BTreeSet;

use time::OffsetDateTime;

pub use aggregate::{AddrTally, Aggregate, Side, Skipped};
pub use merge::{
    AsnBounds, AsnEntry, Bound, Bounds, NameEntry, NetEntry, merge_addrs, merge_names,
};
pub use replay::{Change, ReplayReport, ReplaySummary, Verdict as ReplayVerdict, judge, replay};
pub use write::{SuggestOptions, Suggestion, suggest, write_policy};

use crate::logstore::{EventRecord, LogError};
use crate::model::Hook;

/// Sibling names under one parent that become one `*.parent` rule, by default.
pub const WILDCARD_SIBLINGS: usize = 3;

/// The most process names and ports a tally keeps (the rest is summarised as "…").
pub const TALLY_LIST_MAX: usize = 6;

/// Errors of `policy suggest` and `policy replay`.
#[derive(Debug, thiserror::Error)]
pub enum SuggestError {
    /// The log could not be read (missing directory or log, permissions, I/O).
    #[error(transparent)]
    Log(#[from] LogError),
    /// The suggested policy did not pass the policy parser: a bug, never printed as a policy.
    #[error("the suggested policy does not parse (this is a bug, please report it): {0}")]
    Invalid(String),
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// Connections, processes, ports and first/last seen of one destination (or source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Logged connections.
    pub connections: u64,
    /// The oldest one.
    pub first: OffsetDateTime,
    /// The newest one.
    pub last: OffsetDateTime,
    /// Process names (`comm`), at most [`TALLY_LIST_MAX`].
    pub comms: BTreeSet<String>,
    /// Destination ports, at most [`TALLY_LIST_MAX`].
    pub ports: BTreeSet<u16>,
    /// More process names were seen than kept.
    pub more_comms: bool,
    /// More ports were seen than kept.
    pub more_ports: bool,
}

impl Tally {
    /// The tally of one record.
    pub fn of(r: &EventRecord) -> Tally {
        let mut t = Tally {
            connections: 0,
            first: r.ts,
            last: r.ts,
            comms: BTreeSet::new(),
            ports: BTreeSet::new(),
            more_comms: false,
            more_ports: false,
        };
        t.add(r);
        t
    }

    /// Counts one more record.
    pub fn add(&mut self, r: &EventRecord) {
        self.connections += 1;
        self.first = self.first.min(r.ts);
        self.last = self.last.max(r.ts);
        if !self.comms.contains(&r.comm) {
            keep(&mut self.comms, &mut self.more_comms, r.comm.clone());
        }
        keep(&mut self.ports, &mut self.more_ports, r.dport);
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &Tally) {
        self.connections += other.connections;
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
        self.more_comms |= other.more_comms;
        self.more_ports |= other.more_ports;
        for c in &other.comms {
            keep(&mut self.comms, &mut self.more_comms, c.clone());
        }
        for p in &other.ports {
            keep(&mut self.ports, &mut self.more_ports, *p);
        }
    }
}

fn keep<T: Ord>(set: &mut BTreeSet<T>, more: &mut bool, item: T) {
    if set.len() < TALLY_LIST_MAX || set.contains(&item) {
        set.insert(item);
    } else {
        *more = true;
    }
}

/// True for records a kernel guard decided rather than the policy's address and name rules
/// (a device open, a socket option, an IPv6 routing header, IPv4 source routing): no rule a
/// policy file can write changes them, so `suggest` leaves them out and `replay` keeps their
/// verdict. `no-policy` (enforcement without a valid policy) is a real destination.
pub fn kernel_guard(r: &EventRecord) -> bool {
    if matches!(r.hook, Some(Hook::DeviceOpen | Hook::Sockopt)) {
        return true;
    }
    r.rule != "no-policy"
        && (ollama_egress_common::RULE_RESERVED_MIN..=u32::MAX)
            .any(|id| ollama_egress_common::reserved_rule_name(id) == Some(r.rule.as_str()))
}

/// `ts` as `2026-11-22T10:00:00Z` (seconds are enough for comments and tables).
pub fn short_time(ts: OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    ts.to_offset(time::UtcOffset::UTC)
        .format(f)
        .unwrap_or_else(|_| "?".to_owned())
}

#[cfg(test)]
pub(crate) mod tests;
