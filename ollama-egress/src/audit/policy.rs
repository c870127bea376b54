//! The policy facts: the outbound default, country/ASN rules, and whether an `[inbound]`
//! section exists.

use std::path::Path;

use super::facts::PolicyFacts;
use crate::{
    inputs,
    policy::{Policy, PolicyError},
};

/// Reads the policy `run` would use (`path`, else the default file, else the built-in one).
pub fn read(path: Option<&Path>) -> Result<PolicyFacts, PolicyError> {
    inputs::load_policy(path).map(|policy| facts(&policy))
}

fn facts(policy: &Policy) -> PolicyFacts {
    PolicyFacts {
        origin: policy.origin.clone(),
        default: policy.default,
        inbound: policy.inbound.is_some(),
        uses_geo: [&policy.allow, &policy.deny]
            .iter()
            .any(|s| !s.countries.is_empty() || !s.asns.is_empty()),
    }
}

#[cfg(test)]
mod tests;
