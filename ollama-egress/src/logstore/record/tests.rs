//! Tests of `record`.

#![allow(clippy::unwrap_used)]

use super::*;
use time::macros::datetime;

/// The example event line of the README ("Querying the log"), on one line.
pub(crate) const DESIGN_EXAMPLE: &str = r#"{"ts":"2026-11-22T10:00:00.123456Z","verdict":"blocked","mode":"enforce","direction":"outbound","pid":4242,"comm":"ollama","uid":0,"proto":"tcp","family":"ipv4","dst":"203.0.113.7","dport":443,"host":"dd20bb891979d25aebc8bec07b2b3bbc.r2.cloudflarestorage.com","country":"CN","asn":45102,"as_org":"Alibaba","rule":"deny.countries:CN","container":null}"#;

/// The design example of an earlier version (no `direction`, `host`, `container`): old lines
/// keep reading.
pub(crate) const OLD_EXAMPLE: &str = r#"{"ts":"2026-11-22T10:00:00.123456Z","verdict":"blocked","mode":"enforce","pid":4242,"comm":"ollama","uid":0,"proto":"tcp","family":"ipv4","dst":"203.0.113.7","dport":443,"country":"CN","asn":45102,"as_org":"Alibaba","rule":"deny.countries:CN"}"#;

/// A record like the design example, at `ts`.
pub(crate) fn sample(ts: OffsetDateTime) -> EventRecord {
    EventRecord {
        ts,
        verdict: Verdict::Blocked,
        mode: Mode::Enforce,
        direction: crate::model::Direction::Outbound,
        pid: 4242,
        tid: 4243,
        comm: "ollama".into(),
        exe: Some("/usr/bin/ollama".into()),
        uid: 0,
        gid: 0,
        proto: "tcp".into(),
        family: Family::Ipv4,
        dst: "203.0.113.7".parse().unwrap(),
        dport: 443,
        host: None,
        country: Some("CN".into()),
        asn: Some(45102),
        as_org: Some("Alibaba".into()),
        rule: "deny.countries:CN".into(),
        container: None,
        hook: None,
        via: None,
        src: None,
        sport: None,
    }
}

#[test]
fn design_example_parses() {
    let r: EventRecord = serde_json::from_str(DESIGN_EXAMPLE).unwrap();
    assert_eq!(r.ts, datetime!(2026-11-22 10:00:00.123456 UTC));
    assert_eq!(r.verdict, Verdict::Blocked);
    assert_eq!(r.mode, Mode::Enforce);
    assert_eq!((r.pid, r.tid, r.uid), (4242, 0, 0));
    assert_eq!(r.exe, None);
    assert_eq!(r.family, Family::Ipv4);
    assert_eq!(r.destination(), "203.0.113.7:443");
    assert_eq!(r.asn, Some(45102));
    assert_eq!(r.rule, "deny.countries:CN");
    assert_eq!(r.direction, crate::model::Direction::Outbound);
    assert_eq!(
        r.host.as_deref(),
        Some("dd20bb891979d25aebc8bec07b2b3bbc.r2.cloudflarestorage.com")
    );
    assert_eq!(r.container, None);
}

#[test]
fn lines_of_an_earlier_version_parse() {
    let r: EventRecord = serde_json::from_str(OLD_EXAMPLE).unwrap();
    assert_eq!(r.direction, crate::model::Direction::Outbound);
    assert_eq!(
        (r.host, r.container, r.hook, r.via, r.gid),
        (None, None, None, None, 0)
    );
}

