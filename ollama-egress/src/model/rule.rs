//! Rule names: what an event and a metric call the rule that decided.
//!
//! A policy rule's name is its id in the policy file (`deny.countries:CN`, `default`; see
//! [`crate::policy`]). The kernel also decides without a policy rule in two cases, which have
//! names of their own ([`special`]). An id that the policy generation that decided does not
//! know is named by the one fallback of [`event_rule`]: `rule#N`, or `rule#N@G` when the
//! generation `G` itself is unknown (a reload happened long before the event was read).

use ollama_egress_common::{RULE_IPV6_ROUTING_HEADER, RULE_NO_POLICY};

/// The name of [`RULE_IPV6_ROUTING_HEADER`]: an IPv6 packet with a routing header, refused
/// because its real destination is not the one judged.
pub const IPV6_ROUTING_HEADER: &str = "ipv6-routing-header";

/// The name of [`RULE_NO_POLICY`]: the kernel had no policy loaded yet.
pub const NO_POLICY: &str = "no-policy";

/// The name of a rule id that is not a policy rule, `None` for every other id.
pub fn special(id: u32) -> Option<&'static str> {
    match id {
        RULE_IPV6_ROUTING_HEADER => Some(IPV6_ROUTING_HEADER),
        RULE_NO_POLICY => Some(NO_POLICY),
        _ => None,
    }
}

/// The name of rule `id` for an event of policy generation `generation`; `rules` are that
/// generation's rule names (indexed by id), `None` when the generation is not known.
pub fn event_rule(id: u32, generation: u32, rules: Option<&[String]>) -> String {
    if let Some(name) = special(id) {
        return name.to_owned();
    }
    match rules {
        Some(rules) => rules
            .get(id as usize)
            .cloned()
            .unwrap_or_else(|| format!("rule#{id}")),
        None => format!("rule#{id}@{generation}"),
    }
}
