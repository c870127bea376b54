//! Text from data (a process's `comm`, a database's organisation names, a registry's version
//! strings) on its way to a terminal.
//!
//! A process chooses its own `comm`, and databases and registries are written by others:
//! their text may hold terminal controls (C0 such as ESC, DEL, C1 such as CSI U+009B) that
//! rewrite the screen, and bidirectional overrides that display text in another order than it
//! is stored. [`printable`] is the one function every human-readable output uses;
//! [`escape_json`] keeps JSON output valid while writing the same characters as `\uXXXX`
//! (serde_json escapes C0 controls only).

use std::borrow::Cow;

/// Whether `c` must not reach a terminal as it is: controls (C0, DEL, C1), bidirectional
/// marks, embeddings, overrides and isolates, and the Unicode line and paragraph separators.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// Whether every byte is printable ASCII (space to `~`), so that no character is
/// [unsafe](is_unsafe): a byte scan, far cheaper than decoding characters, and what nearly every
/// text is (the event log writer checks each line with it).
pub fn is_printable_ascii(bytes: &[u8]) -> bool {
    every_byte(bytes, |b| matches!(b, b' '..=b'~'))
}

/// Whether `ok` holds for every byte: whole chunks without an early exit inside, which the
/// compiler turns into vector compares (for a cheap `ok`).
pub(crate) fn every_byte(bytes: &[u8], ok: impl Fn(u8) -> bool + Copy) -> bool {
    bytes
        .chunks(32)
        .all(|chunk| chunk.iter().fold(true, |all, &b| all & ok(b)))
}

/// `s` with every [unsafe](is_unsafe) character replaced by `?`; borrowed when there is none.
pub fn printable(s: &str) -> Cow<'_, str> {
    if is_printable_ascii(s.as_bytes()) || !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| if is_unsafe(c) { '?' } else { c })
            .collect(),
    )
}

/// `json` (serde_json output) with every [unsafe](is_unsafe) character written as `\uXXXX`.
///
/// Outside strings JSON text is ASCII, so every such character stands inside a string, where
/// `\uXXXX` is the same character: the value is unchanged and the text stays valid JSON. All
/// of them are in the Basic Multilingual Plane, so one escape each suffices.
pub fn escape_json(json: &str) -> Cow<'_, str> {
    if is_printable_ascii(json.as_bytes()) || !json.chars().any(is_unsafe) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if is_unsafe(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests;
