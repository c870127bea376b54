//! Compilation: precedence, expansion, rule ids, summaries.

use ipnet::{Ipv4Net, Ipv6Net};
use ollama_egress_common::{PolicyValue, RULE_DEFAULT, RULE_IPV6_ROUTING_HEADER};

use super::super::*;
use super::{FULL, FakeGeo, ip, net};

fn parse(text: &str) -> Policy {
    Policy::from_toml_str(text, "test.toml").expect("valid policy")
}

fn compile_cidrs(text: &str) -> CompiledPolicy {
    compile(&parse(text), None).expect("compiles")
}

/// The verdict for `addr` as (action, rule name).
fn judge<'a>(c: &'a CompiledPolicy, addr: &str) -> (Action, &'a str) {
    let (action, id) = c.lookup(ip(addr));
    (action, c.rule_name(id))
}

#[test]
fn full_example_compiles_with_stable_rule_ids() {
    let geo = FakeGeo::full();
    let c = compile(&parse(FULL), Some(&geo)).expect("compiles");
    let ids: Vec<&str> = c.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "default",
            "allow.cidrs:127.0.0.0/8",
            "allow.cidrs:::1/128",
            "allow.countries:US",
            "allow.asns:13335",
            "deny.cidrs:47.0.0.0/8",
            "deny.countries:CN",
            "deny.asns:37963",
            "deny.asns:45102",
        ]
    );
    assert_eq!(c.rule_id("deny.countries:CN"), Some(6));
    assert_eq!(c.rules[0].action, Action::Deny);
    assert_eq!(c.default_action, Action::Deny);

    // Compiling again gives the same table and the same prefixes.
    assert_eq!(compile(&parse(FULL), Some(&geo)).expect("compiles"), c);

    assert_eq!(
        judge(&c, "127.0.0.1"),
        (Action::Allow, "allow.cidrs:127.0.0.0/8")
    );
    assert_eq!(judge(&c, "::1"), (Action::Allow, "allow.cidrs:::1/128"));
    assert_eq!(judge(&c, "3.1.2.3"), (Action::Allow, "allow.countries:US"));
    assert_eq!(judge(&c, "2600::1"), (Action::Allow, "allow.countries:US"));
    assert_eq!(judge(&c, "1.1.1.1"), (Action::Allow, "allow.asns:13335"));
    assert_eq!(judge(&c, "36.1.1.1"), (Action::Deny, "deny.countries:CN"));
    assert_eq!(judge(&c, "240e::1"), (Action::Deny, "deny.countries:CN"));
    // 47.0.0.0/8 is both a deny CIDR and a CN network: the CIDR comes first in file order.
    assert_eq!(
        judge(&c, "47.1.1.1"),
        (Action::Deny, "deny.cidrs:47.0.0.0/8")
    );
    // Longer ASN prefixes inside it win.
    assert_eq!(judge(&c, "47.100.1.1"), (Action::Deny, "deny.asns:37963"));
    assert_eq!(judge(&c, "47.75.1.1"), (Action::Deny, "deny.asns:45102"));
    assert_eq!(judge(&c, "9.9.9.9"), (Action::Deny, "default"));
    assert_eq!(c.lookup(ip("9.9.9.9")), (Action::Deny, RULE_DEFAULT));

    let cn = &c.rules[6];
    assert_eq!(
        (cn.v4_prefixes, cn.v6_prefixes),
        (2, 1),
        "47.0.0.0/8 went to the CIDR rule"
    );
}

#[test]
fn longer_allow_inside_denied_network_is_allowed() {
    let c = compile_cidrs(
        "default = \"allow\"\n[allow]\ncidrs = [\"10.1.2.3/32\"]\n[deny]\ncidrs = [\"10.0.0.0/8\"]\n",
    );
    assert_eq!(
        judge(&c, "10.1.2.3"),
        (Action::Allow, "allow.cidrs:10.1.2.3/32")
    );
    assert_eq!(
        judge(&c, "10.1.2.4"),
        (Action::Deny, "deny.cidrs:10.0.0.0/8")
    );
    assert_eq!(judge(&c, "11.0.0.1"), (Action::Allow, "default"));
}

