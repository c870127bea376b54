//! Tests of `prefilter`.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::logstore::EventRecord;
use crate::logstore::record::tests::{DESIGN_EXAMPLE, sample};
use crate::model::Verdict;
use time::macros::datetime;

#[test]
fn raw_values() {
    let l = r#"{"comm" : "dport", "dport"  :  443 ,"country":null,"rule":"a\"b","x":"y"}"#;
    assert_eq!(raw_value(l, "dport"), Some(Raw::Other("443")));
    assert_eq!(raw_value(l, "comm"), Some(Raw::Str("dport")));
    assert_eq!(raw_value(l, "country"), Some(Raw::Null));
    assert_eq!(raw_value(l, "rule"), Some(Raw::Unknown));
    assert_eq!(raw_value(l, "verdict"), None);
    assert_eq!(
        raw_value(DESIGN_EXAMPLE, "ts"),
        Some(Raw::Str("2026-11-22T10:00:00.123456Z"))
    );
    assert!(is_log_ts("2026-11-22T10:00:00.123456Z"));
    assert!(!is_log_ts("2026-11-22T10:00:00.123456+00:00"));
}

/// The prefilter never rejects a line the full filter accepts, whatever the formatting.
#[test]
fn sound_against_the_full_filter() {
    let base = sample(datetime!(2026-11-22 10:00:00.123456 UTC));
    let mut records = vec![base.clone()];
    let mut r = base.clone();
    r.verdict = Verdict::Allowed;
    r.country = None;
    r.dport = 53;
    r.comm = "a\"b".into();
    r.dst = "::ffff:203.0.113.9".parse().unwrap();
    records.push(r);
    let filters = [
        Filter {
            verdict: Some(Verdict::Blocked),
            ..Filter::default()
        },
        Filter {
            port: Some(443),
            ..Filter::default()
        },
        Filter {
            port: Some(53),
            ..Filter::default()
        },
        Filter {
            comm: Some("a\"b".into()),
            ..Filter::default()
        },
        Filter {
            country: Some("cn".into()),
            ..Filter::default()
        },
        Filter {
            rule: Some("deny.*".into()),
            ..Filter::default()
        },
        Filter {
            dst: Some("203.0.113.0/24".parse().unwrap()),
            ..Filter::default()
        },
        Filter {
            since: Some(datetime!(2026-11-22 10:00:00.123456 UTC)),
            ..Filter::default()
        },
        Filter {
            since: Some(datetime!(2026-11-22 10:00:00.1234561 UTC)),
            ..Filter::default()
        },
        Filter {
            until: Some(datetime!(2026-11-22 10:00:00.123456 UTC)),
            ..Filter::default()
        },
        Filter {
            until: Some(datetime!(2026-11-22 10:00:00.1234559 UTC)),
            ..Filter::default()
        },
    ];
    for rec in &records {
        let compact = serde_json::to_string(rec).unwrap();
        let pretty = serde_json::to_string_pretty(rec).unwrap();
        for line in [&compact, &pretty] {
            let parsed: EventRecord = serde_json::from_str(line).unwrap();
            for f in &filters {
                if f.matches(&parsed) {
                    assert!(Prefilter::new(f).may_match(line), "{f:?} on {line}");
                }
            }
        }
    }
}

#[test]
fn rejects_what_it_can() {
    let line = DESIGN_EXAMPLE;
    let reject = |f: Filter| !Prefilter::new(&f).may_match(line);
    assert!(reject(Filter {
        verdict: Some(Verdict::Allowed),
        ..Filter::default()
    }));
    assert!(reject(Filter {
        port: Some(44),
        ..Filter::default()
    }));
    assert!(reject(Filter {
        comm: Some("curl".into()),
        ..Filter::default()
    }));
    assert!(reject(Filter {
        country: Some("US".into()),
        ..Filter::default()
    }));
    assert!(reject(Filter {
        rule: Some("allow.*".into()),
        ..Filter::default()
    }));
    assert!(reject(Filter {
        dst: Some("10.0.0.0/8".parse().unwrap()),
        ..Filter::default()
    }));
    assert!(reject(Filter {
        since: Some(datetime!(2026-11-22 10:00:01 UTC)),
        ..Filter::default()
    }));
    assert!(reject(Filter {
        until: Some(datetime!(2026-11-22 09:00:00 UTC)),
        ..Filter::default()
    }));
    assert!(!reject(Filter {
        verdict: Some(Verdict::Blocked),
        port: Some(443),
        ..Filter::default()
    }));
}
