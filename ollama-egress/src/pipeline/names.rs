//! The names table: which names the kernel bound to which addresses, from its [`DnsEvent`]s.
//!
//! It gives connect events their `host`, counts the live (address, name) pairs for the
//! `ollama_egress_dns_bindings` gauge, and rebuilds a policy slot's bindings at a reload (the
//! kernel's bindings of the old generation do not count for the new one). Bounded: at most
//! [`NamesTable::MAX_ADDRS`] addresses and [`NamesTable::MAX_NAMES`] names per address; the
//! least recently bound is evicted first, and every eviction is counted.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ollama_egress_common::{
    FAMILY_IPV4, FAMILY_IPV6,
    dns::{Binding, BindingKey, DNS_MAX_ADDRS, DnsEvent, EVENT_KIND_DNS, NAME_MAX, is_name_byte},
    embedded_ipv4,
};
use serde::Serialize;

use crate::policy::{Action, CompiledPolicy, DomainPattern};

const NS_PER_S: u64 = 1_000_000_000;

/// An answer as userspace sees it: the question name and its addresses with their lifetimes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LearnedAnswer {
    /// When the kernel learned it (`bpf_ktime_get_boot_ns()`).
    pub at_boot_ns: u64,
    /// The question name, canonical.
    pub name: String,
    /// The bound addresses and their clamped TTLs in seconds.
    pub addrs: Vec<(IpAddr, u32)>,
}

/// Why a ring-buffer record is not a valid DNS event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsEventError {
    /// Fewer bytes than a [`DnsEvent`], or a header of another kind or size.
    #[error("not a DNS event ({0} bytes)")]
    Size(usize),
    /// `n_addrs` or `name_len` out of range.
    #[error("DNS event with {n_addrs} addresses and a name of {name_len} bytes")]
    Counts {
        /// The address count.
        n_addrs: u32,
        /// The name length.
        name_len: u32,
    },
    /// The name is not canonical (the kernel never learns such a name).
    #[error("DNS event with a name that is not canonical")]
    Name,
    /// An address of an unknown family.
    #[error("DNS event with an address of family {0}")]
    Family(u32),
}

/// Decodes a [`DnsEvent`] from ring-buffer bytes.
pub fn decode_dns_event(bytes: &[u8]) -> Result<LearnedAnswer, DnsEventError> {
    if bytes.len() < DnsEvent::SIZE {
        return Err(DnsEventError::Size(bytes.len()));
    }
    // SAFETY: the length was checked, `DnsEvent` is plain old data without padding, and
    // `read_unaligned` copes with any alignment of the ring-buffer slice.
    let ev = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<DnsEvent>()) };
    if ev.header.kind != EVENT_KIND_DNS || ev.header.size as usize != DnsEvent::SIZE {
        return Err(DnsEventError::Size(bytes.len()));
    }
    let (n, len) = (ev.n_addrs as usize, ev.name_len as usize);
    if n > DNS_MAX_ADDRS || len == 0 || len > NAME_MAX {
        return Err(DnsEventError::Counts {
            n_addrs: ev.n_addrs,
            name_len: ev.name_len,
        });
    }
    let name = &ev.name[..len];
    let canonical = name
        .split(|&b| b == b'.')
        .all(|l| !l.is_empty() && l.len() <= 63 && l.iter().all(|&b| is_name_byte(b)));
    if !canonical {
        return Err(DnsEventError::Name);
    }
    let addrs = ev.addrs[..n]
        .iter()
        .map(|a| match a.family {
            FAMILY_IPV4 => Ok((
                IpAddr::V4(Ipv4Addr::new(a.addr[0], a.addr[1], a.addr[2], a.addr[3])),
                a.ttl_s,
            )),
            FAMILY_IPV6 => Ok((IpAddr::V6(Ipv6Addr::from(a.addr)), a.ttl_s)),
            other => Err(DnsEventError::Family(other)),
        })
        .collect::<Result<_, _>>()?;
    Ok(LearnedAnswer {
        at_boot_ns: ev.header.ts_boot_ns,
        // Checked above: ASCII only.
        name: String::from_utf8_lossy(name).into_owned(),
        addrs,
    })
}

