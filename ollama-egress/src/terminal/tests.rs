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