#[test]
fn equal_prefix_deny_wins() {
    let c = compile_cidrs(
        "default = \"allow\"\n[allow]\ncidrs = [\"192.0.2.0/24\", \"2001:db8::/32\"]\n\
         [deny]\ncidrs = [\"2001:db8::/32\", \"192.0.2.0/24\"]\n",
    );
    assert_eq!(
        judge(&c, "192.0.2.9"),
        (Action::Deny, "deny.cidrs:192.0.2.0/24")
    );
    assert_eq!(
        judge(&c, "2001:db8::9"),
        (Action::Deny, "deny.cidrs:2001:db8::/32")
    );
    assert_eq!(c.v4.len(), 1);
    assert_eq!(c.v6.len(), 1);
    let allow = &c.rules[c.rule_id("allow.cidrs:192.0.2.0/24").expect("rule") as usize];
    assert_eq!((allow.v4_prefixes, allow.v6_prefixes), (0, 0));
}

#[test]
fn unmatched_addresses_get_the_default() {
    for (default, action) in [("allow", Action::Allow), ("deny", Action::Deny)] {
        let c = compile_cidrs(&format!(
            "default = \"{default}\"\n[allow]\ncidrs = [\"10.0.0.0/8\"]\n"
        ));
        assert_eq!(c.lookup(ip("8.8.8.8")), (action, RULE_DEFAULT));
        assert_eq!(c.lookup(ip("2001:db8::1")), (action, RULE_DEFAULT));
        assert_eq!(c.lookup_entry(ip("8.8.8.8")), None);
    }
}

#[test]
fn cidr_allow_inside_denied_country_is_allowed() {
    let geo = FakeGeo::default().country("CN", &["198.51.100.0/24", "2001:db8::/32"]);
    let c = compile(
        &parse("[allow]\ncidrs = [\"198.51.100.7\", \"2001:db8:1::/48\"]\n[deny]\ncountries = [\"CN\"]\n"),
        Some(&geo),
    )
    .expect("compiles");
    assert_eq!(
        judge(&c, "198.51.100.7"),
        (Action::Allow, "allow.cidrs:198.51.100.7/32")
    );
    assert_eq!(
        judge(&c, "198.51.100.8"),
        (Action::Deny, "deny.countries:CN")
    );
    assert_eq!(
        judge(&c, "2001:db8:1::5"),
        (Action::Allow, "allow.cidrs:2001:db8:1::/48")
    );
    assert_eq!(
        judge(&c, "2001:db8:2::5"),
        (Action::Deny, "deny.countries:CN")
    );
    assert_eq!(
        c.lookup_entry(ip("198.51.100.8")),
        Some((
            net("198.51.100.0/24"),
            PolicyValue {
                action: 1,
                rule_id: 3
            }
        ))
    );
}

