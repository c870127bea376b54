//! Tests of `json`: the hand-written encoder against serde_json, byte for byte.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::logstore::record::tests::sample;
use crate::model::{Direction, Family, Hook, Mode, Proto, Verdict, Via};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

/// Both encoders' output for `record`, the hand-written one after a prefix that must stay.
#[track_caller]
fn assert_same(record: &EventRecord) {
    let expected = serde_json::to_vec(record).unwrap();
    let mut out = b"previous line\n".to_vec();
    let text = write(record, &mut out).unwrap_or_else(|| panic!("the encoder declined {record:?}"));
    let (prefix, written) = out.split_at(14);
    // Only a line of printable ASCII may skip the terminal-control check.
    assert!(
        text == Text::Other || crate::terminal::is_printable_ascii(written),
        "a line that needs the terminal-control check was said to be printable: {}",
        String::from_utf8_lossy(written)
    );
    assert_eq!(
        prefix, b"previous line\n",
        "the encoder changed what was before it"
    );
    assert_eq!(
        String::from_utf8_lossy(written),
        String::from_utf8_lossy(&expected),
        "the hand-written line differs from serde_json's for {record:?}"
    );
}

/// Every field that can be absent, present.
fn full(ts: OffsetDateTime) -> EventRecord {
    EventRecord {
        host: Some("ollama.com".into()),
        container: Some("docker:0123456789ab".into()),
        hook: Some(Hook::ALL[0]),
        via: Some(Via::ALL[0]),
        src: Some("2001:db8::7".parse().unwrap()),
        sport: Some(51515),
        ..sample(ts)
    }
}

/// Every field that can be absent, absent.
fn empty(ts: OffsetDateTime) -> EventRecord {
    EventRecord {
        exe: None,
        country: None,
        asn: None,
        as_org: None,
        ..sample(ts)
    }
}

const TS: OffsetDateTime = datetime!(2026-11-22 10:00:00.123456789 UTC);

#[test]
fn a_line_of_printable_ascii_strings_skips_the_terminal_check_and_others_do_not() {
    let mut out = Vec::new();
    assert_eq!(write(&full(TS), &mut out), Some(Text::PrintableAscii));
    for other in [
        "tab\t",
        "quote\"",
        "back\\slash",
        "ümlaut",
        "\u{202e}",
        "\u{7f}",
    ] {
        let record = EventRecord {
            as_org: Some(other.into()),
            ..full(TS)
        };
        assert_eq!(
            write(&record, &mut out),
            Some(Text::Other),
            "{other:?} was taken for printable ASCII"
        );
    }
}

#[test]
fn the_sample_and_records_with_every_optional_field_present_and_absent_match_serde() {
    assert_same(&sample(TS));
    assert_same(&full(TS));
    assert_same(&empty(TS));
}

#[test]
fn every_enum_value_matches_serde() {
    for &verdict in Verdict::ALL {
        assert_same(&EventRecord {
            verdict,
            ..full(TS)
        });
    }
    for &mode in Mode::ALL {
        assert_same(&EventRecord { mode, ..full(TS) });
    }
    for &direction in Direction::ALL {
        assert_same(&EventRecord {
            direction,
            ..full(TS)
        });
    }
    for &family in Family::ALL {
        assert_same(&EventRecord { family, ..full(TS) });
    }
    for &hook in Hook::ALL {
        assert_same(&EventRecord {
            hook: Some(hook),
            ..full(TS)
        });
    }
    for &via in Via::ALL {
        assert_same(&EventRecord {
            via: Some(via),
            ..full(TS)
        });
    }
    for n in 0..=u8::MAX {
        assert_same(&EventRecord {
            proto: Proto::Ip(n),
            ..full(TS)
        });
    }
    for other in ["", "sctp", "a\"b\\c\n", "\u{1b}[31m"] {
        assert_same(&EventRecord {
            proto: Proto::Other(other.into()),
            ..full(TS)
        });
    }
}

