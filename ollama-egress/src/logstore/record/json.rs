//! [`EventRecord`] as JSON, written field by field: the same bytes as its `Serialize`
//! implementation through `serde_json` (a test compares both over every enum value, every
//! optional field present and absent, and strings that need escaping), at a fraction of the
//! cost. Going through serde, every key and string value went through serde_json's escaping
//! loop and its writer calls, the largest cost of an event in the daemon.
//!
//! The line is put together in a fixed buffer on the stack ([`LINE_MAX`] bytes), where the
//! position stays in a register and the constant parts become plain stores; a line that does
//! not fit is left to serde. `serde_json` stays the reference: field order, `null` for an
//! absent value, its escapes.

use std::io::Write as _;
use std::net::IpAddr;

use super::{EventRecord, ts_format};

/// The longest line written here; a longer one (a long executable path, a long name with many
/// escapes) is written through serde.
const LINE_MAX: usize = 1024;

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
/// would. Returns `None`, leaving `out` untouched, for a line this writer does not cover: a
/// timestamp outside the years 0–9999, or a line longer than [`LINE_MAX`]. The caller
/// serializes that record through serde.
pub(crate) fn write(record: &EventRecord, out: &mut Vec<u8>) -> Option<Text> {
    let mut line = Line::new();
    line.fields(record)?;
    if line.full {
        return None;
    }
    out.extend_from_slice(&line.buf[..line.len]);
    Some(if line.printable {
        Text::PrintableAscii
    } else {
        Text::Other
    })
}

/// A line being written: what does not fit sets `full` and is dropped.
struct Line {
    buf: [u8; LINE_MAX],
    len: usize,
    /// Something did not fit: the line is incomplete.
    full: bool,
    /// Every string so far was [`plain`].
    printable: bool,
}

impl Line {
    fn new() -> Self {
        Line {
            buf: [0; LINE_MAX],
            len: 0,
            full: false,
            printable: true,
        }
    }

    /// The fields in serde's order; `None` for a timestamp the fixed-width writer does not
    /// cover.
    fn fields(&mut self, r: &EventRecord) -> Option<()> {
        let mut ts = [0; ts_format::LEN];
        ts_format::write_fixed(r.ts, &mut ts)?;
        self.raw(b"{\"ts\":\"");
        self.raw(&ts);
        self.raw(b"\",\"verdict\":");
        self.name(r.verdict.as_str());
        self.raw(b",\"mode\":");
        self.name(r.mode.as_str());
        self.raw(b",\"direction\":");
        self.name(r.direction.as_str());
        self.raw(b",\"pid\":");
        self.number(r.pid);
        self.raw(b",\"tid\":");
        self.number(r.tid);
        self.raw(b",\"comm\":");
        self.string(&r.comm);
        self.raw(b",\"exe\":");
        self.optional(r.exe.as_deref(), Self::string);
        self.raw(b",\"uid\":");
        self.number(r.uid);
        self.raw(b",\"gid\":");
        self.number(r.gid);
        self.raw(b",\"proto\":");
        self.string(&r.proto.as_str());
        self.raw(b",\"family\":");
        self.name(r.family.as_str());
        self.raw(b",\"dst\":");
        self.address(r.dst);
        self.raw(b",\"dport\":");
        self.number(u32::from(r.dport));
        self.raw(b",\"host\":");
        self.optional(r.host.as_deref(), Self::string);
        self.raw(b",\"country\":");
        self.optional(r.country.as_deref(), Self::string);
        self.raw(b",\"asn\":");
        self.optional(r.asn, Self::number);
        self.raw(b",\"as_org\":");
        self.optional(r.as_org.as_deref(), Self::string);
        self.raw(b",\"rule\":");
        self.string(&r.rule);
        self.raw(b",\"container\":");
        self.optional(r.container.as_deref(), Self::string);
        self.raw(b",\"hook\":");
        self.optional(r.hook.map(|h| h.as_str()), Self::name);
        self.raw(b",\"via\":");
        self.optional(r.via.map(|v| v.as_str()), Self::name);
        self.raw(b",\"src\":");
        self.optional(r.src, Self::address);
        self.raw(b",\"sport\":");
        self.optional(r.sport.map(u32::from), Self::number);
        self.raw(b"}");
        Some(())
    }

