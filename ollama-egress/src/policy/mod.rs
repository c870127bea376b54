//! Policy files: parsing, validation and compilation into kernel prefixes.
//!
//! ```text
//! TOML text ──Policy::from_toml_str──▶ Policy ──compile(+ Expander)──▶ CompiledPolicy
//!                                                                       ├─ v4 / v6 trie entries
//!                                                                       ├─ rules (id table)
//!                                                                       └─ summary(), lookup()
//! ```
//!
//! * [`Policy`] is a validated policy file (the README's "Policy" section; `parse.rs`): every
//!   section and key is optional, `default` defaults to `deny`, unknown keys, host bits,
//!   malformed country codes, AS 0 and duplicates are errors naming the line.
//! * [`compile()`] expands countries and ASNs through an [`Expander`] and merges everything into
//!   one LPM prefix list per family (longest prefix wins; on an equal prefix deny wins; then the
//!   first rule in file order).
//! * [`CompiledPolicy::lookup`] is a userspace reference of the kernel's decision.

mod cidr;
mod compile;
mod domains;
mod error;
mod lookup;
mod parse;
mod summary;

#[cfg(test)]
mod tests;

pub use compile::{CompiledPolicy, Expander, Rule, compile};
pub use domains::{DomainEntry, DomainPattern, canonical_name, most_specific};
pub use error::{ExpandError, Location, PolicyError};
pub use parse::{Action, InboundPolicy, Policy, RuleSet};
pub use summary::{FamilyTotals, InboundSummary, PolicySummary, PrefixTotals};
