//! Rule names: what an event and a metric call the rule that decided.
//!
//! A policy rule's name is its id in the policy file (`deny.countries:CN`, `default`; see
//! [`crate::policy`]). The kernel also decides by rules of its own (reserved ids: a routing
//! header, a source route, no policy loaded yet, the device rules), whose names are spelled
//! once, in `ollama_egress_common::reserved_rule_name` ([`special`]). An id that the policy generation that decided does not
//! know is named by the one fallback of [`event_rule`]: `rule#N`, or `rule#N@G` when the
//! generation `G` itself is unknown (a reload happened long before the event was read).

/// The name of a reserved rule id (one the kernel programs decide by, not the policy), `None`
/// for every id the policy compiler assigns.
pub fn special(id: u32) -> Option<&'static str> {
    ollama_egress_common::reserved_rule_name(id)
}

/// The name of rule `id` for an event of policy generation `generation`; `rules` are that
/// generation's rule names (indexed by id), `None` when the generation is not known.
/// Borrowed from `rules` (or a constant) where it can be.
pub fn event_rule(id: u32, generation: u32, rules: Option<&[String]>) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    if let Some(name) = special(id) {
        return Cow::Borrowed(name);
    }
    match rules {
        Some(rules) => match rules.get(id as usize) {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(format!("rule#{id}")),
        },
        None => Cow::Owned(format!("rule#{id}@{generation}")),
    }
}
