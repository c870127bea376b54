//! Parsing and validation of policy files.

use super::super::*;
use super::{FULL, net};

fn parse(text: &str) -> Result<Policy, PolicyError> {
    Policy::from_toml_str(text, "test.toml")
}

/// Parses `text`, which must fail; returns the error, its line and its message.
fn fail(text: &str) -> (PolicyError, usize, String) {
    let err = parse(text).expect_err("policy should be rejected");
    let line = err.location().map_or(0, |l| l.line);
    let message = err.to_string();
    assert!(message.starts_with("test.toml"), "{message}");
    (err, line, message)
}

#[test]
fn full_example_parses() {
    let p = parse(FULL).expect("valid policy");
    assert_eq!(p.default, Action::Deny);
    assert_eq!(p.origin, "test.toml");
    assert_eq!(p.allow.cidrs, vec![net("127.0.0.0/8"), net("::1/128")]);
    assert_eq!(p.allow.countries, vec!["US"]);
    assert_eq!(p.allow.asns, vec![13335]);
    assert_eq!(p.deny.cidrs, vec![net("47.0.0.0/8")]);
    assert_eq!(p.deny.countries, vec!["CN"]);
    assert_eq!(p.deny.asns, vec![37963, 45102]);
}

#[test]
fn everything_is_optional_and_default_is_deny() {
    for text in ["", "# nothing\n", "[allow]\n", "[deny]\ncidrs = []\n"] {
        let p = parse(text).expect("valid policy");
        assert_eq!(p.default, Action::Deny);
        assert!(p.allow.is_empty() && p.deny.is_empty());
    }
    let p = parse("default = \"allow\"\n[deny]\ncidrs = [\"10.0.0.0/8\"]\n").expect("valid");
    assert_eq!(p.default, Action::Allow);
    assert_eq!(p.deny.cidrs, vec![net("10.0.0.0/8")]);
    assert!(p.allow.is_empty());
}

#[test]
fn inline_tables_work_too() {
    let p = parse("allow = { cidrs = [\"10.0.0.0/8\"] }\n").expect("valid");
    assert_eq!(p.allow.cidrs, vec![net("10.0.0.0/8")]);
}

#[test]
fn toml_syntax_error_names_line_and_column() {
    let (err, line, msg) = fail("default = \"deny\"\n\n[allow\ncidrs = []\n");
    assert!(matches!(err, PolicyError::Toml { .. }));
    assert_eq!(line, 3);
    assert!(msg.contains("line 3, column"), "{msg}");

    let (_, line, _) = fail("[deny]\ncidrs = [\"10.0.0.0/8\",\n");
    assert!(line >= 2);
}

#[test]
fn unknown_keys_are_refused() {
    let (err, line, msg) = fail("default = \"deny\"\nalow = 1\n");
    assert!(matches!(err, PolicyError::Toml { .. }));
    assert_eq!(line, 2);
    assert!(msg.contains("unknown field `alow`"), "{msg}");

    let (_, line, msg) = fail("[deny]\ncidrs = []\ncountry = [\"CN\"]\n");
    assert_eq!(line, 3);
    assert!(msg.contains("unknown field `country`"), "{msg}");
    assert!(msg.contains("countries"), "suggests the known keys: {msg}");

    let (_, line, msg) = fail("[block]\ncidrs = []\n");
    assert_eq!(line, 1);
    assert!(msg.contains("unknown field `block`"), "{msg}");
}

#[test]
fn wrong_types_are_refused() {
    let (_, line, msg) = fail("[allow]\ncidrs = \"10.0.0.0/8\"\n");
    assert_eq!(line, 2);
    assert!(msg.contains("expected a sequence"), "{msg}");

    let (_, line, msg) = fail("[deny]\nasns = [\n  1,\n  \"AS2\",\n]\n");
    assert_eq!(line, 4);
    assert!(msg.contains("expected an AS number"), "{msg}");
}

#[test]
fn bad_action_is_refused() {
    for (text, value) in [
        ("# policy\ndefault = \"block\"\n", "block"),
        ("# policy\ndefault = \"Allow\"\n", "Allow"),
        ("# policy\ndefault = \"\"\n", ""),
    ] {
        let (err, line, msg) = fail(text);
        assert!(matches!(err, PolicyError::BadAction { .. }), "{err:?}");
        assert_eq!(line, 2);
        assert!(
            msg.contains(&format!("{value:?} is not an action")),
            "{msg}"
        );
        assert!(msg.contains("line 2, column 11"), "{msg}");
    }
    let (err, line, _) = fail("default = 1\n");
    assert!(matches!(err, PolicyError::Toml { .. }));
    assert_eq!(line, 1);
}

