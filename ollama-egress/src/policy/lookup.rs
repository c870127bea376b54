//! Lookups in a compiled policy: the userspace reference of the kernel's decisions
//! (`policy check --explain`, tests), for both directions.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use ollama_egress_common::{ACTION_DENY, PolicyValue, RULE_DEFAULT, V4_FORM_MAPPED, embedded_ipv4};

use super::compile::CompiledPolicy;
use super::domains::{DomainEntry, most_specific};
use super::parse::Action;
use crate::model::rule;

impl CompiledPolicy {
    /// The stable name of numeric rule id `id` in this policy: the rule's id, the kernel's own
    /// name for a reserved id ([`rule::special`]: `ipv6-routing-header`, `ipv4-source-route`,
    /// ...), `unknown` for an id not in the table. Events and metrics name rules with
    /// [`rule::event_rule`] instead, which also knows the generation an event came from.
    pub fn rule_name(&self, id: u32) -> &str {
        if let Some(name) = rule::special(id) {
            return name;
        }
        self.rules
            .get(id as usize)
            .map_or("unknown", |r| r.id.as_str())
    }

    /// The numeric id of the rule named `name`.
    pub fn rule_id(&self, name: &str) -> Option<u32> {
        self.rules
            .iter()
            .position(|r| r.id == name)
            .and_then(|i| u32::try_from(i).ok())
    }

    /// The verdict for destination `ip` and the numeric id of the rule that decided it, as the
    /// kernel computes it. An IPv4 address in IPv6 form (see
    /// [`ollama_egress_common::embedded_ipv4`]) is judged as its IPv4 address.
    /// A reference implementation (a linear scan): correct, not fast.
    pub fn lookup(&self, ip: IpAddr) -> (Action, u32) {
        match self.lookup_entry(ip) {
            // Any other action value cannot come from `compile`; fail closed regardless.
            Some((_, value)) => (
                Action::from_kernel(value.action).unwrap_or(Action::Deny),
                value.rule_id,
            ),
            None => (self.default_action, RULE_DEFAULT),
        }
    }

    /// The trie entry that decides destination `ip` (its longest matching prefix), or `None`
    /// when the default action applies.
    ///
    /// An IPv4-mapped address is IPv4 traffic: its IPv4 address decides. Other IPv4 addresses
    /// in IPv6 form (NAT64, 6to4, IPv4-compatible, IPv4-translated) leave as IPv6 and end at an
    /// IPv4 host: an IPv6 deny rule that covers the address decides, else its IPv4 address does
    /// (so allowing an IPv6 prefix never opens the IPv4 hosts behind a translator). The kernel
    /// programs judge the same way.
    pub fn lookup_entry(&self, ip: IpAddr) -> Option<(IpNet, PolicyValue)> {
        match ip {
            IpAddr::V4(a) => self.lookup_v4(a),
            IpAddr::V6(a) => match embedded_ipv4(&a.octets()) {
                Some((v4, V4_FORM_MAPPED)) => self.lookup_v4(Ipv4Addr::from(v4)),
                Some((v4, _)) => match self.lookup_v6(a) {
                    Some(hit) if hit.1.action == ACTION_DENY => Some(hit),
                    _ => self.lookup_v4(Ipv4Addr::from(v4)),
                },
                None => self.lookup_v6(a),
            },
        }
    }

    /// The domain rule that decides the canonical `name` (the most specific matching pattern,
    /// as the kernel's trie finds it), or `None` when no domain rule matches: then the IP rules
    /// decide the name's addresses.
    pub fn lookup_domain(&self, name: &str) -> Option<&DomainEntry> {
        most_specific(&self.domains, name)
    }

    /// The inbound verdict for source `ip` and the numeric id of the rule that decided it, as
    /// the kernel computes it (an IPv4-mapped address as IPv4; other addresses as they are).
    pub fn lookup_inbound(&self, ip: IpAddr) -> (Action, u32) {
        let hit = match ip.to_canonical() {
            IpAddr::V4(a) => longest(&self.inbound_v4, |n| n.contains(&a), |n| n.prefix_len()),
            IpAddr::V6(a) => longest(&self.inbound_v6, |n| n.contains(&a), |n| n.prefix_len()),
        };
        match hit {
            Some(v) => (
                Action::from_kernel(v.action).unwrap_or(Action::Deny),
                v.rule_id,
            ),
            // The inbound tries always cover every address; the kernel denies a miss.
            None => (Action::Deny, ollama_egress_common::RULE_NO_POLICY),
        }
    }

    fn lookup_v4(&self, a: Ipv4Addr) -> Option<(IpNet, PolicyValue)> {
        self.v4
            .iter()
            .filter(|(net, _)| net.contains(&a))
            .max_by_key(|(net, _)| net.prefix_len())
            .map(|(net, v)| (IpNet::V4(*net), *v))
    }

    fn lookup_v6(&self, a: Ipv6Addr) -> Option<(IpNet, PolicyValue)> {
        self.v6
            .iter()
            .filter(|(net, _)| net.contains(&a))
            .max_by_key(|(net, _)| net.prefix_len())
            .map(|(net, v)| (IpNet::V6(*net), *v))
    }
}

/// The value of the longest entry of `entries` that `contains` the address.
fn longest<N>(
    entries: &[(N, PolicyValue)],
    contains: impl Fn(&N) -> bool,
    len: impl Fn(&N) -> u8,
) -> Option<PolicyValue> {
    entries
        .iter()
        .filter(|(net, _)| contains(net))
        .max_by_key(|(net, _)| len(net))
        .map(|(_, v)| *v)
}
