//! [`EventRecord`] as JSON, written field by field: the same bytes as its `Serialize`
//! implementation through `serde_json` (a test compares both over every enum value, every
//! optional field present and absent, and strings that need escaping), at a fraction of the
//! cost. Going through serde, every key and string value went through serde_json's escaping
//! loop and its writer calls, the largest cost of an event in the daemon.
//!
//! `serde_json` stays the reference: field order, `null` for an absent value, its escapes.

use std::io::Write as _;
use std::net::IpAddr;

use super::{EventRecord, ts_format};

/// What the strings of a written line held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Text {
    /// Only printable ASCII: the whole line is (the rest is the encoder's own ASCII), so it
    /// holds no terminal control.
    PrintableAscii,
    /// Something else (an escape, a control, any non-ASCII character): the caller checks the
    /// line for terminal controls.
    Other,
}

/// Appends `record` as one JSON object (no newline) to `out`, as `serde_json::to_writer`
/// would. Returns `None`, leaving `out` untouched, for a timestamp the fixed-width writer does
/// not cover (years outside 0–9999): the caller serializes that record through serde.
pub(crate) fn write(record: &EventRecord, out: &mut Vec<u8>) -> Option<Text> {
    let mut ts = [0; ts_format::LEN];
    let ts = ts_format::write_fixed(record.ts, &mut ts)?;
    let mut printable = true;
    let text = &mut printable;
    out.extend_from_slice(b"{\"ts\":\"");
    out.extend_from_slice(ts.as_bytes());
    out.push(b'"');
    key(out, "verdict");
    name(out, record.verdict.as_str());
    key(out, "mode");
    name(out, record.mode.as_str());
    key(out, "direction");
    name(out, record.direction.as_str());
    key(out, "pid");
    number(out, record.pid);
    key(out, "tid");
    number(out, record.tid);
    key(out, "comm");
    string(out, &record.comm, text);
    key(out, "exe");
    optional(out, record.exe.as_deref(), |out, s| string(out, s, text));
    key(out, "uid");
    number(out, record.uid);
    key(out, "gid");
    number(out, record.gid);
    key(out, "proto");
    string(out, &record.proto.as_str(), text);
    key(out, "family");
    name(out, record.family.as_str());
    key(out, "dst");
    address(out, record.dst);
    key(out, "dport");
    number(out, record.dport);
    key(out, "host");
    optional(out, record.host.as_deref(), |out, s| string(out, s, text));
    key(out, "country");
    optional(out, record.country.as_deref(), |out, s| {
        string(out, s, text)
    });
    key(out, "asn");
    optional(out, record.asn, number);
    key(out, "as_org");
    optional(out, record.as_org.as_deref(), |out, s| string(out, s, text));
    key(out, "rule");
    string(out, &record.rule, text);
    key(out, "container");
    optional(out, record.container.as_deref(), |out, s| {
        string(out, s, text)
    });
    key(out, "hook");
    optional(out, record.hook.map(|h| h.as_str()), name);
    key(out, "via");
    optional(out, record.via.map(|v| v.as_str()), name);
    key(out, "src");
    optional(out, record.src, address);
    key(out, "sport");
    optional(out, record.sport, number);
    out.push(b'}');
    Some(if printable {
        Text::PrintableAscii
    } else {
        Text::Other
    })
}

/// `,"name":` after the previous value (the first field, `ts`, writes its own `{"ts":`).
/// `name` is a field name: plain ASCII without quotes or backslashes.
fn key(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// `value`, or `null`.
fn optional<T>(out: &mut Vec<u8>, value: Option<T>, write: impl FnOnce(&mut Vec<u8>, T)) {
    match value {
        Some(value) => write(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

fn number(out: &mut Vec<u8>, value: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// An address in its `Display` form, quoted, as serde writes `IpAddr` for a human-readable
/// format.
fn address(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        // The common case by hand: the formatting machinery cost more than the rest of a line.
        IpAddr::V4(ip) => {
            let mut buf = itoa::Buffer::new();
            let [a, b, c, d] = ip.octets();
            out.push(b'"');
            out.extend_from_slice(buf.format(a).as_bytes());
            for octet in [b, c, d] {
                out.push(b'.');
                out.extend_from_slice(buf.format(octet).as_bytes());
            }
            out.push(b'"');
        }
        // Writing into a Vec cannot fail.
        IpAddr::V6(ip) => {
            let _ = write!(out, "\"{ip}\"");
        }
    }
}

/// Whether `bytes` is printable ASCII without a quote or backslash: nothing JSON escapes and
/// nothing a terminal acts on.
fn plain(bytes: &[u8]) -> bool {
    crate::terminal::every_byte(bytes, |b| {
        (b' '..=b'~').contains(&b) & (b != b'"') & (b != b'\\')
    })
}

/// The string form of a vocabulary value (`crate::model`): plain ASCII without quotes,
/// backslashes or controls, so written without the scan (the tests cover every value).
fn name(out: &mut Vec<u8>, value: &'static str) {
    out.push(b'"');
    out.extend_from_slice(value.as_bytes());
    out.push(b'"');
}

/// A JSON string with serde_json's escapes: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, and
/// `\u00XX` (lower-case hex) for the other control characters; everything else as is. Clears
/// `printable` unless `s` is [`plain`] (then the line is checked for terminal controls as a
/// whole afterwards).
fn string(out: &mut Vec<u8>, s: &str, printable: &mut bool) {
    out.push(b'"');
    let bytes = s.as_bytes();
    if plain(bytes) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    *printable = false;
    let mut plain = 0;
    let mut unicode = *b"\\u0000";
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..0x20 => {
                unicode[4] = HEX[usize::from(b >> 4)];
                unicode[5] = HEX[usize::from(b & 0xf)];
                &unicode
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain..i]);
        out.extend_from_slice(escape);
        plain = i + 1;
    }
    out.extend_from_slice(&bytes[plain..]);
    out.push(b'"');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests;
