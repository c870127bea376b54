//! [`EventRecord`]: the schema of one line of `events.jsonl`.
//!
//! Field names, their order and the string forms of the enums are a public contract (see
//! design.md, "Events and the log"): scripts run `jq` over the file. Optional fields are always
//! written, as `null` when unknown.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

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
    /// `"tcp"`, `"udp"`, or the IP protocol number as a string; see [`proto_name`].
    pub proto: String,
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

/// The string stored in [`EventRecord::proto`] for an IP protocol number: `"tcp"` (6),
/// `"udp"` (17), otherwise the number in decimal.
pub fn proto_name(ipproto: u8) -> String {
    match ipproto {
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        n => n.to_string(),
    }
}

/// A string that is not one of an enum's accepted values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {input:?}: expected one of {}", .expected.join(", "))]
pub struct ParseValueError {
    /// What was being parsed (`"verdict"`, `"mode"`, `"family"`).
    pub what: &'static str,
    /// The rejected input.
    pub input: String,
    /// The accepted values.
    pub expected: &'static [&'static str],
}

/// Declares a fieldless enum with a fixed lowercase string form used by serde, `Display`,
/// `as_str()` and `FromStr`.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal, { $($(#[$vmeta:meta])* $variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $s)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Every string form, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($s),+];

            /// The string form, as stored in the log.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $s),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseValueError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok($name::$variant),)+
                    _ => Err(ParseValueError { what: $what, input: s.to_owned(), expected: Self::NAMES }),
                }
            }
        }
    };
}

string_enum!(
    /// What happened to a connection.
    Verdict, "verdict", {
        /// The policy allowed it.
        Allowed => "allowed",
        /// Enforce mode: the policy denied it and the kernel dropped it.
        Blocked => "blocked",
        /// Monitor mode: the policy denies it, but it was let through.
        WouldBlock => "would_block",
    }
);

string_enum!(
    /// The daemon's mode.
    Mode, "mode", {
        /// Record and count, block nothing.
        Monitor => "monitor",
        /// Drop denied traffic in the kernel.
        Enforce => "enforce",
    }
);

string_enum!(
    /// Address family of a destination.
    Family, "family", {
        /// IPv4.
        Ipv4 => "ipv4",
        /// IPv6 (IPv4-mapped destinations are judged as IPv4 but keep this family).
        Ipv6 => "ipv6",
    }
);

impl Family {
    /// The family of an address as it appears on the wire.
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
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

    /// The example line of design.md, "Events and the log", on one line.
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
    fn enums_parse_and_reject() {
        for v in Verdict::ALL {
            assert_eq!(v.as_str().parse::<Verdict>().unwrap(), *v);
        }
        assert_eq!("enforce".parse::<Mode>().unwrap(), Mode::Enforce);
        let err = "block".parse::<Verdict>().unwrap_err().to_string();
        assert_eq!(
            err,
            r#"invalid verdict "block": expected one of allowed, blocked, would_block"#
        );
        let err = "x".parse::<Mode>().unwrap_err().to_string();
        assert!(err.contains("monitor, enforce"), "{err}");
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
    fn proto_names() {
        assert_eq!(proto_name(6), "tcp");
        assert_eq!(proto_name(17), "udp");
        assert_eq!(proto_name(132), "132");
    }
}
