//! Tests of `replay`: verdicts of fixture records, the report, the exit rule.

#![allow(clippy::unwrap_used)]

use std::io::Write as _;

use super::*;
use crate::model::Verdict as V;
use crate::policy::{Policy, compile};
use crate::suggest::tests::rec;

fn compiled(text: &str) -> CompiledPolicy {
    compile(&Policy::from_toml_str(text, "t.toml").unwrap(), None).unwrap()
}

const STRICT: &str = r#"
default = "deny"
[allow]
cidrs = ["198.51.100.0/24"]
domains = ["*.r2.cloudflarestorage.com"]
[deny]
domains = ["evil.r2.cloudflarestorage.com"]
"#;

#[test]
fn verdicts_follow_the_domain_rule_of_the_host_first_then_the_addresses() {
    let c = compiled(STRICT);
    let pol = |allow: bool, rule: &str| Verdict::Policy {
        allow,
        rule: rule.into(),
    };
    let r = |dst, host| rec(dst, host, V::Allowed, 0);
    assert_eq!(
        judge(&c, &r("198.51.100.7", None)),
        pol(true, "allow.cidrs:198.51.100.0/24")
    );
    assert_eq!(judge(&c, &r("203.0.113.1", None)), pol(false, "default"));
    assert_eq!(
        judge(&c, &r("203.0.113.1", Some("X.R2.cloudflarestorage.com."))),
        pol(true, "allow.domains:*.r2.cloudflarestorage.com")
    );
    assert_eq!(
        judge(
            &c,
            &r("198.51.100.7", Some("evil.r2.cloudflarestorage.com"))
        ),
        pol(false, "deny.domains:evil.r2.cloudflarestorage.com"),
        "a denied name wins over an allowed address"
    );
    assert_eq!(
        judge(&c, &r("198.51.100.7", Some("ollama.com"))),
        pol(true, "allow.cidrs:198.51.100.0/24"),
        "no domain rule: the address decides"
    );
    assert_eq!(
        judge(&c, &r("::ffff:198.51.100.7", None)),
        pol(true, "allow.cidrs:198.51.100.0/24")
    );
    let mut guard = r("2001:db8::1", None);
    guard.rule = "ipv6-routing-header".into();
    assert_eq!(judge(&c, &guard), Verdict::Guard);
    let mut no_policy = r("203.0.113.1", None);
    no_policy.rule = "no-policy".into();
    assert_eq!(judge(&c, &no_policy), pol(false, "default"));
    let mut inbound = r("198.51.100.7", None);
    inbound.direction = crate::model::Direction::Inbound;
    assert_eq!(judge(&c, &inbound), Verdict::Inbound);
}

#[test]
fn the_report_names_each_changed_destination_once_with_counts() {
    let c = compiled(STRICT);
    let mut report = ReplayReport::default();
    let mut acc = Accumulator::default();
    let mut records = vec![
        rec("198.51.100.7", None, V::Allowed, 1),
        rec("203.0.113.1", None, V::Allowed, 2),
        rec("203.0.113.1", None, V::Allowed, 5),
        rec(
            "203.0.113.2",
            Some("a.r2.cloudflarestorage.com"),
            V::WouldBlock,
            3,
        ),
        rec("203.0.113.3", None, V::WouldBlock, 4),
    ];
    records[1].rule = "allow.cidrs:203.0.113.0/24".into();
    records[2].rule = "default".into();
    let mut guard = rec("2001:db8::1", None, V::Blocked, 6);
    guard.rule = "ipv6-routing-header".into();
    records.push(guard);
    for r in &records {
        report.add(&c, r, &mut acc);
    }
    report.finish(acc);
    assert!(report.blocks_something());
    assert_eq!(report.would_block.len(), 1);
    let b = &report.would_block[0];
    assert_eq!(b.dst.to_string(), "203.0.113.1");
    assert_eq!(
        (b.count, b.rule.as_str(), b.was_rule.as_str()),
        (2, "default", "default")
    );
    assert_eq!(b.last_seen, records[2].ts);
    assert_eq!(b.first_seen, records[1].ts);
    assert_eq!(report.would_allow.len(), 1);
    assert_eq!(
        report.would_allow[0].host.as_deref(),
        Some("a.r2.cloudflarestorage.com")
    );
    let m = &report.summary;
    assert_eq!(
        (
            m.judged,
            m.unchanged,
            m.would_block,
            m.would_allow,
            m.guards
        ),
        (5, 2, 2, 1, 1)
    );
    let text = report.text();
    assert!(text.starts_with("allowed → blocked:\n  203.0.113.1:443/tcp host -: by default (was default), 2 connections, last 2026-11-22T10:00:05Z\n"), "{text}");
    assert!(text.contains("blocked → allowed:\n  203.0.113.2:443/tcp host a.r2.cloudflarestorage.com: by allow.domains:*.r2.cloudflarestorage.com"), "{text}");
    assert!(text.ends_with("5 connections judged: 2 unchanged, 2 would be blocked (1 destination), 1 would be allowed (1 destination); 1 decided by kernel guards, unchanged\n"), "{text}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["would_block"][0]["dst"], "203.0.113.1");
    assert_eq!(json["would_block"][0]["last_seen"], "2026-11-22T10:00:05Z");
    assert_eq!(json["summary"]["would_allow"], 1);
}

#[test]
fn nothing_allowed_blocked_is_a_pass_and_the_log_is_streamed_with_malformed_lines_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(dir.path().join("events.jsonl")).unwrap();
    for r in [
        rec("198.51.100.7", None, V::Allowed, 1),
        rec("203.0.113.1", None, V::WouldBlock, 2),
    ] {
        serde_json::to_writer(&mut f, &r).unwrap();
        f.write_all(b"\n").unwrap();
    }
    f.write_all(b"{\"broken\n\xff\xfe\n").unwrap();
    drop(f);
    let (report, stats) = replay(dir.path(), &compiled(STRICT), None).unwrap();
    assert!(!report.blocks_something(), "{report:?}");
    assert_eq!(report.summary.unchanged, 2);
    assert_eq!((stats.malformed, report.summary.malformed), (2, 2));
    let (report, _) = replay(dir.path(), &compiled("default = \"deny\"\n"), None).unwrap();
    assert!(report.blocks_something());
    let late = rec("0.0.0.0", None, V::Allowed, 2).ts;
    let (report, _) = replay(dir.path(), &compiled("default = \"deny\"\n"), Some(late)).unwrap();
    assert!(
        !report.blocks_something(),
        "--since leaves the allowed one out"
    );
}
