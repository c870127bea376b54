//! The names table: learning, expiry, bounds, `host`, rebuilt bindings, event decoding.

use ollama_egress_common::EventHeader;
use ollama_egress_common::dns::{DOMAIN_KEY_LEN, DnsAddr};

use super::*;
use crate::policy::{Policy, compile};

const S: u64 = NS_PER_S;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn answer(at_s: u64, name: &str, addrs: &[(&str, u32)]) -> LearnedAnswer {
    LearnedAnswer {
        at_boot_ns: at_s * S,
        name: name.to_string(),
        addrs: addrs.iter().map(|&(a, ttl)| (ip(a), ttl)).collect(),
    }
}

fn policy(text: &str) -> CompiledPolicy {
    compile(&Policy::from_toml_str(text, "t.toml").expect("valid"), None).expect("compiles")
}

#[test]
fn names_live_until_their_ttl() {
    let mut t = NamesTable::default();
    t.learn(&answer(
        100,
        "registry.ollama.ai",
        &[("203.0.113.7", 60), ("2001:db8::7", 30)],
    ));
    assert_eq!(t.live_pairs(100 * S), 2);
    assert_eq!(
        t.host(ip("203.0.113.7"), "default", 159 * S),
        Some("registry.ollama.ai")
    );
    assert_eq!(t.host(ip("2001:db8::7"), "default", 131 * S), None);
    assert_eq!(t.live_pairs(131 * S), 1);
    // IPv4-mapped form finds the IPv4 binding.
    assert!(
        t.host(ip("::ffff:203.0.113.7"), "default", 101 * S)
            .is_some()
    );
    t.expire(160 * S);
    assert_eq!(t.live_pairs(0), 0);
    assert!(t.live(0).is_empty());
}

#[test]
fn a_new_answer_extends_never_shortens() {
    let mut t = NamesTable::default();
    t.learn(&answer(100, "a.example", &[("198.51.100.1", 300)]));
    t.learn(&answer(110, "a.example", &[("198.51.100.1", 60)]));
    assert_eq!(t.live(110 * S)[0].expires_in_s, 290);
    assert_eq!(t.live_pairs(110 * S), 1);
}

#[test]
fn host_prefers_the_name_the_deciding_rule_matches() {
    let mut t = NamesTable::default();
    t.learn(&answer(
        100,
        "x.r2.cloudflarestorage.com",
        &[("198.51.100.9", 60)],
    ));
    t.learn(&answer(101, "ollama.com", &[("198.51.100.9", 60)]));
    let a = ip("198.51.100.9");
    assert_eq!(t.host(a, "default", 102 * S), Some("ollama.com"));
    assert_eq!(
        t.host(a, "allow.domains:*.r2.cloudflarestorage.com", 102 * S),
        Some("x.r2.cloudflarestorage.com")
    );
    assert_eq!(
        t.host(a, "deny.domains:ollama.com", 102 * S),
        Some("ollama.com")
    );
    // A rule matching none of the names: the most recent name.
    assert_eq!(
        t.host(a, "allow.domains:other.example", 102 * S),
        Some("ollama.com")
    );
    assert_eq!(t.host(ip("198.51.100.10"), "default", 102 * S), None);
}

#[test]
fn the_table_is_bounded_and_evictions_are_counted() {
    let mut t = NamesTable::default();
    for i in 0..(NamesTable::MAX_NAMES + 3) {
        t.learn(&answer(
            100 + i as u64,
            &format!("n{i}.example"),
            &[("198.51.100.1", 600)],
        ));
    }
    assert_eq!(t.live_pairs(200 * S), NamesTable::MAX_NAMES);
    assert_eq!(t.evicted(), 3);
    // The oldest names went first.
    let names: Vec<String> = t.live(200 * S).into_iter().map(|b| b.name).collect();
    assert!(
        !names.contains(&"n0.example".to_string()) && names.contains(&"n10.example".to_string())
    );

    let mut t = NamesTable::default();
    for i in 0..5u8 {
        t.learn_bounded(
            &answer(100, "a.example", &[(&format!("198.51.100.{i}"), 600)]),
            3,
        );
    }
    // A re-learned address becomes the most recent and survives.
    t.learn_bounded(&answer(101, "a.example", &[("198.51.100.2", 600)]), 3);
    t.learn_bounded(&answer(101, "b.example", &[("198.51.100.7", 600)]), 3);
    let addrs: Vec<IpAddr> = t.live(102 * S).into_iter().map(|b| b.addr).collect();
    assert_eq!(
        addrs,
        [ip("198.51.100.2"), ip("198.51.100.4"), ip("198.51.100.7")]
    );
    assert_eq!(t.evicted(), 3);
}

