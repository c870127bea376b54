//! The prefix sets every configuration is given, and the files that load them: an ollama-egress
//! policy, an nftables script, an ipset restore file.
//!
//! - **CN**: every network the real country database maps to CN (both families).
//! - **500k**: 400,000 IPv4 + 100,000 IPv6 random, non-overlapping prefixes (fixed seed). They
//!   are policy content only: no traffic is ever sent to them. ollama-egress gets them as a
//!   country (`ZZ`, user-assigned) of a synthetic country database: the path a large country or
//!   ASN rule takes. A policy listing them as `cidrs` would take hours to parse (see
//!   BENCHMARKS.md); smaller CIDR-list sets show that cost.
//!
//! Each set also denies `203.0.113.0/24` (documentation range), the destination of the
//! denied-connect probe inside the bench's namespace.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use anyhow::Context as _;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// The documentation prefix each set denies.
pub const DENIED_NET: &str = "203.0.113.0/24";
/// The address in it that the denied-connect probe targets (on the namespace's `lo`).
pub const DENIED_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

/// A set of prefixes, per family.
#[derive(Clone, Debug, Default)]
pub struct PrefixSet {
    /// Short name: `CN`, `500k`.
    pub name: String,
    /// The country code the policy names; `None`: the policy lists the prefixes as `cidrs`.
    pub country: Option<String>,
    /// IPv4 prefixes.
    pub v4: Vec<Ipv4Net>,
    /// IPv6 prefixes.
    pub v6: Vec<Ipv6Net>,
}

impl PrefixSet {
    /// Prefixes in both families.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// The CN networks of the country database, plus [`DENIED_NET`].
    pub fn country(cc: &str, country_db: &Path) -> anyhow::Result<Self> {
        let db = ollama_egress_geo::GeoDb::open(Some(country_db), None)
            .with_context(|| format!("opening {}", country_db.display()))?;
        let nets = db.country_networks(cc)?;
        let mut set = Self {
            name: cc.to_owned(),
            country: Some(cc.to_owned()),
            ..Self::default()
        };
        for n in nets {
            match n {
                IpNet::V4(n) => set.v4.push(n),
                IpNet::V6(n) => set.v6.push(n),
            }
        }
        set.add_denied();
        Ok(set)
    }

    /// `v4 + v6` random non-overlapping prefixes outside loopback, private and documentation
    /// ranges, plus [`DENIED_NET`].
    pub fn synthetic(name: &str, v4: usize, v6: usize) -> Self {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut taken4: BTreeMap<u32, u32> = BTreeMap::new();
        let mut set = Self {
            name: name.to_owned(),
            ..Self::default()
        };
        // First octets that are public unicast and not special in any way.
        let skip = [0u32, 10, 100, 127, 169, 172, 192, 198, 203];
        while set.v4.len() < v4 {
            let first = 1 + (rng.next() % 223) as u32;
            if skip.contains(&first) {
                continue;
            }
            let len = 18 + (rng.next() % 11) as u8; // /18../28
            let addr = (first << 24) | (rng.next() as u32 & 0x00ff_ffff);
            let net = Ipv4Net::new(Ipv4Addr::from(addr), len)
                .expect("valid length")
                .trunc();
            let (lo, hi) = (u32::from(net.network()), u32::from(net.broadcast()));
            if overlaps(&taken4, lo, hi) {
                continue;
            }
            taken4.insert(lo, hi);
            set.v4.push(net);
        }
        let mut taken6: BTreeMap<u128, u128> = BTreeMap::new();
        while set.v6.len() < v6 {
            // 2400::/6 .. 2fff::/16: global unicast, away from 2001::/16 and 2002::/16.
            let top = 0x2400u128 + u128::from(rng.next() % 0x0c00);
            let len = 32 + (rng.next() % 33) as u8; // /32../64
            let addr = (top << 112) | (u128::from(rng.next()) << 48) & ((1u128 << 112) - 1);
            let net = Ipv6Net::new(Ipv6Addr::from(addr), len)
                .expect("valid length")
                .trunc();
            let (lo, hi) = (u128::from(net.network()), u128::from(net.broadcast()));
            if overlaps(&taken6, lo, hi) {
                continue;
            }
            taken6.insert(lo, hi);
            set.v6.push(net);
        }
        set.v4.sort();
        set.v6.sort();
        set.add_denied();
        set
    }

    fn add_denied(&mut self) {
        let net: Ipv4Net = DENIED_NET.parse().expect("constant prefix");
        if !self.v4.contains(&net) {
            self.v4.push(net);
        }
    }