#[test]
fn invalid_cidr_names_line_and_entry() {
    let text = "[allow]\ncidrs = [\n  \"10.0.0.0/8\",\n  \"10.0.0.0/33\",\n]\n";
    let (err, line, msg) = fail(text);
    assert!(matches!(err, PolicyError::InvalidCidr { .. }), "{err:?}");
    assert_eq!(line, 4);
    assert!(msg.contains("line 4, column 3"), "{msg}");
    assert!(
        msg.contains("allow.cidrs: \"10.0.0.0/33\" is not a valid CIDR"),
        "{msg}"
    );
    assert!(msg.contains("longer than 32"), "{msg}");

    for bad in ["example.com", "10.0.0/8", "::/129", "10.0.0.0/x", ""] {
        let (err, line, _) = fail(&format!("[deny]\ncidrs = [\"{bad}\"]\n"));
        assert!(
            matches!(err, PolicyError::InvalidCidr { .. }),
            "{bad}: {err:?}"
        );
        assert_eq!(line, 2);
    }
}

#[test]
fn host_bits_are_refused_with_a_suggestion() {
    let (err, line, msg) = fail("[deny]\n\ncidrs = [\"47.0.0.0/8\", \"10.1.2.3/8\"]\n");
    assert!(matches!(err, PolicyError::HostBitsSet { .. }), "{err:?}");
    assert_eq!(line, 3);
    assert!(msg.contains("line 3, column 24"), "{msg}");
    assert!(msg.contains("\"10.1.2.3/8\" has host bits set"), "{msg}");
    assert!(
        msg.contains("\"10.0.0.0/8\""),
        "suggests the network: {msg}"
    );
    assert!(msg.contains("\"10.1.2.3/32\""), "suggests the host: {msg}");

    let (_, _, msg) = fail("[deny]\ncidrs = [\"2001:db8::1/32\"]\n");
    assert!(msg.contains("\"2001:db8::/32\""), "{msg}");
}

#[test]
fn bare_addresses_are_host_routes() {
    let p = parse("[allow]\ncidrs = [\"192.0.2.1\", \"2001:db8::1\"]\n").expect("valid");
    assert_eq!(
        p.allow.cidrs,
        vec![net("192.0.2.1/32"), net("2001:db8::1/128")]
    );
}

#[test]
fn v4_mapped_cidrs_become_ipv4() {
    let p = parse("[deny]\ncidrs = [\"::ffff:1.2.3.0/120\", \"::ffff:198.51.100.7\", \"::/0\"]\n")
        .expect("valid");
    assert_eq!(
        p.deny.cidrs,
        vec![net("1.2.3.0/24"), net("198.51.100.7/32"), net("::/0")]
    );
    // The mapped form and the IPv4 form are the same entry.
    let (err, line, msg) = fail("[deny]\ncidrs = [\n\"1.2.3.0/24\",\n\"::ffff:1.2.3.0/120\"]\n");
    assert!(
        matches!(err, PolicyError::Duplicate { first_line: 3, .. }),
        "{err:?}"
    );
    assert_eq!(line, 4);
    assert!(msg.contains("both mean 1.2.3.0/24"), "{msg}");
}

#[test]
fn countries_are_validated_and_upper_cased() {
    let p = parse("[deny]\ncountries = [\"cn\", \"Ru\"]\n").expect("valid");
    assert_eq!(p.deny.countries, vec!["CN", "RU"]);

    for bad in ["CHN", "C", "", "C1", "ÇN", "C N", "12"] {
        let (err, line, msg) = fail(&format!("[deny]\n\ncountries = [\"{bad}\"]\n"));
        assert!(
            matches!(err, PolicyError::InvalidCountry { .. }),
            "{bad}: {err:?}"
        );
        assert_eq!(line, 3);
        assert!(msg.contains("deny.countries"), "{msg}");
        assert!(msg.contains("is not a country code"), "{msg}");
    }
}

