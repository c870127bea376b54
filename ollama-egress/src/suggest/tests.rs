//! Tests of `suggest`: aggregation, the TOML written and its round trip through the parser.

#![allow(clippy::unwrap_used)]

use std::io::Write as _;

use time::macros::datetime;

use super::*;
use crate::logstore::sample;
use crate::model::{Direction, Verdict};
use crate::policy::{Policy, compile};

const T0: OffsetDateTime = datetime!(2026-11-22 10:00:00 UTC);

/// An outbound record to `dst` with `host`, `verdict`, `secs` after T0.
pub(super) fn rec(dst: &str, host: Option<&str>, verdict: Verdict, secs: i64) -> EventRecord {
    let mut r = sample(T0 + time::Duration::seconds(secs));
    r.verdict = verdict;
    r.dst = dst.parse().unwrap();
    r.host = host.map(str::to_owned);
    r.asn = None;
    r.as_org = None;
    r.rule = "default".into();
    r
}

fn line(r: &EventRecord) -> Vec<u8> {
    serde_json::to_vec(r).unwrap()
}

fn aggregate(records: &[EventRecord]) -> Aggregate {
    let mut a = Aggregate::new(false);
    for r in records {
        a.add(r, &line(r));
    }
    a
}

fn policy_of(a: &Aggregate) -> (String, Option<String>) {
    let opts = SuggestOptions {
        wildcard_siblings: WILDCARD_SIBLINGS,
        ..SuggestOptions::default()
    };
    write_policy(a, &mut (), &opts, "test")
}

#[test]
fn aggregation_counts_names_addresses_and_ranges_and_leaves_out_blocked_and_guards() {
    let mut guard = rec("::", None, Verdict::Blocked, 9);
    guard.hook = Some(crate::model::Hook::DeviceOpen);
    let mut routing = rec("2001:db8::9", None, Verdict::WouldBlock, 9);
    routing.rule = "ipv6-routing-header".into();
    let mut mapped = rec("::ffff:198.51.100.7", None, Verdict::Allowed, 4);
    mapped.comm = "curl".into();
    mapped.dport = 80;
    let a = aggregate(&[
        rec(
            "203.0.113.1",
            Some("Registry.Ollama.AI."),
            Verdict::WouldBlock,
            1,
        ),
        rec(
            "203.0.113.2",
            Some("registry.ollama.ai"),
            Verdict::Allowed,
            3,
        ),
        rec("198.51.100.7", None, Verdict::WouldBlock, 2),
        mapped,
        rec("10.9.8.7", None, Verdict::Allowed, 5),
        rec("127.0.0.1", None, Verdict::Allowed, 6),
        rec("203.0.113.9", None, Verdict::Blocked, 7),
        guard,
        routing,
    ]);
    assert_eq!(a.records, 6);
    assert_eq!(a.skipped.blocked, 2, "the blocked one and the device guard");
    assert_eq!(a.skipped.guards, 1);
    let reg = &a.names["registry.ollama.ai"];
    assert_eq!(reg.connections, 2);
    assert_eq!(
        (reg.first, reg.last),
        (
            T0 + time::Duration::seconds(1),
            T0 + time::Duration::seconds(3)
        )
    );
    assert_eq!(
        a.outbound.addrs.len(),
        1,
        "the mapped form counts as IPv4: {a:?}"
    );
    let one = &a.outbound.addrs[&"198.51.100.7".parse::<IpAddr>().unwrap()].tally;
    assert_eq!(one.connections, 2);
    assert_eq!(one.comms.iter().collect::<Vec<_>>(), ["curl", "ollama"]);
    assert_eq!(one.ports.iter().collect::<Vec<_>>(), [&80, &443]);
    let ranges: Vec<String> = a.outbound.ranges.keys().map(ToString::to_string).collect();
    assert_eq!(ranges, ["10.0.0.0/8", "127.0.0.0/8"]);
    assert_eq!(a.inbound_records, 0);
    let all = aggregate(&[rec("203.0.113.9", None, Verdict::Blocked, 7)]);
    assert_eq!(all.records, 0);
    let mut with_blocked = Aggregate::new(true);
    let r = rec("203.0.113.9", None, Verdict::Blocked, 7);
    with_blocked.add(&r, &line(&r));
    assert_eq!(with_blocked.records, 1);
}

use std::net::IpAddr;

