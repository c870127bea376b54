//! Parsing `--since` and `--until`: durations ("1h30m" ago) and RFC 3339 times.

use time::{Duration, OffsetDateTime};

use super::LogError;
use super::record::ts_format;

/// The forms `--since` accepts, for messages.
pub(crate) const SINCE_FORMS: &str = "a duration meaning that long ago (90s, 15m, 1h, 2d, 1w, \
     1h30m) or an RFC 3339 time (2026-11-22T10:00:00Z, 2026-11-22T12:00:00.5+02:00)";

/// The forms `--until` accepts, for messages.
pub(crate) const UNTIL_FORMS: &str = "an RFC 3339 time (2026-11-22T10:00:00Z, \
     2026-11-22T12:00:00.5+02:00) or a duration meaning that long ago (90s, 15m, 1h, 2d, 1h30m)";

/// Parses a `--since` value: a duration meaning that long before `now` (`90s`, `15m`, `1h`,
/// `2d`, `1w`, `1h30m`; units s, m, h, d, w) or an RFC 3339 time (`2026-11-22T10:00:00Z`).
pub fn parse_since(s: &str, now: OffsetDateTime) -> Result<OffsetDateTime, LogError> {
    parse_time(s, now).ok_or_else(|| LogError::InvalidSince {
        input: s.to_owned(),
    })
}

/// Parses an `--until` value: an RFC 3339 time (`2026-11-22T10:00:00Z`), or, like
/// [`parse_since`], a duration meaning that long before `now`.
pub fn parse_until(s: &str, now: OffsetDateTime) -> Result<OffsetDateTime, LogError> {
    parse_time(s, now).ok_or_else(|| LogError::InvalidUntil {
        input: s.to_owned(),
    })
}

fn parse_time(s: &str, now: OffsetDateTime) -> Option<OffsetDateTime> {
    let s = s.trim();
    if let Some(d) = parse_duration(s) {
        return now.checked_sub(d);
    }
    // RFC 3339 allows a space or lowercase `t`/`z`; accept those too.
    let normalized: String = s
        .char_indices()
        .map(|(i, c)| match c {
            ' ' | 't' if i == 10 => 'T',
            'z' => 'Z',
            c => c,
        })
        .collect();
    ts_format::parse(&normalized).ok()
}

/// `1h30m` → 90 minutes. A sequence of `<digits><unit>` with units s, m, h, d, w; at least one.
fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest.chars().next()?;
        let secs: i64 = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return None,
        };
        rest = &rest[unit.len_utf8()..];
        total = total.checked_add(Duration::seconds(n.checked_mul(secs)?))?;
    }
    Some(total)
}

#[cfg(test)]
mod tests;