/// The form an address is bound and judged in: an IPv4 address in any IPv6 form
/// ([`embedded_ipv4`]: mapped, NAT64, 6to4, ...) is its IPv4 address, as the kernel binds it.
pub fn bound_form(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match embedded_ipv4(&v6.octets()) {
            Some((v4, _)) => IpAddr::V4(Ipv4Addr::from(v4)),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// The kernel's key for an address: IPv4 (also in an IPv6 form) in the first four bytes.
pub fn binding_key(addr: IpAddr) -> BindingKey {
    let mut key = BindingKey::default();
    match bound_form(addr) {
        IpAddr::V4(a) => {
            key.addr[..4].copy_from_slice(&a.octets());
            key.family = FAMILY_IPV4;
        }
        IpAddr::V6(a) => {
            key.addr = a.octets();
            key.family = FAMILY_IPV6;
        }
    }
    key
}

#[derive(Clone, Debug)]
struct Bound {
    name: String,
    until_ns: u64,
    /// Order of the last answer that bound it (higher: more recent).
    seq: u64,
}

#[derive(Clone, Debug, Default)]
struct Names {
    names: Vec<Bound>,
    /// `seq` of the most recent binding, the key of this address in `NamesTable::order`.
    last: u64,
}

/// Address → names with expiry, bounded.
#[derive(Debug, Default)]
pub struct NamesTable {
    addrs: HashMap<IpAddr, Names>,
    /// Addresses by their most recent binding, oldest first (the eviction order).
    order: BTreeMap<u64, IpAddr>,
    seq: u64,
    evicted: u64,
    /// Bumped at every change, for the snapshot writer.
    version: u64,
}

/// One live (address, name) binding, for the snapshot and `policy check --explain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NameBinding {
    /// The address.
    pub addr: IpAddr,
    /// The name.
    pub name: String,
    /// Seconds the binding still lives.
    pub expires_in_s: u64,
}

impl NamesTable {
    /// Addresses kept at most.
    pub const MAX_ADDRS: usize = 65_536;
    /// Names kept per address at most.
    pub const MAX_NAMES: usize = 8;

    /// Learns an answer: each address is bound to the name until `at + ttl`.
    pub fn learn(&mut self, answer: &LearnedAnswer) {
        self.learn_bounded(answer, Self::MAX_ADDRS);
    }

    fn learn_bounded(&mut self, answer: &LearnedAnswer, max_addrs: usize) {
        self.version += 1;
        for &(addr, ttl) in &answer.addrs {
            let addr = bound_form(addr);
            self.seq += 1;
            let seq = self.seq;
            let until_ns = answer
                .at_boot_ns
                .saturating_add(u64::from(ttl).saturating_mul(NS_PER_S));
            let entry = self.addrs.entry(addr).or_default();
            if entry.last != 0 {
                self.order.remove(&entry.last);
            }
            entry.last = seq;
            self.order.insert(seq, addr);
            match entry.names.iter_mut().find(|b| b.name == answer.name) {
                Some(b) => {
                    b.until_ns = b.until_ns.max(until_ns);
                    b.seq = seq;
                }
                None => {
                    if entry.names.len() >= Self::MAX_NAMES
                        && let Some(oldest) = entry
                            .names
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, b)| b.seq)
                            .map(|(i, _)| i)
                    {
                        entry.names.swap_remove(oldest);
                        self.evicted += 1;
                    }
                    entry.names.push(Bound {
                        name: answer.name.clone(),
                        until_ns,
                        seq,
                    });
                }
            }
            while self.addrs.len() > max_addrs {
                let Some((_, victim)) = self.order.pop_first() else {
                    break;
                };
                if let Some(gone) = self.addrs.remove(&victim) {
                    self.evicted += gone.names.len() as u64;
                }
            }
        }
    }

    /// Forgets every binding that expired by `now_ns` (boot time).
    pub fn expire(&mut self, now_ns: u64) {
        let before = self.version;
        let mut emptied = Vec::new();
        for (addr, entry) in &mut self.addrs {
            let n = entry.names.len();
            entry.names.retain(|b| b.until_ns > now_ns);
            if entry.names.len() != n {
                self.version = before + 1;
            }
            if entry.names.is_empty() {
                emptied.push((*addr, entry.last));
            }
        }
        for (addr, last) in emptied {
            self.addrs.remove(&addr);
            self.order.remove(&last);
        }
    }

    /// Bindings evicted for room since start (not counting expiry).
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// A number that changes whenever the table does.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Live (address, name) pairs at `now_ns`.
    pub fn live_pairs(&self, now_ns: u64) -> usize {
        self.addrs
            .values()
            .map(|e| e.names.iter().filter(|b| b.until_ns > now_ns).count())
            .sum()
    }

    /// The `host` of a connection to `addr` decided by rule `rule` (its stable name) at
    /// `now_ns`: the live name bound to `addr` that the deciding domain rule matches, else the
    /// most recently bound live name, else `None`.
    pub fn host(&self, addr: IpAddr, rule: &str, now_ns: u64) -> Option<&str> {
        let entry = self.addrs.get(&bound_form(addr))?;
        let mut live: Vec<&Bound> = entry.names.iter().filter(|b| b.until_ns > now_ns).collect();
        live.sort_by_key(|b| std::cmp::Reverse(b.seq));
        let pattern = rule
            .strip_prefix("allow.domains:")
            .or_else(|| rule.strip_prefix("deny.domains:"))
            .and_then(|p| DomainPattern::parse(p).ok());
        pattern
            .and_then(|p| live.iter().find(|b| p.matches(&b.name)))
            .or(live.first())
            .map(|b| b.name.as_str())
    }

    /// The live bindings at `now_ns`, sorted by address then name.
    pub fn live(&self, now_ns: u64) -> Vec<NameBinding> {
        let mut out: Vec<NameBinding> = self
            .addrs
            .iter()
            .flat_map(|(addr, e)| {
                e.names
                    .iter()
                    .filter(move |b| b.until_ns > now_ns)
                    .map(move |b| NameBinding {
                        addr: *addr,
                        name: b.name.clone(),
                        expires_in_s: (b.until_ns - now_ns).div_ceil(NS_PER_S),
                    })
            })
            .collect();
        out.sort_by(|a, b| (a.addr, &a.name).cmp(&(b.addr, &b.name)));
        out
    }

    /// The kernel bindings of every live name, judged with `policy`'s domain rules (for a slot
    /// about to be switched in; `generation` is left 0 for the loader to set). Names no domain
    /// rule matches bind nothing.
    pub fn bindings(&self, policy: &CompiledPolicy, now_ns: u64) -> Vec<(BindingKey, Binding)> {
        let mut out = Vec::new();
        for (addr, entry) in &self.addrs {
            let mut b = Binding::default();
            for bound in entry.names.iter().filter(|b| b.until_ns > now_ns) {
                let Some(rule) = policy.lookup_domain(&bound.name) else {
                    continue;
                };
                if Action::from_kernel(rule.value.action).unwrap_or(Action::Deny) == Action::Deny {
                    if bound.until_ns > b.deny_until_ns {
                        b.deny_until_ns = bound.until_ns;
                        b.deny_rule = rule.value.rule_id;
                    }
                } else if bound.until_ns > b.allow_until_ns {
                    b.allow_until_ns = bound.until_ns;
                    b.allow_rule = rule.value.rule_id;
                }
            }
            if b.allow_until_ns != 0 || b.deny_until_ns != 0 {
                out.push((binding_key(*addr), b));
            }
        }
        out
    }
}

#[cfg(test)]
#[path = "names/tests.rs"]
mod tests;
