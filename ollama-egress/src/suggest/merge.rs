//! Merging: names into `*.suffix` rules, addresses into networks (see the module rule in
//! [`super`]).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use ollama_egress_geo::GeoDb;

use super::{AddrTally, Tally};

/// The widest group of addresses merged without an ASN database: /24 for IPv4.
pub const V4_GROUP: u8 = 24;
/// The widest group of addresses merged without an ASN database: /48 for IPv6.
pub const V6_GROUP: u8 = 48;

/// Second-level labels under which the names are registrations of different owners
/// (`co.uk`, `com.au`, …): never a wildcard parent of two labels.
const SHARED_SECOND_LEVEL: [&str; 9] = ["co", "com", "net", "org", "gov", "edu", "ac", "ne", "or"];

/// One entry of `domains`: an exact name or `*.suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameEntry {
    /// The pattern as written in the file.
    pub pattern: String,
    /// How many logged names it stands for (1 for an exact name).
    pub names: usize,
    /// Their connections.
    pub tally: Tally,
}

/// Merges names: `siblings` or more names directly under one parent become `*.parent` (never
/// under a top-level domain or a [`SHARED_SECOND_LEVEL`] pair); `siblings` 0 or 1 means never.
pub fn merge_names(names: &BTreeMap<String, Tally>, siblings: usize) -> Vec<NameEntry> {
    let mut by_parent: BTreeMap<&str, Vec<(&str, &Tally)>> = BTreeMap::new();
    for (name, t) in names {
        let parent = name.split_once('.').map_or("", |(_, p)| p);
        by_parent.entry(parent).or_default().push((name, t));
    }
    let mut out = Vec::new();
    for (parent, children) in by_parent {
        if siblings >= 2 && children.len() >= siblings && wildcard_parent(parent) {
            let mut tally = children[0].1.clone();
            for (_, t) in &children[1..] {
                tally.merge(t);
            }
            out.push(NameEntry {
                pattern: format!("*.{parent}"),
                names: children.len(),
                tally,
            });
        } else {
            out.extend(children.into_iter().map(|(n, t)| NameEntry {
                pattern: n.to_owned(),
                names: 1,
                tally: t.clone(),
            }));
        }
    }
    out.sort_by(|a, b| a.pattern.cmp(&b.pattern));
    out
}

fn wildcard_parent(parent: &str) -> bool {
    let labels: Vec<&str> = parent.split('.').collect();
    match labels.as_slice() {
        [] | [_] => false,
        [first, _] => !SHARED_SECOND_LEVEL.contains(first),
        _ => true,
    }
}

/// The AS network that holds an address, from the ASN database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// The network.
    pub net: IpNet,
    /// Its AS number.
    pub asn: u32,
    /// Its organisation.
    pub as_org: Option<String>,
}

/// Where the ASN networks come from.
pub trait Bounds {
    /// The narrowest AS network holding `ip`, `None` when the database has none.
    fn bound(&mut self, ip: IpAddr) -> Option<Bound>;
}

/// No ASN database: nothing is bounded.
impl Bounds for () {
    fn bound(&mut self, _: IpAddr) -> Option<Bound> {
        None
    }
}

/// [`Bounds`] over the ASN database: each AS expanded once.
pub struct AsnBounds<'a> {
    db: &'a GeoDb,
    networks: HashMap<u32, Vec<IpNet>>,
}

impl<'a> AsnBounds<'a> {
    /// Bounds from `db` (its ASN part).
    pub fn new(db: &'a GeoDb) -> AsnBounds<'a> {
        AsnBounds {
            db,
            networks: HashMap::new(),
        }
    }
}

impl Bounds for AsnBounds<'_> {
    fn bound(&mut self, ip: IpAddr) -> Option<Bound> {
        let info = self.db.lookup(ip);
        let asn = info.asn?;
        let nets = self
            .networks
            .entry(asn)
            .or_insert_with(|| self.db.asn_networks(asn).unwrap_or_default());
        let net = nets
            .iter()
            .filter(|n| n.contains(&ip))
            .max_by_key(|n| n.prefix_len())
            .copied()?;
        Some(Bound {
            net,
            asn,
            as_org: info.as_org,
        })
    }
}

/// One entry of `cidrs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetEntry {
    /// The network.
    pub net: IpNet,
    /// How many logged addresses it stands for.
    pub addresses: usize,
    /// Their connections.
    pub tally: Tally,
    /// The AS network it was merged within, when the ASN database bounded it.
    pub within: Option<Bound>,
}

/// One entry of `asns` (with `--asns`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsnEntry {
    /// The AS number.
    pub asn: u32,
    /// Its organisation, when known.
    pub as_org: Option<String>,
    /// How many logged addresses it stands for.
    pub addresses: usize,
    /// Their connections.
    pub tally: Tally,
}

