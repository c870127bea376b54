//! Randomised check: `compile` + `lookup` against a brute-force evaluation of the policy
//! semantics straight from the rules (longest prefix, then deny, then file order).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use ollama_egress_common::PolicyValue;

use super::super::*;
use super::FakeGeo;

/// xorshift64*: tiny, deterministic, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An address in a small space (so prefixes overlap a lot), now and then anywhere.
fn random_addr(rng: &mut Rng, v6: bool) -> IpAddr {
    let wide = rng.below(10) == 0;
    if v6 {
        let low = if wide {
            u128::from(rng.next()) << 64 | u128::from(rng.next())
        } else {
            0x2001_0db8_u128 << 96 | u128::from(rng.below(1 << 12)) << 8
        };
        IpAddr::V6(Ipv6Addr::from(low))
    } else {
        let low = if wide {
            rng.next() as u32
        } else {
            0x0a00_0000 | (rng.below(1 << 12) as u32) << 4
        };
        IpAddr::V4(Ipv4Addr::from(low))
    }
}

fn random_net(rng: &mut Rng) -> IpNet {
    let v6 = rng.below(3) == 0;
    let addr = random_addr(rng, v6);
    let len = if v6 {
        [0, 16, 32, 96, 100, 104, 108, 112, 116, 120, 124, 128][rng.below(12) as usize]
    } else {
        [0, 8, 16, 18, 20, 22, 24, 26, 28, 30, 32][rng.below(11) as usize]
    };
    IpNet::new(addr, len).expect("valid length").trunc()
}

fn random_nets(rng: &mut Rng, max: u64) -> Vec<IpNet> {
    let mut seen = HashSet::new();
    (0..rng.below(max + 1))
        .map(|_| random_net(rng))
        .filter(|n| seen.insert(*n))
        .collect()
}

/// Every candidate prefix in file order: (network, action, rule id).
fn candidates(p: &Policy, geo: &FakeGeo) -> Vec<(IpNet, Action, String)> {
    let mut out = Vec::new();
    for (action, set) in [(Action::Allow, &p.allow), (Action::Deny, &p.deny)] {
        let a = action.as_str();
        for n in &set.cidrs {
            out.push((*n, action, format!("{a}.cidrs:{n}")));
        }
        for cc in &set.countries {
            for n in &geo.countries[cc] {
                out.push((*n, action, format!("{a}.countries:{cc}")));
            }
        }
        for asn in &set.asns {
            for n in &geo.asns[asn] {
                out.push((*n, action, format!("{a}.asns:{asn}")));
            }
        }
    }
    out
}

/// The IPv4 address inside an IPv6 address of a form judged as IPv4, written independently of
/// `embedded_ipv4`, and whether the form leaves as IPv6 (all but IPv4-mapped).
fn embedded(a: std::net::Ipv6Addr) -> Option<(std::net::Ipv4Addr, bool)> {
    if let Some(v4) = a.to_ipv4_mapped() {
        return Some((v4, false));
    }
    let o = a.octets();
    let last = std::net::Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    let within = |s: &str| s.parse::<ipnet::Ipv6Net>().expect("net").contains(&a);
    if within("::/96") && !within("::/127") {
        return Some((last, true));
    }
    if within("::ffff:0:0:0/96") || within("64:ff9b::/96") || within("64:ff9b:1::/48") {
        return Some((last, true));
    }
    if within("2002::/16") {
        return Some((std::net::Ipv4Addr::new(o[2], o[3], o[4], o[5]), true));
    }
    None
}

fn brute_force(p: &Policy, cands: &[(IpNet, Action, String)], addr: IpAddr) -> (Action, String) {
    let addr = match addr {
        IpAddr::V6(a) => match embedded(a) {
            Some((v4, false)) => IpAddr::V4(v4),
            Some((v4, true)) => match brute_force_exact(p, cands, addr) {
                (Action::Deny, id) if id != "default" => return (Action::Deny, id),
                _ => IpAddr::V4(v4),
            },
            None => addr,
        },
        a => a,
    };
    brute_force_exact(p, cands, addr)
}

