use super::*;

fn compiled(text: &str) -> CompiledPolicy {
    let p = crate::policy::Policy::from_toml_str(text, "t.toml").expect("valid");
    crate::policy::compile(&p, None).expect("compiles")
}

fn bound(addr: &str, name: &str, s: u64) -> NameBinding {
    NameBinding {
        addr: addr.parse().expect("ip"),
        name: name.into(),
        expires_in_s: s,
    }
}

#[test]
fn explain_a_name_gives_its_rule_and_bound_addresses() {
    let c = compiled(
        "default = \"deny\"\n[allow]\ncidrs = [\"198.51.100.0/24\"]\ndomains = [\"*.r2.cloudflarestorage.com\"]\n\
         [deny]\ndomains = [\"ollama.com\"]\n",
    );
    let name = |s: &str| explain_arg(s).expect("name");
    assert_eq!(
        name("X.R2.cloudflarestorage.com."),
        Explain::Name("x.r2.cloudflarestorage.com".into())
    );
    assert!(explain_arg("a..b").is_err());
    let table = [
        bound("203.0.113.9", "x.r2.cloudflarestorage.com", 40),
        bound("203.0.113.9", "ollama.com", 50),
        bound("203.0.113.10", "x.r2.cloudflarestorage.com", 40),
    ];
    let lines = explain_lines(&c, &name("x.r2.cloudflarestorage.com"), Some(&table));
    assert_eq!(
        lines,
        [
            "x.r2.cloudflarestorage.com: allow by allow.domains:*.r2.cloudflarestorage.com",
            "  bound to 203.0.113.9 for 40s: deny by deny.domains:ollama.com (bound to ollama.com, 50s left)",
            "  bound to 203.0.113.10 for 40s: allow by allow.domains:*.r2.cloudflarestorage.com (bound to x.r2.cloudflarestorage.com, 40s left)",
        ]
    );
    let lines = explain_lines(&c, &name("example.org"), Some(&table));
    assert_eq!(
        lines,
        [
            "example.org: no domain rule: IP rules decide the addresses",
            "  no addresses bound to it now"
        ]
    );
    let lines = explain_lines(&c, &name("ollama.com"), None);
    assert_eq!(lines[0], "ollama.com: deny by deny.domains:ollama.com");
    assert!(lines[1].contains("no daemon"), "{lines:?}");
    // An address: bound names decide first, else the IP rules.
    let ip = |s: &str| explain_arg(s).expect("ip");
    assert_eq!(
        explain_lines(&c, &ip("203.0.113.10"), Some(&table)),
        [
            "203.0.113.10: allow by allow.domains:*.r2.cloudflarestorage.com (bound to x.r2.cloudflarestorage.com, 40s left)",
            "203.0.113.10 as a source (inbound): allow by inbound.default"
        ]
    );
    assert_eq!(
        explain_lines(&c, &ip("198.51.100.1"), Some(&table)),
        [
            "198.51.100.1: allow by allow.cidrs:198.51.100.0/24",
            "198.51.100.1 as a source (inbound): allow by inbound.default"
        ]
    );
    assert_eq!(
        explain_lines(&c, &ip("203.0.113.10"), None),
        [
            "203.0.113.10: deny by default",
            "203.0.113.10 as a source (inbound): allow by inbound.default"
        ]
    );
}

#[test]
fn explain_names_the_ipv4_address_an_ipv6_form_carries() {
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    assert_eq!(
        judged_as(ip("64:ff9b::203.0.113.7")),
        " (NAT64 of 203.0.113.7)"
    );
    assert_eq!(judged_as(ip("2002:cb00:7107::1")), " (6to4 of 203.0.113.7)");
    assert_eq!(judged_as(ip("2001:db8::1")), "");
    assert_eq!(judged_as(ip("203.0.113.7")), "");
}
