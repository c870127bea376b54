use super::*;

/// One of each kind of unsafe character.
pub(crate) const NASTY: &str =
    "a\u{1b}[2J\u{7}b\u{7f}c\u{85}\u{9b}31md\u{202e}e\u{2066}f\u{200f}g\u{2028}h\n";

#[test]
fn printable_replaces_every_control_and_bidi_character() {
    assert_eq!(printable(NASTY), "a?[2J?b?c??31md?e?f?g?h?");
    assert!(matches!(
        printable("ollama 東京 ü"),
        Cow::Borrowed("ollama 東京 ü")
    ));
}

#[test]
fn escaped_json_is_valid_and_holds_the_same_value() {
    let json = serde_json::to_string(&serde_json::json!({ "comm": NASTY })).unwrap_or_default();
    // serde_json leaves C1 and bidi characters raw.
    assert!(
        json.contains('\u{9b}') && json.contains('\u{202e}'),
        "{json}"
    );
    let escaped = escape_json(&json);
    assert!(!escaped.chars().any(is_unsafe), "{escaped}");
    assert!(
        escaped.contains("\\u009b") && escaped.contains("\\u202e"),
        "{escaped}"
    );
    let back: serde_json::Value = serde_json::from_str(&escaped).unwrap_or_default();
    assert_eq!(back["comm"], NASTY);
}

#[test]
fn the_ascii_scan_agrees_with_the_character_check() {
    // Every single byte, and every character up to U+0800 plus the unsafe ones above it: the
    // byte scan may only say "printable" where no character is unsafe.
    for b in 0u8..=0x7f {
        let s = char::from(b).to_string();
        assert_eq!(
            is_printable_ascii(s.as_bytes()),
            !is_unsafe(char::from(b)),
            "byte {b:#04x}"
        );
    }
    for c in (0x80u32..0x800).chain([0x061c, 0x200e, 0x202e, 0x2066, 0x2028]) {
        let s = char::from_u32(c).map(String::from).unwrap_or_default();
        assert!(!is_printable_ascii(s.as_bytes()), "U+{c:04X}");
    }
    assert!(is_printable_ascii(b"{\"comm\":\"ollama\",\"dport\":443}"));
    assert!(!is_printable_ascii(NASTY.as_bytes()));
    assert!(matches!(
        escape_json("{\"comm\":\"ollama\"}"),
        Cow::Borrowed(_)
    ));
}
