//! Domain rules: `allow.domains` / `deny.domains` patterns, their canonical form, and the
//! userspace reference of the kernel's `DOMAINS_*` trie lookup.
//!
//! A pattern is an exact name (`registry.ollama.ai`) or `*.suffix` (every name under `suffix`,
//! not `suffix` itself). Names compare case-insensitively and a trailing dot is ignored; the
//! canonical form is the one the kernel learns names in (see
//! [`ollama_egress_common::dns`]): ASCII lowercase, labels of 1 to 63 bytes from `[a-z0-9_-]`,
//! at most [`NAME_MAX`] bytes.

use std::fmt;

use ollama_egress_common::dns::{NAME_MAX, domain_key, is_name_byte, lookup_key};
use serde::Serialize;

/// The longest label of a name, in bytes.
const LABEL_MAX: usize = 63;

/// One entry of `allow.domains` or `deny.domains`, canonical.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct DomainPattern {
    /// The name, or the suffix of a `*.suffix` pattern, canonical.
    pub name: String,
    /// `*.name`: the names under `name`, not `name` itself.
    pub wildcard: bool,
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            write!(f, "*.{}", self.name)
        } else {
            f.write_str(&self.name)
        }
    }
}

impl DomainPattern {
    /// Parses a pattern as written in a policy file. The error says what is wrong.
    pub fn parse(text: &str) -> Result<DomainPattern, String> {
        let (wildcard, rest) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let name = canonical_name(rest)?;
        Ok(DomainPattern { name, wildcard })
    }

    /// The `DOMAINS_*` trie key of the pattern: prefix length in bits and key bytes.
    pub fn key(&self) -> (u32, [u8; ollama_egress_common::dns::DOMAIN_KEY_LEN]) {
        // `canonical_name` bounds the name to 1..=NAME_MAX bytes, so the key always exists.
        domain_key(self.name.as_bytes(), self.wildcard).expect("a canonical name has a trie key")
    }

    /// Whether the pattern matches the canonical name `name`.
    pub fn matches(&self, name: &str) -> bool {
        if self.wildcard {
            name.len() > self.name.len() + 1
                && name.ends_with(self.name.as_str())
                && name.as_bytes()[name.len() - self.name.len() - 1] == b'.'
        } else {
            name == self.name
        }
    }

    /// How specific the pattern is, in the kernel trie's terms: the prefix length of its key.
    /// The longest matching pattern decides a name.
    pub fn specificity(&self) -> u32 {
        self.key().0
    }
}

/// The canonical form of a name (no `*.`): ASCII lowercase, trailing dot removed, every label
/// checked. The error says what is wrong.
pub fn canonical_name(text: &str) -> Result<String, String> {
    let name = text.strip_suffix('.').unwrap_or(text);
    if name.is_empty() {
        return Err("the name is empty".to_string());
    }
    if let Some(c) = name.chars().find(|c| !c.is_ascii()) {
        return Err(format!(
            "{c:?} is not ASCII; write an internationalised name in its xn-- (punycode) form"
        ));
    }
    let name = name.to_ascii_lowercase();
    if name.len() > NAME_MAX {
        return Err(format!(
            "the name is {} bytes long; at most {NAME_MAX} are allowed",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("the name has an empty label (two dots in a row, or a leading dot)".into());
        }
        if label.len() > LABEL_MAX {
            return Err(format!(
                "the label {label:?} is {} bytes long; at most {LABEL_MAX} are allowed",
                label.len()
            ));
        }
        if let Some(b) = label.bytes().find(|&b| !is_name_byte(b)) {
            return Err(if b == b'*' {
                "'*' is allowed only as the whole first label (\"*.example.com\")".to_string()
            } else {
                format!(
                    "{:?} is not allowed in a name; labels are letters, digits, '-' and '_'",
                    b as char
                )
            });
        }
    }
    Ok(name)
}

/// One compiled domain rule: the pattern and the rule that owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainEntry {
    /// The pattern.
    pub pattern: DomainPattern,
    /// Action and rule id, as stored in the `DOMAINS_*` trie.
    pub value: ollama_egress_common::PolicyValue,
}

/// The entry among `entries` that decides `name` (canonical), as the kernel's trie lookup finds
/// it: the most specific matching pattern. `None` when no domain rule matches.
pub fn most_specific<'a>(entries: &'a [DomainEntry], name: &str) -> Option<&'a DomainEntry> {
    let (_, want) = lookup_key(name.as_bytes())?;
    entries
        .iter()
        .filter(|e| {
            let (bits, key) = e.pattern.key();
            let n = bits as usize / 8;
            key[..n] == want[..n]
        })
        .max_by_key(|e| e.pattern.specificity())
}