/// The addresses of one group and the AS network that bounds it, if any.
type Group<'a> = (Option<Bound>, Vec<(IpAddr, &'a Tally)>);

/// Merges addresses into networks (and, with `by_asn`, AS numbers): see the rule in
/// [`super`]. Entries come sorted, none inside another.
pub fn merge_addrs(
    addrs: &BTreeMap<IpAddr, AddrTally>,
    bounds: &mut dyn Bounds,
    by_asn: bool,
) -> (Vec<NetEntry>, Vec<AsnEntry>) {
    let mut groups: BTreeMap<IpNet, Group<'_>> = BTreeMap::new();
    let mut asns: BTreeMap<u32, AsnEntry> = BTreeMap::new();
    for (&ip, a) in addrs {
        let bound = bounds.bound(ip);
        if by_asn {
            let tagged = bound
                .as_ref()
                .map(|b| (b.asn, b.as_org.clone()))
                .or(a.asn.map(|n| (n, a.as_org.clone())));
            if let Some((asn, as_org)) = tagged {
                let e = asns.entry(asn).or_insert_with(|| AsnEntry {
                    asn,
                    as_org,
                    addresses: 0,
                    tally: a.tally.clone(),
                });
                if e.addresses > 0 {
                    e.tally.merge(&a.tally);
                }
                e.addresses += 1;
                continue;
            }
        }
        let key = bound.as_ref().map_or_else(|| group_of(ip), |b| b.net);
        groups
            .entry(key)
            .or_insert_with(|| (bound, Vec::new()))
            .1
            .push((ip, &a.tally));
    }
    let mut nets: Vec<NetEntry> = groups
        .into_iter()
        .map(|(key, (within, members))| {
            let net = merged_net(key, &members);
            let mut tally = members[0].1.clone();
            for (_, t) in &members[1..] {
                tally.merge(t);
            }
            NetEntry {
                net,
                addresses: members.len(),
                tally,
                within,
            }
        })
        .collect();
    (drop_covered(&mut nets), asns.into_values().collect())
}

/// The /24 or /48 that holds `ip`.
fn group_of(ip: IpAddr) -> IpNet {
    match ip {
        IpAddr::V4(a) => IpNet::V4(Ipv4Net::new(a, V4_GROUP).expect("valid length").trunc()),
        IpAddr::V6(a) => IpNet::V6(Ipv6Net::new(a, V6_GROUP).expect("valid length").trunc()),
    }
}

/// The network for one group (`members` sorted, inside `key`): a host route for one address;
/// for several the narrowest network covering them, widened to the /24 (/48), never past
/// `key`.
fn merged_net(key: IpNet, members: &[(IpAddr, &Tally)]) -> IpNet {
    let lo = members[0].0;
    let hi = members[members.len() - 1].0;
    let (common, floor) = match (lo, hi) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (
            (u32::from(a) ^ u32::from(b)).leading_zeros() as u8,
            V4_GROUP,
        ),
        (IpAddr::V6(a), IpAddr::V6(b)) => (
            (u128::from(a) ^ u128::from(b)).leading_zeros() as u8,
            V6_GROUP,
        ),
        // Groups are per network, so of one family.
        _ => return key,
    };
    let len = if members.len() == 1 {
        common
    } else {
        common.min(floor).max(key.prefix_len())
    };
    net_of(lo, len)
}

fn net_of(ip: IpAddr, len: u8) -> IpNet {
    match ip {
        IpAddr::V4(a) => IpNet::V4(
            Ipv4Net::new(a, len.min(32))
                .unwrap_or_else(|_| Ipv4Net::from(Ipv4Addr::UNSPECIFIED))
                .trunc(),
        ),
        IpAddr::V6(a) => IpNet::V6(
            Ipv6Net::new(a, len.min(128))
                .unwrap_or_else(|_| Ipv6Net::from(Ipv6Addr::UNSPECIFIED))
                .trunc(),
        ),
    }
}

/// Folds every entry that another one covers into it; sorted by network. Networks are nested
/// or disjoint, so sorted by start (the wider first on a tie) a covered entry always follows
/// the entry that covers it, with only entries inside that one between them.
fn drop_covered(nets: &mut [NetEntry]) -> Vec<NetEntry> {
    nets.sort_by_key(|e| e.net);
    let mut kept: Vec<NetEntry> = Vec::with_capacity(nets.len());
    for e in nets.iter() {
        match kept.last_mut() {
            Some(k) if k.net.contains(&e.net) => {
                k.addresses += e.addresses;
                k.tally.merge(&e.tally);
            }
            _ => kept.push(e.clone()),
        }
    }
    kept
}

#[cfg(test)]
mod tests;