#[test]
fn unknown_country_or_asn_is_named() {
    let geo = FakeGeo::full();
    let err = compile(&parse("[deny]\ncountries = [\"CN\", \"XX\"]\n"), Some(&geo))
        .expect_err("unknown country");
    assert!(matches!(err, PolicyError::NotInDatabase { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "test.toml: deny.countries: \"XX\" is not in the geo database"
    );

    let err = compile(&parse("[allow]\nasns = [64512]\n"), Some(&geo)).expect_err("unknown ASN");
    assert_eq!(
        err.to_string(),
        "test.toml: allow.asns: 64512 is not in the ASN database"
    );
}

#[test]
fn database_errors_are_reported() {
    let geo = FakeGeo {
        broken: true,
        ..FakeGeo::default()
    };
    let err = compile(&parse("[deny]\nasns = [45102]\n"), Some(&geo)).expect_err("broken");
    assert!(matches!(err, PolicyError::Expansion { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("deny.asns:45102") && msg.contains("corrupt ASN database"),
        "{msg}"
    );
}

#[test]
fn geo_rules_without_databases() {
    let err = compile(&parse(FULL), None).expect_err("needs geo");
    let PolicyError::GeoDatabaseMissing { rules, .. } = &err else {
        panic!("wrong error {err:?}");
    };
    assert_eq!(
        rules,
        &[
            "allow.countries:US",
            "allow.asns:13335",
            "deny.countries:CN",
            "deny.asns:37963",
            "deny.asns:45102"
        ]
    );
    let msg = err.to_string();
    assert!(msg.contains("need the geo databases"), "{msg}");
    assert!(
        msg.contains("run `ollama-egress geo update` or pass --geo-db/--asn-db"),
        "{msg}"
    );

    // CIDR-only policies need no database, with or without an expander.
    let text = "[deny]\ncidrs = [\"47.0.0.0/8\"]\n";
    assert_eq!(
        compile(&parse(text), None).expect("compiles"),
        compile(&parse(text), Some(&FakeGeo::default())).expect("compiles")
    );
}

#[test]
fn builtin_policy_compiles_and_judges() {
    let c = compile(&Policy::builtin(), None).expect("compiles");
    assert_eq!(c.origin, "built-in");
    assert_eq!(c.default_action, Action::Deny);
    assert_eq!(c.rules.len(), 10);
    assert!(c.rules.iter().skip(1).all(|r| r.action == Action::Allow));
    assert_eq!(c.v4.len(), 6);
    assert_eq!(c.v6.len(), 3);
    for allowed in [
        "127.0.0.1",
        "127.255.255.254",
        "::1",
        "::ffff:127.0.0.1",
        "10.9.8.7",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "fd00::1",
        "fe80::1",
    ] {
        assert_eq!(c.lookup(ip(allowed)).0, Action::Allow, "{allowed}");
    }
    for denied in [
        "8.8.8.8",
        "172.32.0.1",
        "100.128.0.1",
        "::ffff:8.8.8.8",
        "2001:db8::1",
        "::2",
        "::",
        "203.0.113.7",
    ] {
        assert_eq!(
            c.lookup(ip(denied)),
            (Action::Deny, RULE_DEFAULT),
            "{denied}"
        );
    }
    assert_eq!(
        judge(&c, "::ffff:10.0.0.1"),
        (Action::Allow, "allow.cidrs:10.0.0.0/8")
    );
}

#[test]
fn ipv4_in_ipv6_forms_are_judged_as_their_ipv4_address() {
    let c = compile_cidrs(
        r#"
default = "allow"
[allow]
cidrs = ["64:ff9b::/96", "2002::/16"]
[deny]
cidrs = ["203.0.113.0/24", "64:ff9b::198.51.100.0/120"]
"#,
    );
    let denied = (Action::Deny, "deny.cidrs:203.0.113.0/24");
    for addr in [
        "203.0.113.7",
        "::ffff:203.0.113.7",
        "64:ff9b::203.0.113.7",
        "64:ff9b:1::203.0.113.7",
        "64:ff9b:1:abcd::cb00:7107",
        "2002:cb00:7107::1",
        "2002:cb00:7107:ffff::",
        "::203.0.113.7",
        "::ffff:0:203.0.113.7",
    ] {
        // The IPv6 allow rules for the embedding prefixes do not open the IPv4 hosts.
        assert_eq!(judge(&c, addr), denied, "{addr}");
    }
    // An IPv6 deny rule covering the embedded form decides although its IPv4 address is
    // allowed by default.
    assert_eq!(
        judge(&c, "64:ff9b::198.51.100.1"),
        (Action::Deny, "deny.cidrs:64:ff9b::c633:6400/120")
    );
    assert_eq!(judge(&c, "198.51.100.1"), (Action::Allow, "default"));
    // Outside the embedding prefixes, and `::`/`::1`: plain IPv6.
    assert_eq!(
        judge(&c, "64:ff9b:2::cb00:7107"),
        (Action::Allow, "default")
    );
    assert_eq!(judge(&c, "::1"), (Action::Allow, "default"));
    assert_eq!(judge(&c, "::"), (Action::Allow, "default"));
    assert_eq!(
        judge(&c, "2002:c633:6401::1"),
        (Action::Allow, "default"),
        "6to4 of an allowed IPv4 host is judged by that host, not by the IPv6 allow rule"
    );
}

#[test]
fn rule_names() {
    let c = compile(&Policy::builtin(), None).expect("compiles");
    assert_eq!(c.rule_name(RULE_DEFAULT), "default");
    assert_eq!(c.rule_name(1), "allow.cidrs:127.0.0.0/8");
    assert_eq!(c.rule_name(RULE_IPV6_ROUTING_HEADER), "ipv6-routing-header");
    assert_eq!(c.rule_name(10), "unknown");
    assert_eq!(
        c.rule_name(ollama_egress_common::RULE_IPV4_SOURCE_ROUTE),
        "ipv4-source-route"
    );
    assert_eq!(
        c.rule_name(ollama_egress_common::RULE_NO_POLICY),
        "no-policy"
    );
    assert_eq!(
        c.rule_name(ollama_egress_common::RULE_TUN_DEVICE),
        "tun-device"
    );
    assert_eq!(
        c.rule_name(ollama_egress_common::RULE_INBOUND_DEFAULT),
        "inbound.default"
    );
    assert_eq!(c.rule_name(u32::MAX - 4), "unknown");
    assert_eq!(c.rule_id("default"), Some(0));
    assert_eq!(c.rule_id("nope"), None);
}

#[test]
fn expanded_networks_are_normalised_and_unmapped() {
    let geo = FakeGeo::default().country(
        "XA",
        &[
            "::ffff:203.0.113.0/120",
            "198.51.100.77/24",
            "2001:db8::1/32",
            "::/0",
        ],
    );
    let c = compile(&parse("[deny]\ncountries = [\"XA\"]\n"), Some(&geo)).expect("compiles");
    let v4: Vec<Ipv4Net> = c.v4.iter().map(|(n, _)| *n).collect();
    let v6: Vec<Ipv6Net> = c.v6.iter().map(|(n, _)| *n).collect();
    let p4 = |s: &str| s.parse::<Ipv4Net>().expect("net");
    let p6 = |s: &str| s.parse::<Ipv6Net>().expect("net");
    assert_eq!(v4, [p4("198.51.100.0/24"), p4("203.0.113.0/24")]);
    // 2001:db8::/32 lies inside ::/0 with the same rule: dropped as redundant.
    assert_eq!(v6, [p6("::/0")]);
    // ::/0 does not cover IPv4-mapped addresses: they are judged as IPv4.
    assert_eq!(c.lookup(ip("::ffff:8.8.8.8")), (Action::Deny, RULE_DEFAULT));
    assert_eq!(
        judge(&c, "::ffff:203.0.113.1"),
        (Action::Deny, "deny.countries:XA")
    );
    assert_eq!(
        judge(&c, "2001:db8::5"),
        (Action::Deny, "deny.countries:XA")
    );
}

#[test]
fn redundant_prefixes_are_dropped_only_when_harmless() {
    let geo = FakeGeo::default().country("XA", &["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24"]);
    // Nothing in between: both longer prefixes are redundant.
    let c = compile(&parse("[deny]\ncountries = [\"XA\"]\n"), Some(&geo)).expect("compiles");
    assert_eq!(c.v4.len(), 1);
    assert_eq!(c.rules[1].v4_prefixes, 1);

    // An allow in between: 10.1.2.0/24 must stay.
    let geo = FakeGeo::default().country("XA", &["10.0.0.0/8", "10.1.2.0/24"]);
    let c = compile(
        &parse("[allow]\ncidrs = [\"10.1.0.0/16\"]\n[deny]\ncountries = [\"XA\"]\n"),
        Some(&geo),
    )
    .expect("compiles");
    let nets: Vec<String> = c.v4.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(nets, ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24"]);
    assert_eq!(judge(&c, "10.1.2.3"), (Action::Deny, "deny.countries:XA"));
    assert_eq!(
        judge(&c, "10.1.3.3"),
        (Action::Allow, "allow.cidrs:10.1.0.0/16")
    );
    assert_eq!(judge(&c, "10.2.0.1"), (Action::Deny, "deny.countries:XA"));

    // Same action but another rule in between: kept, so the rule id stays right.
    let geo = FakeGeo::default().country("XA", &["10.0.0.0/8", "10.1.2.0/24"]);
    let c = compile(
        &parse("[deny]\ncidrs = [\"10.1.0.0/16\"]\ncountries = [\"XA\"]\n"),
        Some(&geo),
    )
    .expect("compiles");
    assert_eq!(judge(&c, "10.1.2.3"), (Action::Deny, "deny.countries:XA"));
    assert_eq!(
        judge(&c, "10.1.3.3"),
        (Action::Deny, "deny.cidrs:10.1.0.0/16")
    );
    assert_eq!(judge(&c, "10.2.0.1"), (Action::Deny, "deny.countries:XA"));
}

#[test]
fn programmatic_policies_are_normalised() {
    let policy = Policy {
        default: Action::Allow,
        allow: RuleSet::default(),
        deny: RuleSet {
            cidrs: vec![
                net("10.1.2.3/8"),
                net("10.0.0.0/8"),
                net("::ffff:1.2.3.4/120"),
            ],
            countries: vec!["cn".into(), "CN".into()],
            asns: vec![],
            domains: vec![],
        },
        inbound: None,
        origin: "code".into(),
    };
    let geo = FakeGeo::default().country("CN", &["36.0.0.0/8"]);
    let c = compile(&policy, Some(&geo)).expect("compiles");
    let ids: Vec<&str> = c.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "default",
            "deny.cidrs:10.0.0.0/8",
            "deny.cidrs:1.2.3.0/24",
            "deny.countries:CN"
        ]
    );
}

#[test]
fn summary_counts_and_prints() {
    let geo = FakeGeo::full();
    let c = compile(&parse(FULL), Some(&geo)).expect("compiles");
    let s = c.summary();
    assert_eq!(s.default, Action::Deny);
    assert_eq!(s.rules.len(), 8, "default is not listed as a rule");
    assert_eq!(s.prefixes.ipv4.allow, 4);
    assert_eq!(s.prefixes.ipv6.allow, 3);
    assert_eq!(s.prefixes.ipv4.deny, 6);
    assert_eq!(s.prefixes.ipv6.deny, 2);
    let owned: usize = s.rules.iter().map(|r| r.v4_prefixes + r.v6_prefixes).sum();
    assert_eq!(owned, c.v4.len() + c.v6.len());

    let text = s.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "policy test.toml: default deny");
    assert_eq!(lines[1], "  allow.cidrs:127.0.0.0/8  allow   1 IPv4");
    assert_eq!(
        lines[6],
        "  deny.countries:CN        deny    2 IPv4  1 IPv6"
    );
    assert_eq!(
        lines[9],
        "prefixes: IPv4 4 allow / 6 deny, IPv6 3 allow / 2 deny"
    );

    let json: serde_json::Value = serde_json::to_value(&s).expect("json");
    assert_eq!(json["default"], "deny");
    assert_eq!(json["origin"], "test.toml");
    assert_eq!(json["prefixes"]["ipv4"]["deny"], 6);
    assert_eq!(json["rules"][5]["id"], "deny.countries:CN");
    assert_eq!(json["rules"][5]["action"], "deny");
    assert_eq!(json["rules"][5]["v4_prefixes"], 2);

    let empty = compile(&parse("default = \"allow\"\n"), None)
        .expect("compiles")
        .summary();
    assert_eq!(
        empty.to_string(),
        "policy test.toml: default allow\nprefixes: IPv4 0 allow / 0 deny, IPv6 0 allow / 0 deny\ninbound: no [inbound] section: every source may connect"
    );
}