#[test]
fn rebuilt_bindings_follow_the_new_rules() {
    let mut t = NamesTable::default();
    t.learn(&answer(100, "registry.ollama.ai", &[("198.51.100.1", 60)]));
    t.learn(&answer(
        100,
        "ollama.com",
        &[("198.51.100.1", 120), ("198.51.100.2", 120)],
    ));
    t.learn(&answer(100, "other.example", &[("198.51.100.3", 120)]));
    t.learn(&answer(10, "old.ollama.com", &[("198.51.100.4", 1)]));
    let p = policy(
        "[allow]\ndomains = [\"registry.ollama.ai\"]\n[deny]\ndomains = [\"*.ollama.com\", \"ollama.com\"]\n",
    );
    let mut b = t.bindings(&p, 100 * S);
    b.sort_by_key(|(k, _)| k.addr);
    assert_eq!(b.len(), 2, "{b:?}");
    let (k1, b1) = b[0];
    assert_eq!(k1, binding_key(ip("198.51.100.1")));
    assert_eq!(b1.allow_until_ns, 160 * S);
    assert_eq!(
        p.rule_name(b1.allow_rule),
        "allow.domains:registry.ollama.ai"
    );
    assert_eq!(b1.deny_until_ns, 220 * S);
    assert_eq!(p.rule_name(b1.deny_rule), "deny.domains:ollama.com");
    let (k2, b2) = b[1];
    assert_eq!(k2.family, FAMILY_IPV4);
    assert_eq!(&k2.addr[..4], &[198, 51, 100, 2]);
    assert_eq!((b2.allow_until_ns, b2.deny_until_ns), (0, 220 * S));
    // Without domain rules nothing is bound.
    assert!(
        t.bindings(&policy("default = \"allow\"\n"), 100 * S)
            .is_empty()
    );
}

fn raw_event(name: &[u8], addrs: &[DnsAddr]) -> DnsEvent {
    let mut ev = DnsEvent {
        header: EventHeader {
            ts_boot_ns: 7 * S,
            kind: EVENT_KIND_DNS,
            size: DnsEvent::SIZE as u32,
        },
        server: [0; 16],
        server_family: FAMILY_IPV4,
        proto: 17,
        n_addrs: addrs.len() as u32,
        name_len: name.len() as u32,
        addrs: [DnsAddr::default(); DNS_MAX_ADDRS],
        name: [0; DOMAIN_KEY_LEN],
    };
    ev.addrs[..addrs.len()].copy_from_slice(addrs);
    ev.name[..name.len()].copy_from_slice(name);
    ev
}

fn bytes(ev: &DnsEvent) -> Vec<u8> {
    // SAFETY: `DnsEvent` is plain old data without padding.
    unsafe { std::slice::from_raw_parts((ev as *const DnsEvent).cast::<u8>(), DnsEvent::SIZE) }
        .to_vec()
}

#[test]
fn dns_events_decode_and_bad_ones_are_refused() {
    let mut v4 = DnsAddr {
        family: FAMILY_IPV4,
        ttl_s: 60,
        ..DnsAddr::default()
    };
    v4.addr[..4].copy_from_slice(&[198, 51, 100, 5]);
    let v6 = DnsAddr {
        addr: ip_v6("2001:db8::5"),
        family: FAMILY_IPV6,
        ttl_s: 90,
    };
    let ev = raw_event(b"registry.ollama.ai", &[v4, v6]);
    let a = decode_dns_event(&bytes(&ev)).expect("decodes");
    assert_eq!(a.name, "registry.ollama.ai");
    assert_eq!(a.at_boot_ns, 7 * S);
    assert_eq!(
        a.addrs,
        vec![(ip("198.51.100.5"), 60), (ip("2001:db8::5"), 90)]
    );

    assert!(matches!(
        decode_dns_event(&bytes(&ev)[..100]),
        Err(DnsEventError::Size(100))
    ));
    let mut bad = ev;
    bad.header.kind = 1;
    assert!(decode_dns_event(&bytes(&bad)).is_err());
    let mut bad = ev;
    bad.n_addrs = DNS_MAX_ADDRS as u32 + 1;
    assert!(matches!(
        decode_dns_event(&bytes(&bad)),
        Err(DnsEventError::Counts { .. })
    ));
    let bad = raw_event(b"Upper.example", &[v4]);
    assert_eq!(decode_dns_event(&bytes(&bad)), Err(DnsEventError::Name));
    let bad = raw_event(b"a..example", &[v4]);
    assert_eq!(decode_dns_event(&bytes(&bad)), Err(DnsEventError::Name));
    let mut odd = v4;
    odd.family = 3;
    assert_eq!(
        decode_dns_event(&bytes(&raw_event(b"a.example", &[odd]))),
        Err(DnsEventError::Family(3))
    );
}

fn ip_v6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().expect("v6").octets()
}
