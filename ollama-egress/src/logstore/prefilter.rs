//! A cheap test on a raw log line that proves, for most lines a selective filter rejects, that
//! the line cannot match, so it need not be parsed.
//!
//! The test is sound for any valid JSON object, not only for lines this crate wrote: it finds a
//! key as `"key"` followed by optional whitespace and `:` (a string value is never followed by
//! `:`), reads the raw value, and gives up ("may match") whenever the raw text is not
//! conclusive: escapes in a string, an unexpected time format, a missing key. A line it passes
//! is parsed and checked by [`Filter::matches`](super::Filter::matches).

use std::net::IpAddr;

use super::filter::{Filter, net_contains};
use super::record::ts_format;

/// The raw form of one value in a JSON line.
#[derive(Debug, PartialEq, Eq)]
enum Raw<'a> {
    /// A string without escapes: its exact contents.
    Str(&'a str),
    /// `null`.
    Null,
    /// A number, `true`/`false`, or anything else up to the next `,`, `}` or whitespace.
    Other(&'a str),
    /// A string with escapes, or a value this scanner does not follow.
    Unknown,
}

/// The compiled raw tests of a [`Filter`].
#[derive(Debug, Clone, Default)]
pub(super) struct Prefilter {
    verdict: Option<&'static str>,
    port: Option<String>,
    comm: Option<String>,
    country: Option<String>,
    rule: Option<String>,
    rule_prefix: bool,
    dst: Option<ipnet::IpNet>,
    /// `since` and `until` in the log's fixed-width format, truncated to microseconds.
    since: Option<String>,
    until: Option<String>,
}

/// Length of a timestamp in the log's own format: `2026-11-22T10:00:00.123456Z`.
const TS_LEN: usize = 27;

impl Prefilter {
    /// Compiles the raw tests for `filter`.
    pub(super) fn new(filter: &Filter) -> Prefilter {
        let ts = |t: Option<time::OffsetDateTime>| {
            t.and_then(|t| ts_format::format(t).ok())
                .filter(|s| is_log_ts(s))
        };
        let (rule, rule_prefix) = match filter.rule.as_deref() {
            Some(r) => match r.strip_suffix('*') {
                Some(prefix) => (Some(prefix.to_owned()), true),
                None => (Some(r.to_owned()), false),
            },
            None => (None, false),
        };
        Prefilter {
            verdict: filter.verdict.map(|v| v.as_str()),
            port: filter.port.map(|p| p.to_string()),
            comm: filter.comm.clone(),
            country: filter.country.clone(),
            rule,
            rule_prefix,
            dst: filter.dst,
            since: ts(filter.since),
            until: ts(filter.until),
        }
    }

    /// False only when `line` cannot hold a record the filter matches.
    pub(super) fn may_match(&self, line: &str) -> bool {
        if let Some(want) = self.verdict
            && let Some(Raw::Str(v)) = raw_value(line, "verdict")
            && v != want
        {
            return false;
        }
        if let Some(since) = &self.since
            && let Some(Raw::Str(ts)) = raw_value(line, "ts")
            && is_log_ts(ts)
            && ts < since.as_str()
        {
            return false;
        }
        if let Some(until) = &self.until
            && let Some(Raw::Str(ts)) = raw_value(line, "ts")
            && is_log_ts(ts)
            && ts > until.as_str()
        {
            return false;
        }
        if let Some(want) = &self.comm
            && let Some(Raw::Str(v)) = raw_value(line, "comm")
            && v != want
        {
            return false;
        }
        if let Some(want) = &self.port
            && let Some(Raw::Other(v)) = raw_value(line, "dport")
            && v != want
            && v.bytes().all(|b| b.is_ascii_digit())
        {
            return false;
        }
        if let Some(net) = &self.dst
            && let Some(Raw::Str(v)) = raw_value(line, "dst")
            && let Ok(ip) = v.parse::<IpAddr>()
            && !net_contains(net, ip)
        {
            return false;
        }
        if let Some(want) = &self.country {
            match raw_value(line, "country") {
                Some(Raw::Null) => return false,
                Some(Raw::Str(v)) if !v.eq_ignore_ascii_case(want) => return false,
                _ => {}
            }
        }
        if let Some(want) = &self.rule
            && let Some(Raw::Str(v)) = raw_value(line, "rule")
            && !(if self.rule_prefix {
                v.starts_with(want.as_str())
            } else {
                v == want
            })
        {
            return false;
        }
        true
    }
}

/// True for exactly `dddd-dd-ddTdd:dd:dd.ddddddZ`, the form that sorts like the time.
fn is_log_ts(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == TS_LEN
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            26 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// The raw value of the first occurrence of `"key":` in `line`, if any.
fn raw_value<'a>(line: &'a str, key: &str) -> Option<Raw<'a>> {
    let bytes = line.as_bytes();
    let mut from = 0;
    while let Some(pos) = find_key(&line[from..], key) {
        let start = from + pos;
        let mut i = start + key.len() + 2;
        from = i;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if bytes.get(i) != Some(&b':') {
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let rest = &line[i..];
        return Some(if let Some(s) = rest.strip_prefix('"') {
            match s.find(['"', '\\']) {
                Some(end) if s.as_bytes()[end] == b'"' => Raw::Str(&s[..end]),
                _ => Raw::Unknown,
            }
        } else {
            let end = rest
                .find(|c: char| c == ',' || c == '}' || c.is_ascii_whitespace())
                .unwrap_or(rest.len());
            match &rest[..end] {
                "null" => Raw::Null,
                "" => Raw::Unknown,
                other => Raw::Other(other),
            }
        });
    }
    None
}

/// Position of `"key"` in `s`.
fn find_key(s: &str, key: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut from = 0;
    while let Some(pos) = s[from..].find(key) {
        let at = from + pos;
        if at > 0 && bytes[at - 1] == b'"' && bytes.get(at + key.len()) == Some(&b'"') {
            return Some(at - 1);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests;
