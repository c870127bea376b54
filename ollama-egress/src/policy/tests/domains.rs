//! Domain rules: parsing, canonical form, errors with positions, compilation, lookup.

use ollama_egress_common::dns::{MAX_DOMAIN_RULES, domain_key};
use ollama_egress_common::{ACTION_ALLOW, ACTION_DENY};

use super::super::*;

fn parse(text: &str) -> Result<Policy, PolicyError> {
    Policy::from_toml_str(text, "test.toml")
}

fn compiled(text: &str) -> CompiledPolicy {
    compile(&parse(text).expect("valid policy"), None).expect("compiles")
}

/// The rule deciding `name` as (action, rule name), or `None`.
fn decide<'a>(c: &'a CompiledPolicy, name: &str) -> Option<(Action, &'a str)> {
    c.lookup_domain(name).map(|e| {
        (
            Action::from_kernel(e.value.action).expect("action"),
            c.rule_name(e.value.rule_id),
        )
    })
}

#[test]
fn names_are_canonicalised() {
    let p = parse(
        "[allow]\ndomains = [\"Registry.Ollama.AI.\", \"*.R2.cloudflarestorage.com\", \"_srv.x-y.example\"]\n",
    )
    .expect("valid");
    let shown: Vec<String> = p.allow.domains.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        shown,
        [
            "registry.ollama.ai",
            "*.r2.cloudflarestorage.com",
            "_srv.x-y.example"
        ]
    );
    assert!(p.allow.domains[1].wildcard);
    assert_eq!(p.allow.domains[1].name, "r2.cloudflarestorage.com");
    assert!(!p.allow.is_empty());
}

#[test]
fn invalid_names_are_errors_with_line_and_column() {
    let cases: [(&str, &str); 10] = [
        ("", "empty"),
        (".", "empty"),
        ("a..b", "empty label"),
        (".a.b", "empty label"),
        ("a.*.b", "whole first label"),
        ("*", "whole first label"),
        ("*.", "empty"),
        ("bad name.com", "' ' is not allowed"),
        ("exämple.com", "punycode"),
        ("a/b", "'/' is not allowed"),
    ];
    for (value, why) in cases {
        let text = format!("# x\n[deny]\ndomains = [\"ok.example\",\n  \"{value}\"]\n");
        let err = parse(&text).expect_err(value);
        assert!(
            matches!(err, PolicyError::InvalidDomain { .. }),
            "{value}: {err:?}"
        );
        let at = err.location().expect("position");
        assert_eq!((at.line, at.column), (4, 3), "{value}");
        let msg = err.to_string();
        assert!(
            msg.starts_with("test.toml: line 4, column 3: deny.domains:"),
            "{msg}"
        );
        assert!(msg.contains(why), "{value}: {msg}");
    }
    let long_label = format!("{}.com", "a".repeat(64));
    let err = parse(&format!("[allow]\ndomains = [\"{long_label}\"]\n")).expect_err("label");
    assert!(err.to_string().contains("at most 63"), "{err}");
    let long_name = vec!["a".repeat(60); 5].join(".");
    assert_eq!(long_name.len(), 304);
    let err = parse(&format!("[allow]\ndomains = [\"{long_name}\"]\n")).expect_err("name");
    assert!(err.to_string().contains("at most 253"), "{err}");
    // The longest canonical name is fine, with a trailing dot too.
    let max = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    assert_eq!(max.len(), 253);
    parse(&format!("[allow]\ndomains = [\"{max}.\"]\n")).expect("253 bytes");
    // Not a string.
    let err = parse("[allow]\ndomains = [1]\n").expect_err("number");
    assert!(matches!(err, PolicyError::Toml { .. }));
}