fn brute_force_exact(
    p: &Policy,
    cands: &[(IpNet, Action, String)],
    addr: IpAddr,
) -> (Action, String) {
    let best = cands
        .iter()
        .enumerate()
        .filter(|(_, (n, _, _))| n.contains(&addr))
        // Longest prefix, then deny, then the earliest rule.
        .max_by_key(|(i, (n, a, _))| (n.prefix_len(), *a == Action::Deny, usize::MAX - i));
    match best {
        Some((_, (_, a, id))) => (*a, id.clone()),
        None => (p.default, "default".to_string()),
    }
}

#[test]
fn lookup_matches_brute_force() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let mut geo = FakeGeo::default();
        let mut sets = [RuleSet::default(), RuleSet::default()];
        for (s, set) in sets.iter_mut().enumerate() {
            set.cidrs = random_nets(&mut rng, 12);
            for i in 0..rng.below(3) {
                let cc = format!("{}{}", ["A", "D"][s], char::from(b'A' + i as u8));
                geo.countries.insert(cc.clone(), random_nets(&mut rng, 8));
                set.countries.push(cc);
            }
            for i in 0..rng.below(3) {
                let asn = (s as u32 + 1) * 100 + i as u32;
                geo.asns.insert(asn, random_nets(&mut rng, 8));
                set.asns.push(asn);
            }
        }
        let [allow, deny] = sets;
        let default = if rng.below(2) == 0 {
            Action::Allow
        } else {
            Action::Deny
        };
        let policy = Policy {
            default,
            allow,
            deny,
            inbound: None,
            origin: format!("round {round}"),
        };
        let c = compile(&policy, Some(&geo)).expect("compiles");
        let cands = candidates(&policy, &geo);

        // Trie invariants: normalised, sorted, unique, mapped networks only in IPv4.
        assert!(c.v4.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(c.v6.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(c.v4.iter().all(|(n, _)| n.trunc() == *n));
        assert!(c.v6.iter().all(|(n, _)| n.trunc() == *n));
        assert!(
            c.v6.iter()
                .all(|(n, _)| n.prefix_len() < 96 || n.network().to_ipv4_mapped().is_none())
        );
        let owned: usize = c.rules.iter().map(|r| r.v4_prefixes + r.v6_prefixes).sum();
        assert_eq!(owned, c.v4.len() + c.v6.len());
        assert!(
            c.v4.iter()
                .map(|(_, v)| v)
                .chain(c.v6.iter().map(|(_, v)| v))
                .all(|v: &PolicyValue| c.rules[v.rule_id as usize].action.to_kernel() == v.action)
        );

        let mut probes: Vec<IpAddr> = (0..200)
            .map(|_| {
                let v6 = rng.below(2) == 0;
                random_addr(&mut rng, v6)
            })
            .collect();
        // Edges of every candidate, and their IPv4-mapped forms.
        for (n, _, _) in &cands {
            probes.push(n.network());
            probes.push(n.broadcast());
            if let IpAddr::V4(a) = n.network() {
                let o = a.octets();
                probes.push(IpAddr::V6(a.to_ipv6_mapped()));
                probes.push(IpAddr::V6(a.to_ipv6_compatible()));
                for form in [
                    [
                        0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0, o[0], o[1], o[2], o[3],
                    ],
                    [
                        0, 0x64, 0xff, 0x9b, 0, 1, 9, 9, 0, 0, 0, 0, o[0], o[1], o[2], o[3],
                    ],
                    [
                        0x20, 2, o[0], o[1], o[2], o[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
                    ],
                ] {
                    probes.push(IpAddr::V6(std::net::Ipv6Addr::from(form)));
                }
            }
        }
        for addr in probes {
            let (action, id) = c.lookup(addr);
            let expected = brute_force(&policy, &cands, addr);
            assert_eq!(
                (action, c.rule_name(id).to_string()),
                expected,
                "round {round}, address {addr}, policy {policy:?}"
            );
        }
    }
}
