//! The kernel's domain tables hold what the compiler produced, a reload removes what the new
//! policy no longer has, and the bindings of a reload are rebuilt for the new generation before
//! the switch (merged with what the kernel learned meanwhile).

use std::net::IpAddr;

use ollama_egress::{
    daemon::table_policy,
    loader::{Loaded, MapSizes, TableError},
    model::Mode,
    pipeline::binding_key,
    policy::{CompiledPolicy, DomainEntry, DomainPattern, Policy, compile},
};
use ollama_egress_common::{ACTION_ALLOW, ACTION_DENY, PolicyValue, dns::Binding};
use ollama_egress_tests::require_root;

fn compiled(text: &str) -> CompiledPolicy {
    compile(
        &Policy::from_toml_str(text, "test.toml").expect("valid policy"),
        None,
    )
    .expect("compiles")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

#[test]
fn domain_rules_and_bindings_are_written_with_the_slot() {
    require_root();
    let mut loaded = Loaded::load(MapSizes::default(), None).expect("load programs");
    let mut tables = loaded.policy_tables().expect("tables");
    assert!(
        tables.learns_names(),
        "the kernel object has no DOMAINS_*/BINDINGS_* maps"
    );

    let first = compiled(
        "[allow]\ndomains = [\"registry.ollama.ai\", \"*.r2.cloudflarestorage.com\"]\n\
         [deny]\ndomains = [\"ollama.com\", \"*.ollama.com\"]\n",
    );
    let allow_registry = first
        .rule_id("allow.domains:registry.ollama.ai")
        .expect("rule");
    let addr = binding_key(ip("198.51.100.7"));
    let rebuilt = Binding {
        allow_until_ns: u64::MAX / 2,
        allow_rule: allow_registry,
        ..Binding::default()
    };
    let g1 = tables
        .apply_with_bindings(
            table_policy(&first, Mode::Enforce),
            |_| (),
            |_| vec![(addr, rebuilt)],
        )
        .expect("apply");
    let rule = |t: &ollama_egress::loader::PolicyTables, name: &str| {
        t.lookup_domain(name)
            .expect("kernel lookup")
            .map(|v| (v.action, rule_name(&first, v)))
    };
    assert_eq!(
        rule(&tables, "registry.ollama.ai"),
        Some((ACTION_ALLOW, "allow.domains:registry.ollama.ai".into()))
    );
    assert_eq!(
        rule(&tables, "x.r2.cloudflarestorage.com"),
        Some((
            ACTION_ALLOW,
            "allow.domains:*.r2.cloudflarestorage.com".into()
        ))
    );
    assert_eq!(rule(&tables, "r2.cloudflarestorage.com"), None);
    assert_eq!(
        rule(&tables, "www.ollama.com"),
        Some((ACTION_DENY, "deny.domains:*.ollama.com".into()))
    );
    // The kernel's trie agrees with the compiler's reference for every name tried.
    for name in [
        "ollama.com",
        "a.b.ollama.com",
        "registry.ollama.ai",
        "example.org",
        "ai",
    ] {
        assert_eq!(
            tables.lookup_domain(name).expect("kernel lookup"),
            first.lookup_domain(name).map(|e| e.value),
            "{name}"
        );
    }
    let b = tables
        .binding(&addr, false)
        .expect("read")
        .expect("rebuilt binding");
    assert_eq!(b.generation, g1);
    assert_eq!(
        (b.allow_until_ns, b.allow_rule),
        (rebuilt.allow_until_ns, allow_registry)
    );

    // The kernel learns an answer for the next generation while the slot is rebuilt: the
    // rebuild merges with it instead of overwriting it. An entry of an old generation goes.
    let second = compiled("[deny]\ndomains = [\"registry.ollama.ai\"]\n");
    let deny_registry = second
        .rule_id("deny.domains:registry.ollama.ai")
        .expect("rule");
    // What the kernel learned for the new generation in the slot being rebuilt: merged with,
    // not overwritten by, the rebuilt binding. An entry of an old generation goes.
    let learned = Binding {
        allow_until_ns: 50_000,
        allow_rule: 1,
        generation: g1 + 1,
        ..Binding::default()
    };
    tables
        .put_inactive_binding(&addr, learned)
        .expect("kernel-like write");
    let stale = binding_key(ip("198.51.100.8"));
    tables
        .put_inactive_binding(
            &stale,
            Binding {
                generation: g1.wrapping_sub(1),
                ..rebuilt
            },
        )
        .expect("kernel-like write");
    let g2 = tables
        .apply_with_bindings(
            table_policy(&second, Mode::Enforce),
            |_| (),
            |g| {
                assert_eq!(g, g1 + 1);
                vec![(
                    addr,
                    Binding {
                        deny_until_ns: 9_000,
                        deny_rule: deny_registry,
                        ..Binding::default()
                    },
                )]
            },
        )
        .expect("apply");
    assert_eq!(g2, g1 + 1);
    let b = tables
        .binding(&addr, false)
        .expect("read")
        .expect("binding");
    assert_eq!(b.generation, g2);
    assert_eq!((b.deny_until_ns, b.deny_rule), (9_000, deny_registry));
    assert_eq!(
        (b.allow_until_ns, b.allow_rule),
        (50_000, 1),
        "the kernel's entry is kept"
    );
    assert_eq!(tables.binding(&stale, false).expect("read"), None);
    // The first policy's rules are gone from the slot now in force.
    assert_eq!(
        tables
            .lookup_domain("x.r2.cloudflarestorage.com")
            .expect("lookup"),
        None
    );
    assert_eq!(
        tables.lookup_domain("www.ollama.com").expect("lookup"),
        None
    );
    assert_eq!(
        tables
            .lookup_domain("registry.ollama.ai")
            .expect("lookup")
            .map(|v| v.action),
        Some(ACTION_DENY)
    );

    // More domain rules than the trie holds: refused whole, the policy in force unchanged.
    let many: Vec<DomainEntry> = (0..=ollama_egress_common::dns::MAX_DOMAIN_RULES)
        .map(|i| DomainEntry {
            pattern: DomainPattern::parse(&format!("h{i}.example")).expect("pattern"),
            value: PolicyValue {
                action: ACTION_ALLOW,
                rule_id: 1,
            },
        })
        .collect();
    let mut big = table_policy(&second, Mode::Enforce);
    big.domains = &many;
    let err = tables.apply(big).expect_err("over capacity");
    assert!(matches!(err, TableError::DomainCapacity { .. }), "{err}");
    assert!(err.to_string().contains("at most 16384"), "{err}");
    assert_eq!(tables.generation(), g2);
}

fn rule_name(c: &CompiledPolicy, v: PolicyValue) -> String {
    c.rule_name(v.rule_id).to_owned()
}
