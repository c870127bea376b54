//! [`EventRecord`]: the schema of one line of `events.jsonl`.
//!
//! Field names, their order and the string forms of the enums are a public contract (README,
//! "Querying the log"; the enums are defined in [`crate::model`]): scripts run `jq` over the
//! file. Optional fields are always
//! written, as `null` when unknown.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::model::{Family, Mode, Proto, Verdict};

/// One connection decision, as stored on one line of `events.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// When the decision was made; written as RFC 3339 UTC with microseconds and `Z`
    /// (`2026-11-22T10:00:00.123456Z`). Sub-microsecond precision is dropped on write.
    #[serde(with = "ts_format")]
    pub ts: OffsetDateTime,
    /// What happened to the connection.
    pub verdict: Verdict,
    /// The daemon's mode when it decided.
    pub mode: Mode,
    /// Process id (the kernel's tgid).
    pub pid: u32,
    /// Thread id (the kernel's pid). Lines written before this field existed read as 0.
    #[serde(default)]
    pub tid: u32,
    /// The task's command name (at most 15 bytes, from the kernel).
    pub comm: String,
    /// Path of the executable, `null` when unknown (the process had already exited).
    #[serde(default)]
    pub exe: Option<String>,
    /// User id of the process.
    pub uid: u32,
    /// `"tcp"`, `"udp"`, or the IP protocol number as a string; see [`Proto`].
    pub proto: Proto,
    /// Address family of the destination.
    pub family: Family,
    /// Destination address, written as a string (`"203.0.113.7"`, `"2001:db8::1"`).
    pub dst: IpAddr,
    /// Destination port (0 for protocols without ports).
    pub dport: u16,
    /// ISO 3166 alpha-2 country of `dst`, `null` when the geo database has none.
    pub country: Option<String>,
    /// Autonomous system number of `dst`, `null` when unknown.
    pub asn: Option<u32>,
    /// Organisation of the autonomous system, `null` when unknown.
    pub as_org: Option<String>,
    /// Id of the policy rule that decided, e.g. `deny.countries:CN`, `default`.
    pub rule: String,
}

impl EventRecord {
    /// The destination as `ip:port`, with IPv6 addresses in brackets (`[2001:db8::1]:443`).
    pub fn destination(&self) -> String {
        match self.dst {
            IpAddr::V4(ip) => format!("{ip}:{}", self.dport),
            IpAddr::V6(ip) => format!("[{ip}]:{}", self.dport),
        }
    }
}

/// Serde for [`EventRecord::ts`]: RFC 3339 in UTC with exactly six fractional digits and `Z` on
/// write; any RFC 3339 time on read.
pub(crate) mod ts_format {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _, ser::Error as _};
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    use time::{OffsetDateTime, UtcOffset};

    /// `2026-11-22T10:00:00.123456Z`: fixed width, so the strings sort like the times.
    const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

    /// Formats a time the way the log stores it.
    pub(crate) fn format(ts: OffsetDateTime) -> Result<String, time::error::Format> {
        ts.to_offset(UtcOffset::UTC).format(FORMAT)
    }

    /// Parses any RFC 3339 time.
    pub(crate) fn parse(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
        OffsetDateTime::parse(s, &Rfc3339)
    }

    pub(crate) fn serialize<S: Serializer>(ts: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let text = format(*ts).map_err(S::Error::custom)?;
        s.serialize_str(&text)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        // Borrowed when the JSON string has no escapes, owned otherwise.
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        parse(&text).map_err(|e| D::Error::custom(format_args!("invalid ts {text:?}: {e}")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use time::macros::datetime;

    /// The example event line of the README ("Querying the log"), on one line.
    pub(crate) const DESIGN_EXAMPLE: &str = r#"{"ts":"2026-11-22T10:00:00.123456Z","verdict":"blocked","mode":"enforce","pid":4242,"comm":"ollama","uid":0,"proto":"tcp","family":"ipv4","dst":"203.0.113.7","dport":443,"country":"CN","asn":45102,"as_org":"Alibaba","rule":"deny.countries:CN"}"#;

    /// A record like the design example, at `ts`.
    pub(crate) fn sample(ts: OffsetDateTime) -> EventRecord {
        EventRecord {
            ts,
            verdict: Verdict::Blocked,
            mode: Mode::Enforce,
            pid: 4242,
            tid: 4243,
            comm: "ollama".into(),
            exe: Some("/usr/bin/ollama".into()),
            uid: 0,
            proto: "tcp".into(),
            family: Family::Ipv4,
            dst: "203.0.113.7".parse().unwrap(),
            dport: 443,
            country: Some("CN".into()),
            asn: Some(45102),
            as_org: Some("Alibaba".into()),
            rule: "deny.countries:CN".into(),
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
    }

    #[test]
    fn serialized_field_names_and_order() {
        let line =
            serde_json::to_string(&sample(datetime!(2026-11-22 10:00:00.123456 UTC))).unwrap();
        assert_eq!(
            line,
            r#"{"ts":"2026-11-22T10:00:00.123456Z","verdict":"blocked","mode":"enforce","pid":4242,"tid":4243,"comm":"ollama","exe":"/usr/bin/ollama","uid":0,"proto":"tcp","family":"ipv4","dst":"203.0.113.7","dport":443,"country":"CN","asn":45102,"as_org":"Alibaba","rule":"deny.countries:CN"}"#
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
}