    /// An ollama-egress policy that denies the set and allows everything else.
    pub fn policy_toml(&self) -> String {
        let mut s = String::with_capacity(self.len() * 24 + 256);
        s.push_str("# ollama-egress bench policy: deny the set, allow the rest.\ndefault = \"allow\"\n\n[deny]\n");
        if let Some(cc) = &self.country {
            // The daemon expands the country through the country database itself.
            let _ = writeln!(s, "countries = [\"{cc}\"]\ncidrs = [\"{DENIED_NET}\"]");
            return s;
        }
        s.push_str("cidrs = [\n");
        for n in &self.v4 {
            let _ = writeln!(s, "  \"{n}\",");
        }
        for n in &self.v6 {
            let _ = writeln!(s, "  \"{n}\",");
        }
        s.push_str("]\n");
        s
    }

    /// Writes a country database mapping every prefix of the set (but [`DENIED_NET`]) to
    /// `cc`, unless `path` exists.
    pub fn write_country_db(&self, cc: &str, path: &Path) -> anyhow::Result<()> {
        if path.is_file() {
            return Ok(());
        }
        let denied: Ipv4Net = DENIED_NET.parse().expect("constant prefix");
        let entries: Vec<(IpNet, &str)> = self
            .v4
            .iter()
            .filter(|n| **n != denied)
            .map(|n| (IpNet::V4(*n), cc))
            .chain(self.v6.iter().map(|n| (IpNet::V6(*n), cc)))
            .collect();
        let tmp = path.with_extension("tmp");
        ollama_egress_geo::fixture::write_country_db(&tmp, &entries)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// An nftables script: one interval set per family and an output chain that drops the
    /// set's destinations for sockets of cgroup `cgroup` (path below the cgroup v2 root).
    pub fn nft_script(&self, cgroup: &str) -> String {
        let mut s = String::with_capacity(self.len() * 24 + 1024);
        let level = cgroup.split('/').filter(|c| !c.is_empty()).count();
        let _ = write!(
            s,
            "table inet oebench {{\n  set d4 {{ type ipv4_addr; flags interval; }}\n  set d6 {{ type ipv6_addr; flags interval; }}\n  chain out {{\n    type filter hook output priority 0; policy accept;\n    meta nfproto ipv4 socket cgroupv2 level {level} \"{cgroup}\" ip daddr @d4 drop\n    meta nfproto ipv6 socket cgroupv2 level {level} \"{cgroup}\" ip6 daddr @d6 drop\n  }}\n}}\n"
        );
        chunked(&mut s, &self.v4, |s, chunk| {
            let _ = writeln!(s, "add element inet oebench d4 {{ {chunk} }}");
        });
        chunked(&mut s, &self.v6, |s, chunk| {
            let _ = writeln!(s, "add element inet oebench d6 {{ {chunk} }}");
        });
        s
    }

    /// An `ipset restore` file with one `hash:net` set per family (`oeb4`, `oeb6`).
    pub fn ipset_restore(&self) -> String {
        let mut s = String::with_capacity(self.len() * 24 + 256);
        let max = (self.len() * 2).max(65_536);
        let _ = writeln!(
            s,
            "create oeb4 hash:net family inet hashsize 65536 maxelem {max}"
        );
        for n in &self.v4 {
            let _ = writeln!(s, "add oeb4 {n}");
        }
        let _ = writeln!(
            s,
            "create oeb6 hash:net family inet6 hashsize 65536 maxelem {max}"
        );
        for n in &self.v6 {
            let _ = writeln!(s, "add oeb6 {n}");
        }
        s
    }
}

/// The iptables/ip6tables rules matching the ipsets for sockets of cgroup `cgroup`.
pub fn iptables_script(cgroup: &str) -> String {
    format!(
        "iptables -w -A OUTPUT -m cgroup --path {cgroup} -m set --match-set oeb4 dst -j DROP\n\
         ip6tables -w -A OUTPUT -m cgroup --path {cgroup} -m set --match-set oeb6 dst -j DROP\n"
    )
}

fn chunked<T: std::fmt::Display>(
    s: &mut String,
    items: &[T],
    mut emit: impl FnMut(&mut String, &str),
) {
    for chunk in items.chunks(4096) {
        let text: Vec<String> = chunk.iter().map(ToString::to_string).collect();
        emit(s, &text.join(", "));
    }
}

fn overlaps<T: Ord + Copy>(taken: &BTreeMap<T, T>, lo: T, hi: T) -> bool {
    // The last interval starting at or before `hi` is the only one that can overlap.
    taken
        .range(..=hi)
        .next_back()
        .is_some_and(|(_, &end)| end >= lo)
}

/// xorshift64*: a fixed, dependency-free sequence.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests;
