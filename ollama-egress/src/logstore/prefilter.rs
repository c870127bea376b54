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
#[allow(clippy::unwrap_used)]
mod tests {
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
}
