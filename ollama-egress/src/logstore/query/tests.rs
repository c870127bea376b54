//! Tests of [`Filter`] and [`query`].

#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Write as _;
use std::time::Instant;

use time::macros::datetime;

use super::*;
use crate::logstore::Filter;
use crate::logstore::parse_since;
use crate::logstore::record::tests::sample;
use crate::model::{Mode, Verdict};
use ipnet::IpNet;
use time::OffsetDateTime;

const T0: OffsetDateTime = datetime!(2026-11-22 10:00:00 UTC);

/// Record `i`: one second after the previous, varied fields.
fn rec(i: u32) -> EventRecord {
    let mut r = sample(T0 + time::Duration::seconds(i64::from(i)));
    r.pid = i;
    match i % 4 {
        0 => {}
        1 => {
            r.verdict = Verdict::Allowed;
            r.rule = "allow.cidrs:10.0.0.0/8".into();
            r.dst = "10.1.2.3".parse().unwrap_or(r.dst);
            r.country = None;
            r.asn = None;
            r.as_org = None;
            r.dport = 11434;
        }
        2 => {
            r.verdict = Verdict::WouldBlock;
            r.mode = Mode::Monitor;
            r.comm = "curl".into();
            r.dst = "::ffff:198.51.100.7".parse().unwrap_or(r.dst);
            r.country = Some("us".into());
            r.rule = "default".into();
        }
        _ => {
            r.dst = "2001:db8::5".parse().unwrap_or(r.dst);
            r.family = crate::model::Family::Ipv6;
            r.rule = "deny.asns:45102".into();
            r.dport = 80;
        }
    }
    r
}

fn lines(records: impl IntoIterator<Item = EventRecord>) -> String {
    records
        .into_iter()
        .map(|r| serde_json::to_string(&r).unwrap() + "\n")
        .collect()
}

/// Writes records 0..30: `.2` holds 0..10, `.1` 10..20, the active file 20..30.
fn three_files() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("events.jsonl.2"), lines((0..10).map(rec))).unwrap();
    fs::write(tmp.path().join("events.jsonl.1"), lines((10..20).map(rec))).unwrap();
    fs::write(tmp.path().join("events.jsonl"), lines((20..30).map(rec))).unwrap();
    tmp
}