#[test]
fn tallies_keep_a_bounded_list_of_processes_and_ports() {
    let mut records = Vec::new();
    for i in 0..20u16 {
        let mut r = rec("198.51.100.7", None, Verdict::Allowed, i64::from(i));
        r.comm = format!("p{i:02}");
        r.dport = 1000 + i;
        records.push(r);
    }
    let a = aggregate(&records);
    let t = &a.outbound.addrs[&"198.51.100.7".parse::<IpAddr>().unwrap()].tally;
    assert_eq!(t.connections, 20);
    assert_eq!(t.comms.len(), TALLY_LIST_MAX);
    assert!(t.more_comms && t.more_ports);
}

#[test]
fn the_policy_written_parses_and_allows_every_logged_connection() {
    let records = [
        rec(
            "203.0.113.1",
            Some("registry.ollama.ai"),
            Verdict::WouldBlock,
            1,
        ),
        rec(
            "203.0.113.20",
            Some("a.r2.cloudflarestorage.com"),
            Verdict::WouldBlock,
            2,
        ),
        rec(
            "203.0.113.21",
            Some("b.r2.cloudflarestorage.com"),
            Verdict::WouldBlock,
            3,
        ),
        rec(
            "203.0.113.22",
            Some("c.r2.cloudflarestorage.com"),
            Verdict::WouldBlock,
            4,
        ),
        rec("198.51.100.7", None, Verdict::WouldBlock, 5),
        rec("198.51.100.200", None, Verdict::WouldBlock, 6),
        rec("192.0.2.9", None, Verdict::Allowed, 7),
        rec("2001:db8:1:2::5", None, Verdict::WouldBlock, 8),
        rec("192.168.1.4", None, Verdict::Allowed, 9),
    ];
    let (text, inbound) = policy_of(&aggregate(&records));
    assert_eq!(inbound, None);
    let p = Policy::from_toml_str(&text, "suggested").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(p.default, crate::policy::Action::Deny);
    let cidrs: Vec<String> = p.allow.cidrs.iter().map(ToString::to_string).collect();
    assert_eq!(
        cidrs,
        [
            "127.0.0.0/8",
            "::1/128",
            "192.168.0.0/16",
            "192.0.2.9/32",
            "198.51.100.0/24",
            "2001:db8:1:2::5/128"
        ],
        "{text}"
    );
    let domains: Vec<String> = p.allow.domains.iter().map(ToString::to_string).collect();
    assert_eq!(
        domains,
        ["*.r2.cloudflarestorage.com", "registry.ollama.ai"]
    );
    let compiled = compile(&p, None).unwrap();
    for r in &records {
        assert!(
            matches!(
                judge(&compiled, r),
                ReplayVerdict::Policy { allow: true, .. }
            ),
            "{r:?} not allowed by\n{text}"
        );
    }
    let other = rec("203.0.113.99", None, Verdict::Allowed, 1);
    assert!(matches!(
        judge(&compiled, &other),
        ReplayVerdict::Policy { allow: false, .. }
    ));
    // Every entry has its comment: connections, processes, ports, first and last seen.
    assert!(
        text.contains(
            "\"198.51.100.0/24\", # 2 addresses, 2 connections, ollama, port 443, \
             2026-11-22T10:00:05Z .. 2026-11-22T10:00:06Z"
        ),
        "{text}"
    );
    assert!(text.contains("\"*.r2.cloudflarestorage.com\", # 3 names, 3 connections"));
}

#[test]
fn an_empty_log_allows_loopback_only() {
    let (text, _) = policy_of(&aggregate(&[]));
    let p = Policy::from_toml_str(&text, "suggested").unwrap();
    assert_eq!(p.allow.cidrs.len(), 2, "{text}");
    assert!(p.allow.domains.is_empty() && p.deny.is_empty());
    assert!(text.contains("0 connections (no connections)"), "{text}");
}

#[test]
fn comments_cannot_break_out_of_the_file() {
    let mut r = rec("198.51.100.7", None, Verdict::Allowed, 1);
    r.comm = "x\n[deny]\ncidrs = [\"0.0.0.0/0\"]\u{202e}".into();
    let (text, _) = policy_of(&aggregate(&[r]));
    let p = Policy::from_toml_str(&text, "suggested").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(p.deny.is_empty(), "{text}");
    assert!(text.contains("x?[deny]?cidrs"), "{text}");
    assert!(!text.contains('\u{202e}'));
    let opts = SuggestOptions::default();
    let (text, _) = write_policy(
        &aggregate(&[]),
        &mut (),
        &opts,
        "/tmp/x\ndefault = \"allow\"",
    );
    let p = Policy::from_toml_str(&text, "suggested").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(p.default, crate::policy::Action::Deny, "{text}");
}