#[test]
fn asn_zero_and_out_of_range_are_refused() {
    for bad in ["0", "-1", "4294967296"] {
        let (err, line, msg) = fail(&format!("[allow]\nasns = [13335,\n {bad}]\n"));
        assert!(
            matches!(err, PolicyError::InvalidAsn { .. }),
            "{bad}: {err:?}"
        );
        assert_eq!(line, 3);
        assert!(
            msg.contains(&format!("allow.asns: {bad} is not a valid AS number")),
            "{msg}"
        );
    }
    let p = parse("[allow]\nasns = [4294967295, 1]\n").expect("valid");
    assert_eq!(p.allow.asns, vec![u32::MAX, 1]);
}

#[test]
fn duplicates_within_a_list_are_refused() {
    let (err, line, msg) = fail("[allow]\ncidrs = [\"10.0.0.1\",\n\"10.0.0.1/32\"]\n");
    assert!(
        matches!(err, PolicyError::Duplicate { first_line: 2, .. }),
        "{err:?}"
    );
    assert_eq!(line, 3);
    assert!(
        msg.contains("allow.cidrs: \"10.0.0.1/32\" duplicates the entry on line 2"),
        "{msg}"
    );

    let (_, line, msg) = fail("[deny]\ncountries = [\"CN\", \"RU\",\n \"cn\"]\n");
    assert_eq!(line, 3);
    assert!(
        msg.contains("deny.countries: \"cn\" duplicates the entry on line 2"),
        "{msg}"
    );

    let (_, line, msg) = fail("[deny]\nasns = [\n1,\n2,\n1]\n");
    assert_eq!(line, 5);
    assert!(
        msg.contains("deny.asns: 1 duplicates the entry on line 3"),
        "{msg}"
    );

    // The same entry in allow and in deny is no duplicate: deny wins at compile time.
    parse("[allow]\ncidrs = [\"10.0.0.0/8\"]\n[deny]\ncidrs = [\"10.0.0.0/8\"]\n").expect("valid");
}

#[test]
fn columns_count_characters() {
    let text = "ä\nää x";
    let at = Location::at("o", text, text.find('x').expect("x"));
    assert_eq!((at.line, at.column), (2, 4));
    assert_eq!(at.to_string(), "o: line 2, column 4");
    // An offset inside a character counts from its start.
    assert_eq!(Location::at("o", text, 1).column, 1);
    assert_eq!(Location::at("o", text, 999).line, 2);
}

#[test]
fn from_file_reads_and_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, FULL).expect("write");
    let p = Policy::from_file(&path).expect("valid");
    assert_eq!(p.origin, path.display().to_string());
    assert_eq!(p.deny.asns, vec![37963, 45102]);

    std::fs::write(&path, "[deny]\ncidrs = [\"10.1.2.3/8\"]\n").expect("write");
    let msg = Policy::from_file(&path).expect_err("invalid").to_string();
    assert!(
        msg.starts_with(&format!("{}: line 2", path.display())),
        "{msg}"
    );

    let missing = dir.path().join("missing.toml");
    let err = Policy::from_file(&missing).expect_err("missing");
    assert!(err.is_not_found());
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    std::fs::write(&path, [0xff, 0xfe, 0x00]).expect("write");
    let err = Policy::from_file(&path).expect_err("not UTF-8");
    assert!(matches!(err, PolicyError::Read { .. }));
    assert!(!err.is_not_found());
}

#[test]
fn builtin_policy() {
    let p = Policy::builtin();
    assert_eq!(p.origin, "built-in");
    assert_eq!(p.default, Action::Deny);
    assert!(p.deny.is_empty());
    assert!(p.allow.countries.is_empty() && p.allow.asns.is_empty());
    let expected = [
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "100.64.0.0/10",
        "fc00::/7",
        "fe80::/10",
    ];
    assert_eq!(
        p.allow.cidrs,
        expected.iter().map(|c| net(c)).collect::<Vec<_>>()
    );
}

#[test]
fn action_encodings() {
    assert_eq!(Action::Allow.as_str(), "allow");
    assert_eq!(Action::Deny.to_string(), "deny");
    assert_eq!(
        Action::Allow.to_kernel(),
        ollama_egress_common::ACTION_ALLOW
    );
    assert_eq!(Action::Deny.to_kernel(), ollama_egress_common::ACTION_DENY);
    assert_eq!(Action::from_kernel(1), Some(Action::Deny));
    assert_eq!(Action::from_kernel(7), None);
    assert_eq!(
        serde_json::to_string(&Action::Deny).expect("json"),
        "\"deny\""
    );
}
