//! The kernel tables hold exactly what the compiler produced: a large random policy is written
//! (in batches) and the kernel's own longest-prefix lookups are compared with the compiler's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use ollama_egress::{
    daemon::table_policy,
    loader::{Loaded, MapSizes},
    model::Mode,
    policy::{Action, Policy, RuleSet, compile},
};
use ollama_egress_tests::require_root;

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn random_policy(rng: &mut Rng, n: usize, default: Action) -> Policy {
    let mut allow = RuleSet::default();
    let mut deny = RuleSet::default();
    for i in 0..n {
        let net: IpNet = if i.is_multiple_of(4) {
            let len = 16 + (rng.next() % 113) as u8;
            IpNet::new(
                IpAddr::V6(Ipv6Addr::from(u128::from(rng.next()) << 64 | 0x2001 << 112)),
                len.min(128),
            )
            .expect("v6 net")
        } else {
            let len = 8 + (rng.next() % 25) as u8;
            IpNet::new(IpAddr::V4(Ipv4Addr::from(rng.next() as u32)), len).expect("v4 net")
        }
        .trunc();
        if rng.next().is_multiple_of(3) {
            allow.cidrs.push(net);
        } else {
            deny.cidrs.push(net);
        }
    }
    Policy {
        default,
        allow,
        deny,
        inbound: None,
        origin: "random".into(),
    }
}

#[test]
fn the_kernel_tables_answer_like_the_compiler_after_batched_writes_and_a_switch() {
    require_root();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut loaded = Loaded::load(MapSizes::default(), None).expect("load programs");
    let mut tables = loaded.policy_tables().expect("tables");
    // Two different policies in turn: the second reload rewrites the first slot, so stale
    // prefixes must be removed and changed ones rewritten.
    for (round, n) in [(0u32, 20_000), (1, 15_000), (2, 20_000)] {
        let policy = random_policy(
            &mut rng,
            n,
            if round.is_multiple_of(2) {
                Action::Allow
            } else {
                Action::Deny
            },
        );
        let compiled = compile(&policy, None).expect("compile");
        tables
            .apply(table_policy(&compiled, Mode::Enforce))
            .expect("apply");
        let mut checked = 0;
        for (net, _) in compiled.v4.iter().take(3000) {
            for ip in [net.network(), net.broadcast()] {
                let want = compiled.lookup_entry(IpAddr::V4(ip)).map(|(_, v)| v);
                let got = tables.lookup(IpAddr::V4(ip)).expect("kernel lookup");
                assert_eq!(got, want, "round {round}: {ip}");
                checked += 1;
            }
        }
        for (net, _) in compiled.v6.iter().take(1000) {
            let ip = IpAddr::V6(net.network());
            let want = compiled.lookup_entry(ip).map(|(_, v)| v);
            assert_eq!(
                tables.lookup(ip).expect("kernel lookup"),
                want,
                "round {round}: {ip}"
            );
            checked += 1;
        }
        for _ in 0..5000 {
            let ip = IpAddr::V4(Ipv4Addr::from(rng.next() as u32));
            let want = compiled.lookup_entry(ip).map(|(_, v)| v);
            assert_eq!(
                tables.lookup(ip).expect("kernel lookup"),
                want,
                "round {round}: {ip}"
            );
            checked += 1;
        }
        assert!(checked > 10_000);
    }
}