#[test]
fn serialized_field_names_and_order() {
    let line = serde_json::to_string(&sample(datetime!(2026-11-22 10:00:00.123456 UTC))).unwrap();
    assert_eq!(
        line,
        r#"{"ts":"2026-11-22T10:00:00.123456Z","verdict":"blocked","mode":"enforce","direction":"outbound","pid":4242,"tid":4243,"comm":"ollama","exe":"/usr/bin/ollama","uid":0,"gid":0,"proto":"tcp","family":"ipv4","dst":"203.0.113.7","dport":443,"host":null,"country":"CN","asn":45102,"as_org":"Alibaba","rule":"deny.countries:CN","container":null,"hook":null,"via":null,"src":null,"sport":null}"#
    );
    // Every key of the design example appears, in the same relative order.
    let design: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(DESIGN_EXAMPLE).unwrap();
    let ours: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&line).unwrap();
    let ours_keys: Vec<&String> = ours.keys().filter(|k| design.contains_key(*k)).collect();
    assert_eq!(ours_keys, design.keys().collect::<Vec<_>>());
}

#[test]
fn nulls_are_written_and_round_trip() {
    let mut r = sample(datetime!(2026-01-02 03:04:05.000007 +02:00));
    r.exe = None;
    r.country = None;
    r.asn = None;
    r.as_org = None;
    r.dst = "2001:db8::1".parse().unwrap();
    r.family = Family::Ipv6;
    r.verdict = Verdict::WouldBlock;
    r.mode = Mode::Monitor;
    let line = serde_json::to_string(&r).unwrap();
    assert!(
        line.contains(r#""ts":"2026-01-02T01:04:05.000007Z""#),
        "{line}"
    );
    assert!(line.contains(r#""exe":null"#), "{line}");
    assert!(
        line.contains(r#""country":null,"asn":null,"as_org":null"#),
        "{line}"
    );
    assert!(
        line.contains(r#""verdict":"would_block","mode":"monitor""#),
        "{line}"
    );
    assert!(line.contains(r#""dst":"2001:db8::1""#), "{line}");
    let back: EventRecord = serde_json::from_str(&line).unwrap();
    assert_eq!(back, r);
    assert_eq!(back.destination(), "[2001:db8::1]:443");
}

#[test]
fn bad_ts_is_an_error() {
    let line = DESIGN_EXAMPLE.replace("2026-11-22T10:00:00.123456Z", "yesterday");
    let err = serde_json::from_str::<EventRecord>(&line)
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid ts \"yesterday\""), "{err}");
}

#[test]
fn the_fixed_timestamp_writer_matches_the_format() {
    use time::{Duration, UtcOffset};
    let by_format = |t: OffsetDateTime| t.to_offset(UtcOffset::UTC).format(ts_format::FORMAT);
    // Edges of the digits, a leap day, a non-UTC offset, and a walk over 400 years in steps
    // that visit every month, hour and sub-second digit.
    let mut times = vec![
        datetime!(1970-01-01 00:00:00 UTC),
        datetime!(0000-01-01 00:00:00 UTC),
        datetime!(9999-12-31 23:59:59.999_999_999 UTC),
        datetime!(2024-02-29 12:34:56.000_001 UTC),
        datetime!(2026-11-22 10:00:00.123_456_789 +05:30),
        datetime!(2026-11-22 01:00:00 -07:00),
    ];
    let mut t = datetime!(1800-01-01 00:00:00 UTC);
    while t.year() < 2200 {
        times.push(t);
        t += Duration::seconds(3_700_001) + Duration::nanoseconds(123_457_089);
    }
    for t in times {
        let mut buf = [0; 27];
        let fixed = ts_format::write_fixed(t, &mut buf).map(|()| ts_format::text(&buf).to_owned());
        assert_eq!(fixed, by_format(t).ok(), "{t}");
        assert_eq!(ts_format::format(t).ok(), by_format(t).ok(), "{t}");
    }
    // Outside years 0..=9999 the format decides, as before.
    for t in [
        datetime!(-0001-06-01 00:00:00 UTC),
        datetime!(-9999-01-01 00:00:00 UTC),
    ] {
        let mut buf = [0; 27];
        assert_eq!(ts_format::write_fixed(t, &mut buf), None, "{t}");
        assert_eq!(ts_format::format(t).ok(), by_format(t).ok(), "{t}");
    }
}
