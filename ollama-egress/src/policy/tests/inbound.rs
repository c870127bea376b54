//! The `[inbound]` section: parsing, errors with line and column, compiling, lookups.

use ollama_egress_common::{ACTION_DENY, RULE_INBOUND_DEFAULT};

use super::super::*;
use super::{FakeGeo, ip, net};

fn parse(text: &str) -> Result<Policy, PolicyError> {
    Policy::from_toml_str(text, "test.toml")
}

const GUARD: &str = r#"default = "deny"
[allow]
cidrs = ["10.0.0.0/8"]

[inbound]
default = "deny"
[inbound.allow]
cidrs = ["127.0.0.0/8", "::1/128", "192.168.1.0/24"]
countries = ["XA"]
[inbound.deny]
cidrs = ["192.168.1.66/32"]
asns = [64500]
"#;

fn judge(c: &CompiledPolicy, addr: &str) -> (Action, String) {
    let (action, rule) = c.lookup_inbound(ip(addr));
    (action, c.rule_name(rule).to_owned())
}

#[test]
fn the_section_parses_and_is_absent_by_default() {
    let p = parse(GUARD).expect("valid");
    let inbound = p.inbound.expect("section");
    assert_eq!(inbound.default, Action::Deny);
    assert_eq!(inbound.allow.cidrs[2], net("192.168.1.0/24"));
    assert_eq!(inbound.allow.countries, ["XA"]);
    assert_eq!(inbound.deny.asns, [64500]);
    // Without a section every source may connect; with one but no default key, deny.
    assert_eq!(parse("default = \"deny\"\n").expect("valid").inbound, None);
    let bare = parse("[inbound.allow]\ncidrs = [\"10.0.0.0/8\"]\n").expect("valid");
    assert_eq!(bare.inbound.expect("section").default, Action::Deny);
}

#[test]
fn errors_name_the_inbound_list_line_and_column() {
    for (text, line, column, needle) in [
        ("[inbound]\ndefault = \"maybe\"\n", 2, 11, "\"maybe\""),
        (
            "[inbound.allow]\ncidrs = [\"10.0.0.1/8\"]\n",
            2,
            10,
            "inbound.allow.cidrs",
        ),
        (
            "[inbound.deny]\ncountries = [\"China\"]\n",
            2,
            14,
            "inbound.deny.countries",
        ),
        ("[inbound.deny]\nasns = [0]\n", 2, 9, "inbound.deny.asns"),
        (
            "[inbound.allow]\ndomains = [\"ollama.com\"]\n",
            2,
            12,
            "inbound.allow.domains",
        ),
        (
            "[inbound.allow]\ncidrs = [\"10.0.0.0/8\", \"10.0.0.0/8\"]\n",
            2,
            24,
            "inbound.allow.cidrs",
        ),
        ("[inbound]\nports = [11434]\n", 2, 1, "ports"),
    ] {
        let err = parse(text).expect_err(text);
        let at = err.location().expect("a location");
        assert_eq!((at.line, at.column), (line, column), "{text}: {err}");
        assert!(err.to_string().contains(needle), "{text}: {err}");
    }
}

#[test]
fn compiles_into_inbound_tries_with_stable_rule_ids() {
    let geo = FakeGeo::default()
        .country("XA", &["203.0.113.0/24"])
        .asn(64500, &["198.51.100.0/24"]);
    let c = compile(&parse(GUARD).expect("valid"), Some(&geo)).expect("compiles");
    assert_eq!(
        judge(&c, "192.168.1.7"),
        (Action::Allow, "inbound.allow.cidrs:192.168.1.0/24".into())
    );
    assert_eq!(
        judge(&c, "192.168.1.66"),
        (Action::Deny, "inbound.deny.cidrs:192.168.1.66/32".into())
    );
    assert_eq!(
        judge(&c, "203.0.113.9"),
        (Action::Allow, "inbound.allow.countries:XA".into())
    );
    assert_eq!(
        judge(&c, "198.51.100.10"),
        (Action::Deny, "inbound.deny.asns:64500".into())
    );
    assert_eq!(
        judge(&c, "::1"),
        (Action::Allow, "inbound.allow.cidrs:::1/128".into())
    );
    assert_eq!(
        judge(&c, "::ffff:127.0.0.1"),
        (Action::Allow, "inbound.allow.cidrs:127.0.0.0/8".into())
    );
    assert_eq!(
        judge(&c, "8.8.8.8"),
        (Action::Deny, "inbound.default".into())
    );
    assert_eq!(
        judge(&c, "2001:db8::1"),
        (Action::Deny, "inbound.default".into())
    );
    // The outbound side is untouched: inbound rules are not destinations.
    assert_eq!(c.lookup(ip("192.168.1.7")).0, Action::Deny);
    assert_eq!(
        c.rule_name(c.lookup(ip("10.1.1.1")).1),
        "allow.cidrs:10.0.0.0/8"
    );
    assert!(!c.v4.iter().any(|(n, _)| n.to_string() == "192.168.1.0/24"));
    // The default owns the /0 entries of both inbound tries.
    assert!(c.inbound_v4.iter().any(|(n, v)| n.prefix_len() == 0
        && v.rule_id == RULE_INBOUND_DEFAULT
        && v.action == ACTION_DENY));
    assert!(
        c.inbound_v6
            .iter()
            .any(|(n, v)| n.prefix_len() == 0 && v.rule_id == RULE_INBOUND_DEFAULT)
    );
    let s = c.summary();
    assert!(s.inbound.section && s.inbound.default == Action::Deny);
    assert!(s.to_string().contains("inbound: default deny"), "{s}");
}

#[test]
fn without_a_section_every_source_is_allowed_by_the_default() {
    let c = compile(&parse("default = \"deny\"\n").expect("valid"), None).expect("compiles");
    assert_eq!(
        judge(&c, "198.51.100.10"),
        (Action::Allow, "inbound.default".into())
    );
    assert_eq!(
        judge(&c, "2001:db8::1"),
        (Action::Allow, "inbound.default".into())
    );
    assert_eq!(c.inbound_v4.len(), 1);
    assert_eq!(c.inbound_v6.len(), 1);
    assert!(!c.summary().inbound.section);
    // A section that allows everything is still a section.
    let open = compile(
        &parse("[inbound]\ndefault = \"allow\"\n").expect("valid"),
        None,
    )
    .expect("compiles");
    assert!(open.summary().inbound.section);
    assert!(
        open.summary()
            .to_string()
            .contains("inbound: default allow"),
        "{}",
        open.summary()
    );
}

#[test]
fn a_rule_listing_everything_beats_the_default() {
    let text = "[inbound]\ndefault = \"deny\"\n[inbound.allow]\ncidrs = [\"0.0.0.0/0\"]\n";
    let c = compile(&parse(text).expect("valid"), None).expect("compiles");
    assert_eq!(
        judge(&c, "198.51.100.10"),
        (Action::Allow, "inbound.allow.cidrs:0.0.0.0/0".into())
    );
    assert_eq!(
        judge(&c, "2001:db8::1"),
        (Action::Deny, "inbound.default".into())
    );
}

#[test]
fn inbound_countries_need_the_geo_database() {
    let err = compile(&parse(GUARD).expect("valid"), None).expect_err("no geo");
    let text = err.to_string();
    assert!(text.contains("inbound.allow.countries:XA"), "{text}");
    assert!(text.contains("inbound.deny.asns:64500"), "{text}");
}