    /// `bytes` as they are.
    #[inline(always)]
    fn raw(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        match self.buf.get_mut(self.len..end) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.len = end;
            }
            None => self.full = true,
        }
    }

    /// `value`, or `null`.
    #[inline(always)]
    fn optional<T>(&mut self, value: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match value {
            Some(value) => write(self, value),
            None => self.raw(b"null"),
        }
    }

    /// `value` in decimal, written in place.
    #[inline(always)]
    fn number(&mut self, mut value: u32) {
        let digits = value.checked_ilog10().unwrap_or(0) as usize + 1;
        let end = self.len + digits;
        let Some(dst) = self.buf.get_mut(self.len..end) else {
            self.full = true;
            return;
        };
        for b in dst.iter_mut().rev() {
            *b = b'0' + (value % 10) as u8;
            value /= 10;
        }
        self.len = end;
    }

    /// An address in its `Display` form, quoted, as serde writes `IpAddr` for a human-readable
    /// format.
    fn address(&mut self, ip: IpAddr) {
        match ip {
            // The common case by hand: the formatting machinery cost more than the rest of a
            // line.
            IpAddr::V4(ip) => {
                let [a, b, c, d] = ip.octets();
                self.raw(b"\"");
                self.number(u32::from(a));
                for octet in [b, c, d] {
                    self.raw(b".");
                    self.number(u32::from(octet));
                }
                self.raw(b"\"");
            }
            IpAddr::V6(ip) => {
                // The longest form (`ffff:…:255.255.255.255`) has 45 characters.
                let mut text = [0u8; 48];
                let mut cursor = std::io::Cursor::new(&mut text[..]);
                // 48 bytes hold every form.
                let _ = write!(cursor, "{ip}");
                let n = usize::try_from(cursor.position()).unwrap_or(0);
                self.raw(b"\"");
                self.raw(&text[..n]);
                self.raw(b"\"");
            }
        }
    }

    /// The string form of a vocabulary value (`crate::model`): plain ASCII without quotes,
    /// backslashes or controls, so written without the scan (the tests cover every value).
    #[inline(always)]
    fn name(&mut self, value: &'static str) {
        self.raw(b"\"");
        self.raw(value.as_bytes());
        self.raw(b"\"");
    }

    /// A JSON string with serde_json's escapes: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, and
    /// `\u00XX` (lower-case hex) for the other control characters; everything else as is.
    /// Clears `printable` unless `s` is [`plain`] (then the line is checked for terminal
    /// controls as a whole afterwards).
    fn string(&mut self, s: &str) {
        self.raw(b"\"");
        let bytes = s.as_bytes();
        if plain(bytes) {
            self.raw(bytes);
            self.raw(b"\"");
            return;
        }
        self.printable = false;
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
            self.raw(&bytes[plain..i]);
            self.raw(escape);
            plain = i + 1;
        }
        self.raw(&bytes[plain..]);
        self.raw(b"\"");
    }
}

/// Whether `bytes` is printable ASCII without a quote or backslash: nothing JSON escapes and
/// nothing a terminal acts on. Eight bytes at a time (the strings of a line are short, so a
/// per-byte tail would be most of the work): the last word overlaps the one before it.
fn plain(bytes: &[u8]) -> bool {
    if bytes.len() < 8 {
        return bytes.iter().all(|&b| plain_byte(b));
    }
    let mut words = bytes.chunks_exact(8);
    let mut all = true;
    for word in &mut words {
        all &= plain_word(word);
    }
    if !words.remainder().is_empty() {
        all &= plain_word(&bytes[bytes.len() - 8..]);
    }
    all
}

/// [`plain`] for one byte: the reference the word check is tested against.
fn plain_byte(b: u8) -> bool {
    (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\'
}

/// [`plain`] for eight bytes at once: no byte under 0x20, none over 0x7e, no `"`, no `\`.
#[inline(always)]
fn plain_word(word: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let Ok(word) = <[u8; 8]>::try_from(word) else {
        return false;
    };
    let w = u64::from_le_bytes(word);
    // A byte under n sets its high bit in (w - n) & !w (exact for "any byte", n <= 0x80).
    let below = |n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH;
    // A byte equal to b: a zero byte of w ^ b.
    let equal = |b: u8| {
        let x = w ^ (ONES * u64::from(b));
        x.wrapping_sub(ONES) & !x & HIGH
    };
    // Over 0x7e: the high bit of the byte itself or of the byte plus one (a carry only leaves
    // a byte of 0xff, which is caught itself).
    let above = (w.wrapping_add(ONES) | w) & HIGH;
    (below(0x20) | above | equal(b'"') | equal(b'\\')) == 0
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests;