#[test]
fn numbers_and_addresses_at_their_edges_match_serde() {
    for n in [0, 1, 9, 10, 99_999, u32::MAX] {
        assert_same(&EventRecord {
            pid: n,
            tid: n,
            uid: n,
            gid: n,
            asn: Some(n),
            ..full(TS)
        });
    }
    for port in [0, 1, 443, u16::MAX] {
        assert_same(&EventRecord {
            dport: port,
            sport: Some(port),
            ..full(TS)
        });
    }
    for ip in [
        "0.0.0.0",
        "255.255.255.255",
        "203.0.113.7",
        "::",
        "::1",
        "::ffff:192.0.2.1",
        "2001:db8::1",
        "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        assert_same(&EventRecord {
            dst: ip,
            src: Some(ip),
            ..full(TS)
        });
    }
}

#[test]
fn strings_that_need_escapes_match_serde() {
    let mut texts: Vec<String> = (0..=0x7f_u8)
        .map(|b| format!("a{}b", char::from(b)))
        .collect();
    texts.extend(
        [
            "",
            "\"",
            "\\",
            "\"\\\"",
            "\u{0}\u{1f}\u{7f}",
            "ends with a newline\n",
            "\ttab\r\n\u{8}\u{c}",
            "ümlaut, 日本語, \u{1F600}",
            "\u{2028}\u{2029}\u{202e}\u{feff}",
            "\u{1b}[2J\u{1b}]0;title\u{7}",
        ]
        .map(String::from),
    );
    for text in texts {
        assert_same(&EventRecord {
            comm: text.clone(),
            exe: Some(text.clone()),
            host: Some(text.clone()),
            country: Some(text.clone()),
            as_org: Some(text.clone()),
            rule: text.clone(),
            container: Some(text),
            ..full(TS)
        });
    }
}

#[test]
fn timestamps_match_serde_and_others_are_left_to_it() {
    let step = Duration::seconds(86_400 * 397 + 3_723) + Duration::nanoseconds(123_457_891);
    let mut ts = Some(datetime!(0000-01-01 00:00:00 UTC));
    let mut seen = 0;
    while let Some(at) = ts {
        assert_same(&sample(at));
        ts = at.checked_add(step);
        seen += 1;
    }
    assert!(seen > 9_000, "only {seen} instants were compared");
    assert_same(&sample(datetime!(2026-11-22 12:00:00.5 +02:00)));
    assert_same(&sample(datetime!(9999-12-31 23:59:59.999999999 UTC)));
    for outside in [
        datetime!(-0001-12-31 23:59:59 UTC),
        datetime!(-9999-01-01 00:00:00 UTC),
    ] {
        let mut out = b"kept".to_vec();
        assert!(
            write(&sample(outside), &mut out).is_none(),
            "a year outside 0-9999 was written"
        );
        assert_eq!(out, b"kept", "a declined record left bytes behind");
    }
}

#[test]
fn the_word_scan_finds_every_byte_that_is_not_plain_at_every_place() {
    let mut checked = 0;
    for len in 1..=24 {
        for at in 0..len {
            for b in 0..=u8::MAX {
                let mut bytes = vec![b'a'; len];
                bytes[at] = b;
                assert_eq!(
                    plain(&bytes),
                    plain_byte(b),
                    "byte {b:#04x} at {at} of {len} bytes"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 70_000);
    assert!(plain(b""));
    assert!(plain(
        b"the quick brown fox jumps over the lazy dog, 0123456789 ~!"
    ));
}

#[test]
fn a_line_longer_than_the_buffer_is_left_to_serde_whole() {
    let long = "/opt/".to_string() + &"a".repeat(LINE_MAX);
    let record = EventRecord {
        exe: Some(long),
        ..full(TS)
    };
    let mut out = b"kept".to_vec();
    assert_eq!(
        write(&record, &mut out),
        None,
        "a line over the buffer was written"
    );
    assert_eq!(out, b"kept", "a declined line left bytes behind");
    let mut line = Vec::new();
    crate::logstore::writer::encode_line(&record, &mut line).unwrap();
    let mut expected = serde_json::to_vec(&record).unwrap();
    expected.push(b'\n');
    assert_eq!(line, expected, "the long line is not serde's");
    // One that just fits is written here.
    let fits = EventRecord {
        exe: Some("a".repeat(LINE_MAX - serde_json::to_vec(&full(TS)).unwrap().len() + 15)),
        ..full(TS)
    };
    assert_eq!(serde_json::to_vec(&fits).unwrap().len(), LINE_MAX);
    assert_same(&fits);
}