#[test]
fn an_invalid_policy_text_is_refused_by_the_parser_the_round_trip_uses() {
    // What the round trip guards against: a policy the writer could get wrong.
    let (text, _) = policy_of(&aggregate(&[rec(
        "198.51.100.7",
        None,
        Verdict::Allowed,
        1,
    )]));
    let broken = text.replace("\"198.51.100.7/32\"", "\"198.51.100.7/24\"");
    assert!(
        Policy::from_toml_str(&broken, "x").is_err(),
        "host bits set"
    );
    let dup = text.replace("\"198.51.100.7/32\"", "\"127.0.0.0/8\"");
    assert!(Policy::from_toml_str(&dup, "x").is_err(), "a duplicate");
}

fn inbound_line(src: &str, secs: i64) -> (EventRecord, Vec<u8>) {
    let mut r = rec("192.0.2.2", None, Verdict::WouldBlock, secs);
    r.direction = Direction::Inbound;
    r.dport = 11434;
    let mut v: serde_json::Value = serde_json::to_value(&r).unwrap();
    v["src"] = src.into();
    v["sport"] = 40000.into();
    (r, serde_json::to_vec(&v).unwrap())
}

#[test]
fn inbound_sources_get_an_inbound_section_only_when_the_log_has_inbound_events() {
    let mut a = Aggregate::new(false);
    let out = rec("198.51.100.7", None, Verdict::Allowed, 1);
    a.add(&out, &line(&out));
    assert_eq!(policy_of(&a).1, None);
    for (i, src) in ["198.51.100.50", "198.51.100.51", "203.0.113.8"]
        .iter()
        .enumerate()
    {
        let (r, raw) = inbound_line(src, i as i64);
        a.add(&r, &raw);
    }
    // A line without `src` is counted, not guessed.
    let (r, _) = inbound_line("203.0.113.8", 9);
    a.add(&r, &line(&r));
    assert_eq!(a.skipped.inbound_without_src, 1);
    assert_eq!(a.inbound_records, 4);
    let (text, inbound) = policy_of(&a);
    let inbound = inbound.unwrap();
    assert!(text.ends_with(&inbound));
    assert!(inbound.contains("[inbound]\ndefault = \"deny\"\n\n[inbound.allow]\ncidrs = [\n"));
    assert!(
        inbound.contains("\"198.51.100.0/24\", # 2 addresses"),
        "{inbound}"
    );
    assert!(
        inbound.contains("\"203.0.113.8/32\", # 1 connection"),
        "{inbound}"
    );
    assert!(
        inbound.contains("\"127.0.0.0/8\", # loopback: always allowed"),
        "{inbound}"
    );
    // The whole suggestion parses, and its inbound section is the policy's.
    let policy = Policy::from_toml_str(&text, "x").unwrap();
    let section = policy.inbound.expect("an [inbound] section");
    assert_eq!(section.default, crate::model::Action::Deny);
    assert_eq!(section.allow.cidrs.len(), 4, "{:?}", section.allow.cidrs);
}

#[test]
fn suggest_reads_the_log_counts_malformed_lines_and_checks_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(dir.path().join("events.jsonl")).unwrap();
    for r in [
        rec("198.51.100.7", None, Verdict::Allowed, 1),
        rec(
            "203.0.113.1",
            Some("registry.ollama.ai"),
            Verdict::WouldBlock,
            100,
        ),
    ] {
        f.write_all(&line(&r)).unwrap();
        f.write_all(b"\n").unwrap();
    }
    f.write_all(b"not json\n{\"ts\":\"x\"}\n").unwrap();
    drop(f);
    let opts = SuggestOptions {
        wildcard_siblings: WILDCARD_SIBLINGS,
        ..SuggestOptions::default()
    };
    let s = suggest(dir.path(), &opts).unwrap();
    assert_eq!(s.stats.malformed, 2);
    assert_eq!(s.aggregate.records, 2);
    assert!(s.toml.contains("\"198.51.100.7/32\""));
    assert!(s.toml.contains("\"registry.ollama.ai\""));
    let since = SuggestOptions {
        since: Some(T0 + time::Duration::seconds(50)),
        ..opts
    };
    let s = suggest(dir.path(), &since).unwrap();
    assert_eq!(s.aggregate.records, 1);
    assert!(!s.toml.contains("198.51.100.7"), "{}", s.toml);
    let missing = suggest(&dir.path().join("nope"), &opts).unwrap_err();
    assert!(missing.to_string().contains("does not exist"), "{missing}");
}