fn pids(dir: &Path, f: &Filter) -> Vec<u32> {
    let mut out = Vec::new();
    query(dir, f, |r| {
        out.push(r.pid);
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn reads_rotated_files_oldest_first() {
    let tmp = three_files();
    assert_eq!(
        pids(tmp.path(), &Filter::default()),
        (0..30).collect::<Vec<_>>()
    );
    let files = log_files(tmp.path()).unwrap();
    let names: Vec<_> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap())
        .collect();
    assert_eq!(names, ["events.jsonl.2", "events.jsonl.1", "events.jsonl"]);
}

#[test]
fn each_filter() {
    let tmp = three_files();
    let d = tmp.path();
    let f = Filter::default;
    let every = |start: u32| (start..30).step_by(4).collect::<Vec<_>>();
    assert_eq!(
        pids(
            d,
            &Filter {
                verdict: Some(Verdict::Allowed),
                ..f()
            }
        ),
        every(1)
    );
    assert_eq!(
        pids(
            d,
            &Filter {
                verdict: Some(Verdict::WouldBlock),
                ..f()
            }
        ),
        every(2)
    );
    assert_eq!(
        pids(
            d,
            &Filter {
                comm: Some("curl".into()),
                ..f()
            }
        ),
        every(2)
    );
    assert!(
        pids(
            d,
            &Filter {
                comm: Some("cur".into()),
                ..f()
            }
        )
        .is_empty()
    );
    assert_eq!(
        pids(
            d,
            &Filter {
                port: Some(11434),
                ..f()
            }
        ),
        every(1)
    );
    assert_eq!(
        pids(
            d,
            &Filter {
                country: Some("US".into()),
                ..f()
            }
        ),
        every(2)
    );
    let cn: Vec<u32> = (0..30).filter(|i| i % 4 == 0 || i % 4 == 3).collect();
    assert_eq!(
        pids(
            d,
            &Filter {
                country: Some("cn".into()),
                ..f()
            }
        ),
        cn
    );
    assert_eq!(
        pids(
            d,
            &Filter {
                rule: Some("deny.asns:45102".into()),
                ..f()
            }
        ),
        every(3)
    );
    assert!(
        pids(
            d,
            &Filter {
                rule: Some("deny.".into()),
                ..f()
            }
        )
        .is_empty()
    );
    assert_eq!(
        pids(
            d,
            &Filter {
                rule: Some("deny.*".into()),
                ..f()
            }
        ),
        cn
    );
    assert_eq!(
        pids(
            d,
            &Filter {
                rule: Some("*".into()),
                ..f()
            }
        )
        .len(),
        30
    );
    // IPv4-mapped destinations match IPv4 networks.
    let net = |s: &str| Some(s.parse::<IpNet>().unwrap());
    assert_eq!(
        pids(
            d,
            &Filter {
                dst: net("198.51.100.0/24"),
                ..f()
            }
        ),
        every(2)
    );
    assert_eq!(
        pids(
            d,
            &Filter {
                dst: net("10.0.0.0/8"),
                ..f()
            }
        ),
        every(1)
    );
    assert_eq!(
        pids(
            d,
            &Filter {
                dst: net("2001:db8::/32"),
                ..f()
            }
        ),
        every(3)
    );
    assert_eq!(
        pids(
            d,
            &Filter {
                dst: net("203.0.113.7/32"),
                ..f()
            }
        ),
        every(0)
    );
    assert_eq!(
        pids(
            d,
            &Filter {
                dst: net("::ffff:203.0.113.0/120"),
                ..f()
            }
        ),
        every(0)
    );
    // Time bounds are inclusive.
    let at = |i: i64| Some(T0 + time::Duration::seconds(i));
    assert_eq!(
        pids(
            d,
            &Filter {
                since: at(25),
                ..f()
            }
        ),
        (25..30).collect::<Vec<_>>()
    );
    assert_eq!(
        pids(
            d,
            &Filter {
                until: at(3),
                ..f()
            }
        ),
        (0..4).collect::<Vec<_>>()
    );
    assert_eq!(
        pids(
            d,
            &Filter {
                since: at(8),
                until: at(12),
                ..f()
            }
        ),
        (8..13).collect::<Vec<_>>()
    );
    // Criteria combine.
    let both = Filter {
        verdict: Some(Verdict::Blocked),
        port: Some(80),
        since: at(20),
        ..f()
    };
    assert_eq!(
        pids(d, &both),
        every(3)
            .into_iter()
            .filter(|&i| i >= 20)
            .collect::<Vec<_>>()
    );
}

#[test]
fn since_from_a_duration() {
    let tmp = three_files();
    let now = T0 + time::Duration::seconds(30);
    let since = parse_since("5s", now).unwrap();
    assert_eq!(
        pids(
            tmp.path(),
            &Filter {
                since: Some(since),
                ..Filter::default()
            }
        ),
        (25..30).collect::<Vec<_>>()
    );
}

#[test]
fn limit_keeps_the_newest_in_order() {
    let tmp = three_files();
    let f = |limit, verdict| Filter {
        limit: Some(limit),
        verdict,
        ..Filter::default()
    };
    assert_eq!(pids(tmp.path(), &f(3, None)), vec![27, 28, 29]);
    assert_eq!(
        pids(tmp.path(), &f(3, Some(Verdict::Allowed))),
        vec![21, 25, 29]
    );
    assert_eq!(pids(tmp.path(), &f(100, None)).len(), 30);
    assert!(pids(tmp.path(), &f(0, None)).is_empty());
    let mut n = 0;
    let stats = query(tmp.path(), &f(12, None), |_| {
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!((stats.emitted, n, stats.more), (12, 12, true));
    // Reading backwards stops early: the oldest file is not opened.
    assert_eq!(stats.files, 2);
    let stats = query(tmp.path(), &f(30, None), |_| Ok(())).unwrap();
    assert_eq!((stats.emitted, stats.more), (30, false));
}

#[test]
fn malformed_lines_are_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = String::new();
    text += &lines([rec(0)]);
    text += "not json\n\n   \n{\"ts\":\"2026-11-22T10:00:00Z\"}\n";
    text += &"x".repeat(200_000);
    text += "\n";
    text += &lines([rec(1)]);
    text += &serde_json::to_string(&rec(2)).unwrap()[..50]; // cut off by a crash
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(b"\n\xff\xfe{}\n");
    bytes.extend_from_slice(lines([rec(3)]).as_bytes());
    fs::write(tmp.path().join("events.jsonl"), bytes).unwrap();
    let mut got = Vec::new();
    let stats = query(tmp.path(), &Filter::default(), |r| {
        got.push(r.pid);
        Ok(())
    })
    .unwrap();
    assert_eq!(got, vec![0, 1, 3]);
    assert_eq!(stats.malformed, 5, "{stats:?}");
    assert_eq!(
        stats.warning().as_deref(),
        Some("skipped 5 malformed lines")
    );
    // A last line without its newline still counts.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(tmp.path().join("events.jsonl"))
        .unwrap();
    f.write_all(serde_json::to_string(&rec(4)).unwrap().as_bytes())
        .unwrap();
    assert_eq!(pids(tmp.path(), &Filter::default()), vec![0, 1, 3, 4]);
    // Backwards (under a limit) the same lines are skipped and counted.
    let mut got = Vec::new();
    let stats = query(
        tmp.path(),
        &Filter {
            limit: Some(3),
            ..Filter::default()
        },
        |r| {
            got.push(r.pid);
            Ok(())
        },
    )
    .unwrap();
    // (it reads one match past the limit, to tell whether older ones exist)
    assert_eq!((got, stats.malformed), (vec![1, 3, 4], 5));
    assert_eq!(
        pids(
            tmp.path(),
            &Filter {
                limit: Some(9),
                ..Filter::default()
            }
        ),
        vec![0, 1, 3, 4]
    );
}

#[test]
fn missing_log_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = query(&tmp.path().join("nope"), &Filter::default(), |_| Ok(())).unwrap_err();
    assert!(matches!(err, LogError::NoLogDir { .. }));
    assert!(err.to_string().contains("ollama-egress run"), "{err}");
    let err = query(tmp.path(), &Filter::default(), |_| Ok(())).unwrap_err();
    assert!(matches!(err, LogError::NoLog { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("events.jsonl") && msg.contains("ollama-egress run"),
        "{msg}"
    );
    // Only rotated files left: still readable.
    fs::write(tmp.path().join("events.jsonl.1"), lines([rec(7)])).unwrap();
    assert_eq!(pids(tmp.path(), &Filter::default()), vec![7]);
}

#[test]
fn sink_error_stops_the_query() {
    let tmp = three_files();
    let mut n = 0;
    let err = query(tmp.path(), &Filter::default(), |_| {
        n += 1;
        if n == 2 {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        } else {
            Ok(())
        }
    })
    .unwrap_err();
    assert!(matches!(err, LogError::Output { .. }));
    assert_eq!(n, 2);
}

/// Writes a log of about `mb` MiB (a realistic mix: mostly allowed, some blocked) and returns
/// its directory.
fn big_log(mb: usize) -> (tempfile::TempDir, u32) {
    let tmp = tempfile::tempdir().unwrap();
    let file = fs::File::create(tmp.path().join("events.jsonl")).unwrap();
    let mut w = io::BufWriter::new(file);
    let mut written = 0;
    let mut i = 0u32;
    while written < mb * 1024 * 1024 {
        let mut r = rec(i % 4);
        r.ts = T0 + time::Duration::milliseconds(i64::from(i));
        r.pid = i;
        // 1 in 50 blocked, the rest allowed.
        r.verdict = if i.is_multiple_of(50) {
            Verdict::Blocked
        } else {
            Verdict::Allowed
        };
        r.dport = if i.is_multiple_of(50) { 443 } else { 11434 };
        let line = serde_json::to_string(&r).unwrap();
        w.write_all(line.as_bytes()).unwrap();
        w.write_all(b"\n").unwrap();
        written += line.len() + 1;
        i += 1;
    }
    w.flush().unwrap();
    (tmp, i)
}

/// Query throughput on a ~200 MiB log. Not a unit test:
/// `cargo test --release -p ollama-egress --lib logstore::query::tests::bench_query -- --ignored --nocapture`
#[test]
#[ignore = "benchmark: writes ~200 MiB"]
fn bench_query() {
    let (tmp, n) = big_log(200);
    let size =
        fs::metadata(tmp.path().join("events.jsonl")).unwrap().len() as f64 / (1024.0 * 1024.0);
    let cases: [(&str, Filter); 8] = [
        ("no filter (parse every line)", Filter::default()),
        (
            "--verdict allowed (98% match)",
            Filter {
                verdict: Some(Verdict::Allowed),
                ..Filter::default()
            },
        ),
        (
            "--dst 198.51.100.0/24 (25%)",
            Filter {
                dst: Some("198.51.100.0/24".parse().unwrap()),
                ..Filter::default()
            },
        ),
        (
            "--verdict blocked",
            Filter {
                verdict: Some(Verdict::Blocked),
                ..Filter::default()
            },
        ),
        (
            "--port 443",
            Filter {
                port: Some(443),
                ..Filter::default()
            },
        ),
        (
            "--since (last 1%)",
            Filter {
                since: Some(T0 + time::Duration::milliseconds(i64::from(n / 100 * 99))),
                ..Filter::default()
            },
        ),
        (
            "--comm none (no match)",
            Filter {
                comm: Some("none".into()),
                ..Filter::default()
            },
        ),
        (
            "--limit 10 (reads backwards)",
            Filter {
                limit: Some(10),
                ..Filter::default()
            },
        ),
    ];
    for (name, f) in cases {
        let start = Instant::now();
        let mut n = 0u64;
        let stats = query(tmp.path(), &f, |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
        let secs = start.elapsed().as_secs_f64();
        let read = stats.bytes as f64 / (1024.0 * 1024.0);
        eprintln!(
            "{name:32} {read:6.1} of {size:.0} MiB in {secs:.3}s = {:4.0} MiB/s ({} lines, {} parsed, {} emitted)",
            read / secs,
            stats.lines,
            stats.lines - stats.prefiltered,
            n
        );
    }
}

#[test]
fn an_overlong_unterminated_last_line_is_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = lines([rec(0)]);
    text += &"y".repeat(70_000);
    fs::write(tmp.path().join("events.jsonl"), text).unwrap();
    let mut got = Vec::new();
    let stats = query(tmp.path(), &Filter::default(), |r| {
        got.push(r.pid);
        Ok(())
    })
    .unwrap();
    assert_eq!(got, vec![0]);
    assert_eq!((stats.lines, stats.malformed), (2, 1), "{stats:?}");
}

#[test]
fn the_direction_filter_keeps_one_direction() {
    let mut inbound = sample(T0);
    inbound.direction = crate::model::Direction::Inbound;
    inbound.src = Some(inbound.dst);
    inbound.sport = Some(40000);
    let outbound = sample(T0);
    let only = |d| Filter {
        direction: Some(d),
        ..Filter::default()
    };
    assert!(only(crate::model::Direction::Inbound).matches(&inbound));
    assert!(!only(crate::model::Direction::Inbound).matches(&outbound));
    assert!(only(crate::model::Direction::Outbound).matches(&outbound));
    assert!(!only(crate::model::Direction::Outbound).matches(&inbound));
    assert!(Filter::default().matches(&inbound));
}
