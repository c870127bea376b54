//! [`EventRecord`]: the schema of one line of `events.jsonl`.
//!
//! Field names, their order and the string forms of the enums are a public contract (README,
//! "Querying the log"; the enums are defined in [`crate::model`]): scripts run `jq` over the
//! file. Optional fields are always
//! written, as `null` when unknown.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::model::{Direction, Family, Hook, Mode, Proto, Verdict, Via};

/// One connection decision, as stored on one line of `events.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// When the decision was made; written as RFC 3339 UTC with microseconds and `Z`
    /// (`2026-11-22T10:00:00.123456Z`). Sub-microsecond precision is dropped on write.
    #[serde(with = "ts_format")]
    pub ts: OffsetDateTime,
    /// What happened to the connection.
    pub verdict: Verdict,
    /// The mode of the policy that decided (the kernel reports it).
    pub mode: Mode,
    /// `outbound` (the target connects out) or `inbound`. Lines written before this field
    /// existed read as `outbound`.
    #[serde(default = "outbound")]
    pub direction: Direction,
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
    /// User id of the process (of the socket owner for packets the backstop judged).
    pub uid: u32,
    /// Group id of the task, 0 when the hook does not know it.
    #[serde(default)]
    pub gid: u32,
    /// `"tcp"`, `"udp"`, or the IP protocol number as a string; see [`Proto`].
    pub proto: Proto,
    /// Address family of the destination.
    pub family: Family,
    /// Destination address, written as a string (`"203.0.113.7"`, `"2001:db8::1"`).
    pub dst: IpAddr,
    /// Destination port (0 for protocols without ports).
    pub dport: u16,
    /// The DNS name the target looked up for `dst`, `null` when no answer was seen.
    #[serde(default)]
    pub host: Option<String>,
    /// ISO 3166 alpha-2 country of `dst`, `null` when the geo database has none.
    pub country: Option<String>,
    /// Autonomous system number of `dst`, `null` when unknown.
    pub asn: Option<u32>,
    /// Organisation of the autonomous system, `null` when unknown.
    pub as_org: Option<String>,
    /// Id of the policy rule that decided, e.g. `deny.countries:CN`, `default`.
    pub rule: String,
    /// The container the target runs in, `null` when it is no container.
    #[serde(default)]
    pub container: Option<String>,
    /// The kernel hook that decided (`connect4`, `sendmsg6`, `skb-egress`, ...), `null` in lines
    /// written before this field existed.
    #[serde(default)]
    pub hook: Option<Hook>,
    /// For an IPv6 destination judged as the IPv4 address it embeds (then `dst` is that IPv4
    /// address and `family` is `ipv4`): the form, e.g. `mapped`, `nat64`; `null` otherwise.
    #[serde(default)]
    pub via: Option<Via>,
    /// For an inbound event (`direction: "inbound"`): the source of the connection or datagram,
    /// the address judged (`dst` repeats it, so every reader of `dst`, `--dst` and the geo fields
    /// finds the judged address where it always was); `dport` is then the target's port.
    /// `null` for outbound events.
    #[serde(default)]
    pub src: Option<IpAddr>,
    /// For an inbound event: the source's port; `null` for outbound events.
    #[serde(default)]
    pub sport: Option<u16>,
}

fn outbound() -> Direction {
    Direction::Outbound
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
    pub(crate) const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

    /// Length of the stored form: `2026-11-22T10:00:00.123456Z`.
    pub(crate) const LEN: usize = 27;

    /// Formats a time the way the log stores it.
    pub(crate) fn format(ts: OffsetDateTime) -> Result<String, time::error::Format> {
        let mut buf = [0; LEN];
        match write_fixed(ts, &mut buf) {
            Some(()) => Ok(text(&buf).to_owned()),
            None => ts.to_offset(UtcOffset::UTC).format(FORMAT),
        }
    }

    /// [`FORMAT`] written digit by digit into `buf`, for years 0 to 9999 (`None` for others,
    /// which [`format`] leaves to the `time` formatter): the format machinery cost more per
    /// event than the rest of a line's fields together.
    pub(crate) fn write_fixed(ts: OffsetDateTime, buf: &mut [u8; LEN]) -> Option<()> {
        // The UTC calendar from the Unix time (the instant, whatever the offset), in integer
        // steps: the `time` crate's conversions cost more than the rest of the digits.
        let secs = ts.unix_timestamp();
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let year = u32::try_from(year).ok().filter(|y| *y <= 9999)?;
        let second_of_day = u32::try_from(secs.rem_euclid(86_400)).ok()?;
        let micro = ts.nanosecond() / 1_000;
        *buf = *b"0000-00-00T00:00:00.000000Z";
        digits(&mut buf[0..4], year);
        digits(&mut buf[5..7], month);
        digits(&mut buf[8..10], day);
        digits(&mut buf[11..13], second_of_day / 3_600);
        digits(&mut buf[14..16], second_of_day / 60 % 60);
        digits(&mut buf[17..19], second_of_day % 60);
        digits(&mut buf[20..26], micro);
        Some(())
    }

    /// Year, month (1–12) and day (1–31) of the proleptic Gregorian calendar `days` after
    /// 1970-01-01 (H. Hinnant's `civil_from_days`, exact over the whole `i64` day range used
    /// here).
    fn civil_from_days(days: i64) -> (i64, u32, u32) {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        // Day of the era, 0..=146_096, and year of the era, 0..=399.
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        // Day of the year from March 1st, and the month from March (0 = March).
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        (year, month, day)
    }

    /// What [`write_fixed`] wrote, as text (ASCII digits and separators only).
    pub(crate) fn text(buf: &[u8; LEN]) -> &str {
        std::str::from_utf8(buf).unwrap_or_default()
    }

    /// `value`'s last `out.len()` decimal digits, zero-padded.
    fn digits(out: &mut [u8], mut value: u32) {
        for b in out.iter_mut().rev() {
            *b = b"0123456789"[(value % 10) as usize];
            value /= 10;
        }
    }

    /// Parses any RFC 3339 time.
    pub(crate) fn parse(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
        OffsetDateTime::parse(s, &Rfc3339)
    }

    pub(crate) fn serialize<S: Serializer>(ts: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0; LEN];
        if write_fixed(*ts, &mut buf).is_some() {
            return s.serialize_str(text(&buf));
        }
        let text = format(*ts).map_err(S::Error::custom)?;
        s.serialize_str(&text)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        // Borrowed when the JSON string has no escapes, owned otherwise.
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        parse(&text).map_err(|e| D::Error::custom(format_args!("invalid ts {text:?}: {e}")))
    }
}

pub(crate) mod json;

#[cfg(test)]
pub(crate) mod tests;