#[test]
fn duplicates_after_canonicalisation_are_errors() {
    let err = parse("[allow]\ndomains = [\"ollama.com\",\n \"OLLAMA.com.\"]\n").expect_err("dup");
    assert!(
        matches!(err, PolicyError::Duplicate { first_line: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("both mean ollama.com"), "{err}");
    // An exact name and its wildcard are different patterns.
    parse("[allow]\ndomains = [\"ollama.com\", \"*.ollama.com\"]\n").expect("distinct");
}

#[test]
fn rule_ids_name_the_canonical_pattern() {
    let c = compiled(
        "[allow]\ncidrs = [\"10.0.0.0/8\"]\ndomains = [\"Registry.Ollama.ai\", \"*.ollama.com\"]\n\
         [deny]\ndomains = [\"ollama.com\"]\n",
    );
    let ids: Vec<&str> = c.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "default",
            "allow.cidrs:10.0.0.0/8",
            "allow.domains:registry.ollama.ai",
            "allow.domains:*.ollama.com",
            "deny.domains:ollama.com",
        ]
    );
    assert_eq!(c.domains.len(), 3);
    let s = c.summary();
    assert_eq!((s.domains.allow, s.domains.deny), (2, 1));
    let text = s.to_string();
    assert!(text.contains("domains: 2 allow / 1 deny"), "{text}");
    assert!(text.contains("allow.domains:*.ollama.com"), "{text}");
}

#[test]
fn most_specific_rule_decides_and_suffix_skips_the_apex() {
    let c = compiled(
        "[allow]\ndomains = [\"*.example.com\", \"a.b.example.com\"]\n\
         [deny]\ndomains = [\"*.b.example.com\", \"example.com\"]\n",
    );
    assert_eq!(
        decide(&c, "x.example.com"),
        Some((Action::Allow, "allow.domains:*.example.com"))
    );
    assert_eq!(
        decide(&c, "x.b.example.com"),
        Some((Action::Deny, "deny.domains:*.b.example.com"))
    );
    assert_eq!(
        decide(&c, "a.b.example.com"),
        Some((Action::Allow, "allow.domains:a.b.example.com"))
    );
    // `*.b.example.com` does not cover b.example.com; `*.example.com` does.
    assert_eq!(
        decide(&c, "b.example.com"),
        Some((Action::Allow, "allow.domains:*.example.com"))
    );
    assert_eq!(
        decide(&c, "example.com"),
        Some((Action::Deny, "deny.domains:example.com"))
    );
    assert_eq!(decide(&c, "badexample.com"), None);
    assert_eq!(decide(&c, "com"), None);
}

#[test]
fn a_pattern_in_both_lists_is_denied() {
    let c = compiled(
        "[allow]\ndomains = [\"ollama.com\", \"*.ollama.com\"]\n[deny]\ndomains = [\"OLLAMA.COM\"]\n",
    );
    assert_eq!(
        decide(&c, "ollama.com"),
        Some((Action::Deny, "deny.domains:ollama.com"))
    );
    assert_eq!(
        decide(&c, "www.ollama.com"),
        Some((Action::Allow, "allow.domains:*.ollama.com"))
    );
    let allow = &c.rules[c.rule_id("allow.domains:ollama.com").expect("rule") as usize];
    assert_eq!(allow.domain_entries, 0);
    assert_eq!(c.domains.len(), 2);
    assert!(c.summary().to_string().contains("shadowed"));
}

#[test]
fn entries_carry_the_trie_keys_of_dns_rs() {
    let c =
        compiled("[deny]\ndomains = [\"*.Example.com\"]\n[allow]\ndomains = [\"a.example.com\"]\n");
    let deny = c
        .domains
        .iter()
        .find(|e| e.pattern.wildcard)
        .expect("wildcard");
    assert_eq!(
        deny.pattern.key(),
        domain_key(b"example.com", true).expect("key")
    );
    assert_eq!(deny.value.action, ACTION_DENY);
    let allow = c
        .domains
        .iter()
        .find(|e| !e.pattern.wildcard)
        .expect("exact");
    assert_eq!(
        allow.pattern.key(),
        domain_key(b"a.example.com", false).expect("key")
    );
    assert_eq!(allow.value.action, ACTION_ALLOW);
    assert!(deny.pattern.matches("x.example.com") && !deny.pattern.matches("example.com"));
    assert!(!deny.pattern.matches("xexample.com"));
}

#[test]
fn too_many_domain_rules_is_an_error() {
    let names: Vec<String> = (0..=MAX_DOMAIN_RULES)
        .map(|i| format!("\"h{i}.example\""))
        .collect();
    let text = format!("[allow]\ndomains = [{}]\n", names.join(","));
    let err = compile(&parse(&text).expect("valid"), None).expect_err("too many");
    assert!(
        matches!(err, PolicyError::TooManyDomainRules { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("at most 16384"), "{err}");
}
