//! `policy suggest` and `policy replay` against a real monitor log: suggest from what a
//! namespace client reached, check it, enforce it (the destinations seen still work, another
//! is refused), replay a stricter policy (it names exactly what it would block), and a log with
//! malformed lines (counted, not fatal); names a client resolved become domain rules.

use std::{
    collections::BTreeSet,
    fs::OpenOptions,
    io::Write as _,
    path::Path,
    process::{Command, Output},
};

use ollama_egress_tests::{
    Scenario, ScenarioSpec, daemon_bin,
    dns::{DnsScenario, Zone},
    probe, with, write_policy,
};
use serde_json::Value;

/// The three destinations the monitored client reaches, and a fourth it never does.
const ADDRS: &[&str] = &[
    "198.51.100.10/32",
    "198.51.100.11/32",
    "2001:db8::1/128",
    "203.0.113.7/32",
];
const LISTEN: &[&str] = &[
    "198.51.100.10:8080",
    "[2001:db8::1]:8080",
    "203.0.113.7:8080",
];
const SEEN: [(&str, &str); 3] = [
    ("tcp", "198.51.100.10:8080"),
    ("udp", "198.51.100.11:5353"),
    ("tcp", "[2001:db8::1]:8080"),
];

fn policy_cmd(args: &[&str], log_dir: &Path) -> Output {
    Command::new(daemon_bin())
        .arg("policy")
        .args(args)
        .arg("--log-dir")
        .arg(log_dir)
        .output()
        .expect("run ollama-egress policy")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn suggest_check_enforce_and_replay_round_trip() {
    let mut monitor = Scenario::start(ScenarioSpec::new(
        "oe-sugm",
        ADDRS,
        "--monitor",
        "default = \"allow\"\n",
    ));
    let inside = monitor.inside(LISTEN);
    for (proto, dst) in SEEN {
        probe(&with(&inside, &[proto, dst])).assert_ok(dst);
    }
    let seen = monitor.daemon.wait_events(3, |e| e["verdict"] == "allowed");
    assert_eq!(seen.len(), 3, "{seen:#?}");
    assert!(monitor.daemon.stop(), "{}", monitor.daemon.stderr_text());
    let log_dir = monitor.daemon.log_dir.clone();

    // Suggest, and check the suggestion with the real parser and compiler.
    let out = policy_cmd(&["suggest"], &log_dir);
    assert!(out.status.success(), "suggest: {}", text(&out.stderr));
    let suggested = text(&out.stdout);
    assert!(
        text(&out.stderr).contains("suggest: 3 connections"),
        "{}",
        text(&out.stderr)
    );
    let p = ollama_egress::policy::Policy::from_toml_str(&suggested, "suggested")
        .unwrap_or_else(|e| panic!("{e}\n{suggested}"));
    let cidrs: Vec<String> = p.allow.cidrs.iter().map(ToString::to_string).collect();
    assert_eq!(
        cidrs,
        [
            "127.0.0.0/8",
            "::1/128",
            "198.51.100.0/24",
            "2001:db8::1/128"
        ],
        "{suggested}"
    );
    assert_eq!(p.default, ollama_egress::policy::Action::Deny);
    assert!(
        suggested.contains(
            "\"198.51.100.0/24\", # 2 addresses, 2 connections, egress-probe, ports 5353 8080,"
        ),
        "{suggested}"
    );
    let file = write_policy(monitor.tmp.path(), &suggested);
    let check = Command::new(daemon_bin())
        .args(["policy", "check"])
        .arg(&file)
        .output()
        .expect("policy check");
    assert!(check.status.success(), "check: {}", text(&check.stderr));
    assert!(text(&check.stdout).contains("policy OK"));

    // Replaying the suggestion changes nothing that was allowed.
    let same = policy_cmd(&["replay", &file.display().to_string()], &log_dir);
    assert_eq!(same.status.code(), Some(0), "{}", text(&same.stdout));
    assert!(
        text(&same.stdout).contains("3 connections judged: 3 unchanged, 0 would be blocked"),
        "{}",
        text(&same.stdout)
    );

    // A stricter policy: exactly the two destinations outside it would be blocked.
    let strict = monitor.tmp.path().join("strict.toml");
    std::fs::write(
        &strict,
        "default = \"deny\"\n[allow]\ncidrs = [\"198.51.100.10/32\"]\n",
    )
    .expect("write strict policy");
    let strict_arg = strict.display().to_string();
    let r = policy_cmd(&["replay", &strict_arg, "--json"], &log_dir);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r.stderr));
    let report: Value = serde_json::from_slice(&r.stdout).expect("replay JSON");
    let blocked: BTreeSet<(String, u64, String, String)> = report["would_block"]
        .as_array()
        .expect("would_block")
        .iter()
        .map(|c| {
            (
                c["dst"].as_str().unwrap_or("").to_owned(),
                c["dport"].as_u64().unwrap_or(0),
                c["proto"].as_str().unwrap_or("").to_owned(),
                c["rule"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let want: BTreeSet<(String, u64, String, String)> =
        [("198.51.100.11", 5353, "udp"), ("2001:db8::1", 8080, "tcp")]
            .iter()
            .map(|(d, p, pr)| ((*d).to_owned(), *p, (*pr).to_owned(), "default".to_owned()))
            .collect();
    assert_eq!(blocked, want, "{report:#}");
    assert_eq!(report["would_allow"].as_array().map(Vec::len), Some(0));
    assert_eq!(report["summary"]["unchanged"], 1);
    let r = policy_cmd(&["replay", &strict_arg], &log_dir);
    assert_eq!(r.status.code(), Some(1));
    let out = text(&r.stdout);
    assert!(
        out.starts_with("allowed → blocked:\n  198.51.100.11:5353/udp host -: by default (was default), 1 connection, last ")
            && out.contains("\n  [2001:db8::1]:8080/tcp host -: by default (was default), 1 connection, last "),
        "{out}"
    );
    // An error is status 2, never "nothing would be blocked".
    let missing = policy_cmd(&["replay", "/nonexistent/policy.toml"], &log_dir);
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing.stderr));

    // Malformed lines are counted and skipped; the suggestion is the same.
    let mut f = OpenOptions::new()
        .append(true)
        .open(log_dir.join("events.jsonl"))
        .expect("open log");
    f.write_all(b"not json at all\n{\"ts\":\"2026-11-22T10:00:00Z\",\"verdict\":\n\xff\xfe\n")
        .expect("append garbage");
    drop(f);
    let again = policy_cmd(&["suggest"], &log_dir);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stderr).contains("3 malformed lines skipped"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(text(&again.stdout), suggested);
    let replayed = policy_cmd(&["replay", &strict_arg], &log_dir);
    assert_eq!(replayed.status.code(), Some(1));
    assert!(text(&replayed.stderr).contains("3 malformed lines skipped"));

    // Enforce the suggestion: the three still work, a fourth destination is refused.
    let enforce = Scenario::start(ScenarioSpec::new("oe-suge", ADDRS, "--enforce", &suggested));
    let inside = enforce.inside(LISTEN);
    for (proto, dst) in SEEN {
        probe(&with(&inside, &[proto, dst])).assert_ok(dst);
    }
    probe(&with(&inside, &["tcp", "203.0.113.7:8080"])).assert_eperm("a destination never seen");
    let blocked = enforce.daemon.wait_events(1, |e| e["verdict"] == "blocked");
    assert_eq!(blocked.len(), 1, "{blocked:#?}");
    assert_eq!(blocked[0]["dst"], "203.0.113.7");
    assert_eq!(blocked[0]["rule"], "default");
}

#[test]
fn names_the_client_resolved_become_domain_rules_and_its_resolver_an_address() {
    let zone = Zone::new()
        .host("a.cdn.test", &["203.0.113.50"], 300)
        .host("b.cdn.test", &["203.0.113.51"], 300)
        .host("c.cdn.test", &["203.0.113.52"], 300)
        .host("d.cdn.test", &["203.0.113.53"], 300)
        .host("registry.test", &["203.0.113.60"], 300)
        .host("other.test", &["203.0.113.70"], 300);
    let mut monitor = DnsScenario::start(
        "oe-sugn",
        "--monitor",
        "default = \"allow\"\n",
        &[],
        &zone,
        &[],
    );
    for (name, addr) in [
        ("a.cdn.test", "203.0.113.50"),
        ("b.cdn.test", "203.0.113.51"),
        ("c.cdn.test", "203.0.113.52"),
        ("registry.test", "203.0.113.60"),
    ] {
        monitor.resolve(name).assert_ok(name);
        assert_eq!(monitor.event("allowed", addr)["host"], name);
    }
    assert!(
        monitor.s.daemon.stop(),
        "{}",
        monitor.s.daemon.stderr_text()
    );
    let out = policy_cmd(&["suggest"], &monitor.s.daemon.log_dir);
    assert!(out.status.success(), "suggest: {}", text(&out.stderr));
    let suggested = text(&out.stdout);
    drop(monitor);
    let p = ollama_egress::policy::Policy::from_toml_str(&suggested, "suggested")
        .unwrap_or_else(|e| panic!("{e}\n{suggested}"));
    let domains: Vec<String> = p.allow.domains.iter().map(ToString::to_string).collect();
    assert_eq!(domains, ["*.cdn.test", "registry.test"], "{suggested}");
    let cidrs: Vec<String> = p.allow.cidrs.iter().map(ToString::to_string).collect();
    assert_eq!(
        cidrs,
        ["127.0.0.0/8", "::1/128", "198.51.100.53/32"],
        "the resolver the client asked, no address of a name: {suggested}"
    );

    let enforce = DnsScenario::start("oe-sugo", "--enforce", &suggested, &[], &zone, &[]);
    for name in ["a.cdn.test", "c.cdn.test", "registry.test"] {
        enforce.resolve(name).assert_ok(name);
    }
    enforce
        .resolve("d.cdn.test")
        .assert_ok("a fourth sibling: the wildcard covers it");
    enforce
        .resolve("other.test")
        .assert_eperm("a name never seen");
    assert_eq!(enforce.event("blocked", "203.0.113.70")["rule"], "default");
}
