//! A printable, serialisable summary of a compiled policy.

use std::fmt;

use ollama_egress_common::ACTION_DENY;
use serde::{Deserialize, Serialize};

use super::compile::{CompiledPolicy, Rule};
use super::parse::Action;

/// Prefix counts of one address family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyTotals {
    /// Prefixes whose action is allow.
    pub allow: usize,
    /// Prefixes whose action is deny.
    pub deny: usize,
}

/// Prefix counts per family (`ipv4`, `ipv6`, as in the `ollama_egress_policy_prefixes` metric).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixTotals {
    /// IPv4 trie entries.
    pub ipv4: FamilyTotals,
    /// IPv6 trie entries.
    pub ipv6: FamilyTotals,
}

/// What `policy check` and `status` print: serialisable to JSON, and [`fmt::Display`] for
/// people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicySummary {
    /// Where the policy came from.
    pub origin: String,
    /// The action when no rule matches.
    pub default: Action,
    /// Every rule except `default`, in rule-id order, with the prefixes it owns.
    pub rules: Vec<Rule>,
    /// Trie entries per family and action.
    pub prefixes: PrefixTotals,
    /// Domain trie entries per action.
    pub domains: FamilyTotals,
    /// The inbound guard: who may connect to the target.
    pub inbound: InboundSummary,
}

/// The `[inbound]` part of a [`PolicySummary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InboundSummary {
    /// Whether the policy has an `[inbound]` section (without one every source may connect).
    pub section: bool,
    /// The inbound action when no inbound rule matches.
    pub default: Action,
    /// Inbound trie entries per family and action (the default's `/0` entries included).
    pub prefixes: PrefixTotals,
}

impl CompiledPolicy {
    /// Summarises the policy.
    pub fn summary(&self) -> PolicySummary {
        let mut prefixes = PrefixTotals::default();
        for (_, v) in &self.v4 {
            count(&mut prefixes.ipv4, v.action);
        }
        for (_, v) in &self.v6 {
            count(&mut prefixes.ipv6, v.action);
        }
        let mut inbound = PrefixTotals::default();
        for (_, v) in &self.inbound_v4 {
            count(&mut inbound.ipv4, v.action);
        }
        for (_, v) in &self.inbound_v6 {
            count(&mut inbound.ipv6, v.action);
        }
        let section = self.inbound_section;
        let mut domains = FamilyTotals::default();
        for entry in &self.domains {
            count(&mut domains, entry.value.action);
        }
        PolicySummary {
            domains,
            origin: self.origin.clone(),
            default: self.default_action,
            rules: self.rules.iter().skip(1).cloned().collect(),
            prefixes,
            inbound: InboundSummary {
                section,
                default: self.inbound_default,
                prefixes: inbound,
            },
        }
    }
}

fn count(totals: &mut FamilyTotals, action: u32) {
    if action == ACTION_DENY {
        totals.deny += 1;
    } else {
        totals.allow += 1;
    }
}

impl fmt::Display for PolicySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "policy {}: default {}", self.origin, self.default)?;
        let width = self.rules.iter().map(|r| r.id.len()).max().unwrap_or(0);
        for rule in &self.rules {
            write!(f, "  {:<width$}  {:<6}", rule.id, rule.action.as_str())?;
            if rule.id.contains(".domains:") {
                match rule.domain_entries {
                    0 => write!(f, "  shadowed (the same pattern is denied)")?,
                    _ => write!(f, "  domain")?,
                }
                writeln!(f)?;
                continue;
            }
            match (rule.v4_prefixes, rule.v6_prefixes) {
                (0, 0) => write!(f, "  no prefixes (shadowed or empty)")?,
                (v4, 0) => write!(f, "  {v4} IPv4")?,
                (0, v6) => write!(f, "  {v6} IPv6")?,
                (v4, v6) => write!(f, "  {v4} IPv4  {v6} IPv6")?,
            }
            writeln!(f)?;
        }
        let p = &self.prefixes;
        write!(
            f,
            "prefixes: IPv4 {} allow / {} deny, IPv6 {} allow / {} deny",
            p.ipv4.allow, p.ipv4.deny, p.ipv6.allow, p.ipv6.deny
        )?;
        let d = &self.domains;
        if d.allow + d.deny > 0 {
            write!(f, "\ndomains: {} allow / {} deny", d.allow, d.deny)?;
        }
        let i = &self.inbound;
        if i.section {
            write!(
                f,
                "\ninbound: default {}; prefixes IPv4 {} allow / {} deny, IPv6 {} allow / {} deny",
                i.default,
                i.prefixes.ipv4.allow,
                i.prefixes.ipv4.deny,
                i.prefixes.ipv6.allow,
                i.prefixes.ipv6.deny
            )?;
        } else {
            write!(
                f,
                "\ninbound: no [inbound] section: every source may connect"
            )?;
        }
        Ok(())
    }
}
