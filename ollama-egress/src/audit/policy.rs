//! The policy facts: the outbound default, country/ASN rules, and whether an `[inbound]`
//! table exists.

use std::path::Path;

use super::facts::PolicyFacts;
use crate::{
    files, inputs,
    policy::{Policy, PolicyError},
};

/// Reads the policy `run` would use (`path`, else the default file, else the built-in one).
/// A file with an `[inbound]` table that the policy parser does not know yet is judged
/// without that table (the table's own rules are not checked here).
pub fn read(path: Option<&Path>) -> Result<PolicyFacts, PolicyError> {
    let err = match inputs::load_policy(path) {
        Ok(policy) => {
            let inbound = if policy.origin == Policy::BUILTIN_ORIGIN {
                false
            } else {
                has_inbound_table(&read_text(Path::new(&policy.origin))?)
            };
            return Ok(facts(&policy, inbound));
        }
        Err(e) => e,
    };
    let Some(origin) = path.map(Path::to_owned).or_else(|| {
        let default = Path::new(crate::defaults::POLICY_FILE);
        default.exists().then(|| default.to_owned())
    }) else {
        return Err(err);
    };
    let Ok(text) = read_text(&origin) else {
        return Err(err);
    };
    match without_inbound(&text) {
        Some(rest) => {
            let policy = Policy::from_toml_str(&rest, &origin.display().to_string())?;
            Ok(facts(&policy, true))
        }
        None => Err(err),
    }
}

fn facts(policy: &Policy, inbound: bool) -> PolicyFacts {
    PolicyFacts {
        origin: policy.origin.clone(),
        default: policy.default,
        inbound,
        uses_geo: [&policy.allow, &policy.deny]
            .iter()
            .any(|s| !s.countries.is_empty() || !s.asns.is_empty()),
    }
}

fn read_text(path: &Path) -> Result<String, PolicyError> {
    let read_err = |source| PolicyError::Read {
        path: path.to_owned(),
        source,
    };
    let bytes =
        files::read_stable(path, files::MAX_POLICY_BYTES).map_err(|e| read_err(e.into_io()))?;
    String::from_utf8(bytes).map_err(|e| {
        read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            e.utf8_error(),
        ))
    })
}

/// Whether a policy text has an `[inbound]` table. (Until `policy/parse.rs` knows the
/// section, this is how the audit sees it; then `Policy` says.)
pub fn has_inbound_table(text: &str) -> bool {
    text.parse::<toml::Table>()
        .is_ok_and(|t| t.get("inbound").is_some_and(toml::Value::is_table))
}

/// The policy text without its `[inbound]` table, when it has one.
pub fn without_inbound(text: &str) -> Option<String> {
    let mut table = text.parse::<toml::Table>().ok()?;
    table.remove("inbound").filter(toml::Value::is_table)?;
    toml::to_string(&table).ok()
}

#[cfg(test)]
mod tests;
