//! The checks of the fuzz targets, run over the checked-in seeds with plain `cargo test` (no
//! nightly, no libFuzzer), and shown to catch a broken compiler output.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use ollama_egress::policy::{Action, Policy, compile};
use ollama_egress_common::ACTION_DENY;
use ollama_egress_fuzz::policy::{DerivedExpander, check_compiled, check_text, probes_from_bytes};

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = fs::read_dir(&dir)
        .expect("corpus directory")
        .map(|e| {
            let path = e.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, fs::read(&path).expect("seed"))
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds for {target}");
    out
}

#[test]
fn policy_seeds_pass() {
    let mut compiled = 0;
    for (name, data) in seeds("policy") {
        let text = String::from_utf8_lossy(&data);
        if check_text(&text, &DerivedExpander, &probes_from_bytes(&data)).is_some() {
            compiled += 1;
        }
        eprintln!("policy seed {name}: ok");
    }
    assert!(compiled >= 5, "only {compiled} seeds compile");
}

#[test]
fn builtin_policy_passes() {
    let policy = Policy::builtin();
    let compiled = compile(&policy, None).expect("the built-in policy compiles");
    check_compiled(&policy, &compiled, &DerivedExpander, &[]);
}

#[test]
fn structured_seeds_pass() {
    for (_, data) in seeds("policy_structured") {
        let mut u = arbitrary::Unstructured::new(&data);
        if let Ok(p) =
            <ollama_egress_fuzz::policy::StructuredPolicy as arbitrary::Arbitrary>::arbitrary(
                &mut u,
            )
        {
            let _ = check_text(&p.text(), &p.expander(), &p.probes());
        }
    }
}

#[test]
fn event_seeds_pass() {
    for (_, data) in seeds("event_decode") {
        ollama_egress_fuzz::event::check(&data);
    }
}

#[test]
fn log_seeds_pass() {
    for (_, data) in seeds("log_query") {
        ollama_egress_fuzz::log::check(&data);
    }
}

/// A change to a compiled policy.
type Tamper = Box<dyn Fn(&mut ollama_egress::policy::CompiledPolicy)>;

/// The checker has teeth: tampered compiler output is rejected.
#[test]
fn tampered_compilations_are_caught() {
    let text = r#"
        default = "allow"
        [allow]
        cidrs = ["10.0.0.0/8", "10.1.2.0/24", "0.0.0.0/0", "2001:db8::/32", "::ffff:192.0.2.0/120"]
        countries = ["DE"]
        asns = [14]
        [deny]
        cidrs = ["10.1.0.0/16", "10.1.2.128/25", "2001:db8:1::/48", "::/0"]
        countries = ["CN"]
        asns = [7]
    "#;
    let policy = Policy::from_toml_str(text, "fuzz").expect("parses");
    let good = compile(&policy, Some(&DerivedExpander)).expect("compiles");
    check_compiled(&policy, &good, &DerivedExpander, &[]);

    let tampers: Vec<(&str, Tamper)> = vec![
        ("rule id 0", Box::new(|c| c.v4[0].1.rule_id = 0)),
        (
            "rule id out of range",
            Box::new(|c| c.v4[0].1.rule_id = 999),
        ),
        (
            "flipped action",
            Box::new(|c| c.v4[1].1.action ^= ACTION_DENY),
        ),
        (
            "dropped entry",
            Box::new(|c| {
                c.v4.remove(2);
            }),
        ),
        (
            "duplicate entry",
            Box::new(|c| {
                let e = c.v6[0];
                c.v6.insert(0, e);
            }),
        ),
        ("unsorted", Box::new(|c| c.v4.swap(0, 1))),
        (
            "default action",
            Box::new(|c| c.default_action = Action::Deny),
        ),
        ("renamed rule", Box::new(|c| c.rules[1].id.push('x'))),
        ("prefix counts", Box::new(|c| c.rules[1].v4_prefixes += 1)),
    ];
    for (what, tamper) in tampers {
        let mut bad = good.clone();
        tamper(&mut bad);
        let caught = catch_unwind(AssertUnwindSafe(|| {
            check_compiled(&policy, &bad, &DerivedExpander, &[]);
        }))
        .is_err();
        assert!(caught, "tampering ({what}) went unnoticed");
    }
}

#[test]
fn dns_seeds_pass() {
    let mut learned = 0;
    let mut refused = 0;
    for (name, data) in seeds("dns") {
        match ollama_egress_fuzz::dns::check(&data) {
            Some(n) if n > 0 => learned += 1,
            Some(_) => {}
            None => refused += 1,
        }
        eprintln!("dns seed {name}: ok");
    }
    assert!(learned >= 5, "only {learned} seeds yield addresses");
    assert!(refused >= 5, "only {refused} seeds are refused");
}
