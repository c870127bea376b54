//! Tests of `timespec`.

#![allow(clippy::unwrap_used)]

use super::*;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-11-22 12:00:00 UTC);

#[test]
fn durations() {
    for (s, ago) in [
        ("90s", Duration::seconds(90)),
        ("15m", Duration::minutes(15)),
        ("1h", Duration::hours(1)),
        ("2d", Duration::days(2)),
        ("1w", Duration::weeks(1)),
        ("1h30m", Duration::minutes(90)),
        ("0s", Duration::ZERO),
    ] {
        assert_eq!(parse_since(s, NOW).unwrap(), NOW - ago, "{s}");
    }
}

#[test]
fn rfc3339_times() {
    assert_eq!(
        parse_since("2026-11-22T10:00:00Z", NOW).unwrap(),
        datetime!(2026-11-22 10:00:00 UTC)
    );
    assert_eq!(
        parse_until("2026-11-22T12:00:00.5+02:00", NOW).unwrap(),
        datetime!(2026-11-22 10:00:00.5 UTC)
    );
    assert_eq!(
        parse_since("2026-11-22 10:00:00z", NOW).unwrap(),
        datetime!(2026-11-22 10:00:00 UTC)
    );
    assert_eq!(
        parse_until("30m", NOW).unwrap(),
        NOW - Duration::minutes(30)
    );
}

#[test]
fn bad_inputs_name_themselves_and_the_forms() {
    for bad in [
        "",
        "90",
        "h",
        "1x",
        "1h30",
        "yesterday",
        "2026-11-22",
        "99999999999999999999s",
    ] {
        let err = parse_since(bad, NOW).unwrap_err().to_string();
        assert!(err.contains(&format!("{bad:?}")), "{err}");
        assert!(err.contains("1h30m") && err.contains("RFC 3339"), "{err}");
    }
    let err = parse_until("soon", NOW).unwrap_err().to_string();
    assert!(err.starts_with("invalid --until \"soon\""), "{err}");
}
