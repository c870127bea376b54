//! Compilation of a [`Policy`] into the prefixes of the kernel's LPM tries.
//!
//! Semantics (the kernel does a longest-prefix-match lookup, one trie entry per prefix):
//!
//! 1. the longest matching prefix wins;
//! 2. on an identical prefix, deny wins over allow;
//! 3. within the same action on an identical prefix, the first rule in file order owns it
//!    (`cidrs`, then `countries`, then `asns`; each in list order);
//! 4. no match → the policy's default action, rule [`RULE_DEFAULT`].
//!
//! Countries and ASNs are expanded into networks by an [`Expander`] (the geo databases) and
//! merged with the CIDR rules under the same precedence. A prefix whose nearest enclosing prefix
//! carries the same action and rule is dropped: the LPM result is the same for every address.

use std::collections::{BTreeMap, HashSet};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use ollama_egress_common::dns::MAX_DOMAIN_RULES;
use ollama_egress_common::{PolicyValue, RULE_INBOUND_DEFAULT, RULE_RESERVED_MIN};
use serde::Serialize;

use super::cidr::canonical;
use super::domains::{DomainEntry, DomainPattern};
use super::error::{ExpandError, PolicyError};
use super::parse::{Action, Policy, RuleSet};

/// Expands countries and ASNs into networks (implemented over the geo databases).
pub trait Expander {
    /// Every network the database maps to country `cc` (ISO 3166-1 alpha-2, upper case).
    /// [`ExpandError::Unknown`] when the country is not in the database.
    fn country_networks(&self, cc: &str) -> Result<Vec<IpNet>, ExpandError>;
    /// Every network the database maps to AS number `asn`. [`ExpandError::Unknown`] when the
    /// ASN is not in the database.
    fn asn_networks(&self, asn: u32) -> Result<Vec<IpNet>, ExpandError>;
}

/// One rule of a compiled policy. Its index in [`CompiledPolicy::rules`] is the numeric rule id
/// the kernel reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Stable name: `default`, `allow.cidrs:10.0.0.0/8`, `deny.countries:CN`, `deny.asns:45102`.
    pub id: String,
    /// The rule's action.
    pub action: Action,
    /// IPv4 prefixes the rule owns in the compiled tries (after merging).
    pub v4_prefixes: usize,
    /// IPv6 prefixes the rule owns in the compiled tries (after merging).
    pub v6_prefixes: usize,
    /// Domain trie entries the rule owns (1 for a domain rule, 0 when the same pattern is
    /// also denied, and for every other rule).
    #[serde(skip_serializing_if = "is_zero")]
    pub domain_entries: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A policy compiled for the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledPolicy {
    /// Where the policy came from (file path or `built-in`).
    pub origin: String,
    /// The action when no prefix matches.
    pub default_action: Action,
    /// The rule table; index = numeric rule id, index 0 is always `default`.
    pub rules: Vec<Rule>,
    /// IPv4 trie entries, sorted, each prefix once, host bits clear.
    pub v4: Vec<(Ipv4Net, PolicyValue)>,
    /// IPv6 trie entries, sorted, each prefix once, host bits clear. Never holds an IPv4-mapped
    /// network of length /96 or more: those are in [`CompiledPolicy::v4`].
    pub v6: Vec<(Ipv6Net, PolicyValue)>,
    /// Domain trie entries, sorted by pattern, each pattern once (a pattern in both lists is
    /// denied).
    pub domains: Vec<DomainEntry>,
    /// The inbound action when no inbound rule matches ([`Action::Allow`] without an
    /// `[inbound]` section); its rule `inbound.default` owns `0.0.0.0/0` and `::/0` of the
    /// inbound tries unless a rule lists those networks itself.
    pub inbound_default: Action,
    /// Whether the policy has an `[inbound]` section.
    pub inbound_section: bool,
    /// Inbound (source) IPv4 trie entries, sorted, merged as the outbound ones.
    pub inbound_v4: Vec<(Ipv4Net, PolicyValue)>,
    /// Inbound IPv6 trie entries.
    pub inbound_v6: Vec<(Ipv6Net, PolicyValue)>,
}

/// Compiles `policy`. Country and ASN rules need an `expander`; without one they are a
/// [`PolicyError::GeoDatabaseMissing`] error.
pub fn compile(
    policy: &Policy,
    expander: Option<&dyn Expander>,
) -> Result<CompiledPolicy, PolicyError> {
    let origin = &policy.origin;
    let expander = match expander {
        Some(e) => Some(e),
        None => {
            let inbound = policy.inbound.as_ref();
            let rules: Vec<String> = [
                ("", Action::Allow, Some(&policy.allow)),
                ("", Action::Deny, Some(&policy.deny)),
                ("inbound.", Action::Allow, inbound.map(|i| &i.allow)),
                ("inbound.", Action::Deny, inbound.map(|i| &i.deny)),
            ]
            .into_iter()
            .filter_map(|(side, action, set)| set.map(|set| (side, action, set)))
            .flat_map(|(side, action, set)| {
                let a = action.as_str();
                set.countries
                    .iter()
                    .map(move |cc| format!("{side}{a}.countries:{}", cc.to_ascii_uppercase()))
                    .chain(
                        set.asns
                            .iter()
                            .map(move |asn| format!("{side}{a}.asns:{asn}")),
                    )
            })
            .collect();
            if !rules.is_empty() {
                return Err(PolicyError::GeoDatabaseMissing {
                    origin: origin.clone(),
                    rules,
                });
            }
            None
        }
    };

    let mut b = Builder::new(policy.default);
    b.sets(
        expander,
        origin,
        Action::list_names,
        [(Action::Allow, &policy.allow), (Action::Deny, &policy.deny)],
    )?;
    // The inbound rules, in their own tries; rule ids after the outbound ones, so adding an
    // `[inbound]` section renumbers no outbound rule.
    b.inbound = true;
    let inbound_default = policy.inbound.as_ref().map_or(Action::Allow, |i| i.default);
    if let Some(inb) = &policy.inbound {
        b.sets(
            expander,
            origin,
            Action::inbound_list_names,
            [(Action::Allow, &inb.allow), (Action::Deny, &inb.deny)],
        )?;
    }
    b.inbound_default(inbound_default);
    b.inbound_section = policy.inbound.is_some();
    if b.domains.len() > MAX_DOMAIN_RULES as usize {
        return Err(PolicyError::TooManyDomainRules {
            origin: origin.clone(),
            count: b.domains.len(),
            max: MAX_DOMAIN_RULES,
        });
    }
    Ok(b.finish(origin))
}

fn expand(
    expander: Option<&dyn Expander>,
    f: impl FnOnce(&dyn Expander) -> Result<Vec<IpNet>, ExpandError>,
) -> Result<Vec<IpNet>, ExpandError> {
    // `compile` returns GeoDatabaseMissing before any expansion when there is no expander.
    expander.map_or(Ok(Vec::new()), f)
}

fn expand_error(
    e: ExpandError,
    origin: &str,
    rule: &str,
    list: &'static str,
    item: String,
    database: &'static str,
) -> PolicyError {
    match e {
        ExpandError::Unknown => PolicyError::NotInDatabase {
            origin: origin.to_string(),
            list,
            item,
            database,
        },
        ExpandError::Database(message) => PolicyError::Expansion {
            origin: origin.to_string(),
            rule: rule.to_string(),
            message,
        },
    }
}

/// A prefix offered by a rule, before precedence is applied.
struct Candidate<N> {
    net: N,
    deny: bool,
    rule: u32,
}

/// Collects rules and their candidate prefixes.
struct Builder {
    default_action: Action,
    rules: Vec<Rule>,
    ids: HashSet<String>,
    v4: Vec<Candidate<Ipv4Net>>,
    v6: Vec<Candidate<Ipv6Net>>,
    /// Whether [`rule`](Self::rule) adds to the inbound tries.
    inbound: bool,
    inbound_default: Action,
    inbound_section: bool,
    in_v4: Vec<Candidate<Ipv4Net>>,
    in_v6: Vec<Candidate<Ipv6Net>>,
    /// Domain patterns → (deny, rule id); deny replaces allow.
    domains: BTreeMap<DomainPattern, (bool, u32)>,
}

impl Builder {
    fn new(default_action: Action) -> Builder {
        let mut b = Builder {
            default_action,
            rules: Vec::new(),
            ids: HashSet::new(),
            v4: Vec::new(),
            v6: Vec::new(),
            inbound: false,
            inbound_default: Action::Allow,
            inbound_section: false,
            in_v4: Vec::new(),
            in_v6: Vec::new(),
            domains: BTreeMap::new(),
        };
        b.rules.push(Rule {
            id: "default".to_string(),
            action: default_action,
            v4_prefixes: 0,
            v6_prefixes: 0,
            domain_entries: 0,
        });
        b
    }

    /// Adds the domain rule `{action}.domains:{pattern}`. A pattern both allowed and denied is
    /// denied: the deny rule owns the trie entry.
    fn domain(
        &mut self,
        action: Action,
        origin: &str,
        pattern: &DomainPattern,
    ) -> Result<(), PolicyError> {
        let id = format!("{}:{pattern}", action.domains_list());
        if self.ids.contains(&id) {
            return Ok(());
        }
        let rule = self.next_id(origin)?;
        let deny = action == Action::Deny;
        let owner = self.domains.entry(pattern.clone()).or_insert((deny, rule));
        if deny && !owner.0 {
            *owner = (true, rule);
        }
        self.push_rule(id, action);
        Ok(())
    }

    /// Records rule `id`, whose number [`next_id`](Self::next_id) just gave out; its entries
    /// are counted when the policy is finished.
    fn push_rule(&mut self, id: String, action: Action) {
        self.ids.insert(id.clone());
        self.rules.push(Rule {
            id,
            action,
            v4_prefixes: 0,
            v6_prefixes: 0,
            domain_entries: 0,
        });
    }

    fn next_id(&self, origin: &str) -> Result<u32, PolicyError> {
        u32::try_from(self.rules.len())
            .ok()
            .filter(|&r| r < RULE_RESERVED_MIN)
            .ok_or_else(|| PolicyError::TooManyRules {
                origin: origin.to_string(),
                count: self.rules.len() + 1,
            })
    }

    fn has(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Adds a rule with its networks. A repeated id (possible in a policy built in code, never
    /// in a parsed one) is skipped: its first occurrence already owns every prefix it could.
    fn rule(
        &mut self,
        id: String,
        action: Action,
        origin: &str,
        nets: impl IntoIterator<Item = IpNet>,
    ) -> Result<(), PolicyError> {
        if self.ids.contains(&id) {
            return Ok(());
        }
        let rule = self.next_id(origin)?;
        let deny = action == Action::Deny;
        let (v4, v6) = if self.inbound {
            (&mut self.in_v4, &mut self.in_v6)
        } else {
            (&mut self.v4, &mut self.v6)
        };
        for net in nets {
            match canonical(net) {
                IpNet::V4(net) => v4.push(Candidate { net, deny, rule }),
                IpNet::V6(net) => v6.push(Candidate { net, deny, rule }),
            }
        }
        self.push_rule(id, action);
        Ok(())
    }

    /// Adds the rules of `sets` (`names` gives each action's list names), expanding countries
    /// and ASNs through `expander`.
    fn sets(
        &mut self,
        expander: Option<&dyn Expander>,
        origin: &str,
        names: fn(Action) -> [&'static str; 3],
        sets: [(Action, &RuleSet); 2],
    ) -> Result<(), PolicyError> {
        for (action, set) in sets {
            let [cidrs_list, countries_list, asns_list] = names(action);
            for net in &set.cidrs {
                let net = canonical(*net);
                self.rule(format!("{cidrs_list}:{net}"), action, origin, [net])?;
            }
            for cc in &set.countries {
                let cc = cc.to_ascii_uppercase();
                let id = format!("{countries_list}:{cc}");
                if self.has(&id) {
                    continue;
                }
                let nets = expand(expander, |e| e.country_networks(&cc)).map_err(|e| {
                    expand_error(e, origin, &id, countries_list, format!("{cc:?}"), "geo")
                })?;
                self.rule(id, action, origin, nets)?;
            }
            for &asn in &set.asns {
                let id = format!("{asns_list}:{asn}");
                if self.has(&id) {
                    continue;
                }
                let nets = expand(expander, |e| e.asn_networks(asn))
                    .map_err(|e| expand_error(e, origin, &id, asns_list, asn.to_string(), "ASN"))?;
                self.rule(id, action, origin, nets)?;
            }
            for pattern in &set.domains {
                self.domain(action, origin, pattern)?;
            }
        }
        Ok(())
    }

    /// Gives the inbound default (rule [`RULE_INBOUND_DEFAULT`], `inbound.default`)
    /// `0.0.0.0/0` and `::/0` of the inbound tries, for each family where no inbound rule lists
    /// that network itself (the kernel then never misses).
    fn inbound_default(&mut self, action: Action) {
        let deny = action == Action::Deny;
        let rule = RULE_INBOUND_DEFAULT;
        let all4 = Ipv4Net::default();
        let all6 = Ipv6Net::default();
        if !self.in_v4.iter().any(|c| c.net == all4) {
            self.in_v4.push(Candidate {
                net: all4,
                deny,
                rule,
            });
        }
        if !self.in_v6.iter().any(|c| c.net == all6) {
            self.in_v6.push(Candidate {
                net: all6,
                deny,
                rule,
            });
        }
        self.inbound_default = action;
    }

    fn finish(mut self, origin: &str) -> CompiledPolicy {
        let v4 = merge(std::mem::take(&mut self.v4));
        let v6 = merge(std::mem::take(&mut self.v6));
        let inbound_v4 = merge(std::mem::take(&mut self.in_v4));
        let inbound_v6 = merge(std::mem::take(&mut self.in_v6));
        for (_, value) in v4.iter().chain(&inbound_v4) {
            if let Some(rule) = self.rules.get_mut(value.rule_id as usize) {
                rule.v4_prefixes += 1;
            }
        }
        for (_, value) in v6.iter().chain(&inbound_v6) {
            if let Some(rule) = self.rules.get_mut(value.rule_id as usize) {
                rule.v6_prefixes += 1;
            }
        }
        let domains: Vec<DomainEntry> = std::mem::take(&mut self.domains)
            .into_iter()
            .map(|(pattern, (deny, rule_id))| DomainEntry {
                pattern,
                value: PolicyValue {
                    action: if deny { Action::Deny } else { Action::Allow }.to_kernel(),
                    rule_id,
                },
            })
            .collect();
        for entry in &domains {
            if let Some(rule) = self.rules.get_mut(entry.value.rule_id as usize) {
                rule.domain_entries += 1;
            }
        }
        CompiledPolicy {
            origin: origin.to_string(),
            default_action: self.default_action,
            rules: self.rules,
            v4,
            v6,
            domains,
            inbound_default: self.inbound_default,
            inbound_section: self.inbound_section,
            inbound_v4,
            inbound_v6,
        }
    }
}

/// A network type the merge works on.
trait Prefix: Copy + Ord {
    /// Whether `self` contains all of `other`.
    fn covers(&self, other: &Self) -> bool;
}

impl Prefix for Ipv4Net {
    fn covers(&self, other: &Self) -> bool {
        self.contains(other)
    }
}

impl Prefix for Ipv6Net {
    fn covers(&self, other: &Self) -> bool {
        self.contains(other)
    }
}

/// Applies precedence: one entry per prefix (deny before allow, then the first rule), then drops
/// entries whose nearest enclosing entry has the same value. O(n log n).
fn merge<N: Prefix>(mut candidates: Vec<Candidate<N>>) -> Vec<(N, PolicyValue)> {
    // Ordering by network then prefix length puts every prefix right before the prefixes it
    // contains (a pre-order walk of the prefix tree).
    candidates.sort_unstable_by(|a, b| {
        a.net
            .cmp(&b.net)
            .then(b.deny.cmp(&a.deny))
            .then(a.rule.cmp(&b.rule))
    });
    candidates.dedup_by(|later, first| later.net == first.net);

    let mut out: Vec<(N, PolicyValue)> = Vec::with_capacity(candidates.len());
    // The kept prefixes enclosing the current one, outermost first.
    let mut enclosing: Vec<(N, PolicyValue)> = Vec::new();
    for c in candidates {
        let value = PolicyValue {
            action: if c.deny { Action::Deny } else { Action::Allow }.to_kernel(),
            rule_id: c.rule,
        };
        while enclosing.last().is_some_and(|(net, _)| !net.covers(&c.net)) {
            enclosing.pop();
        }
        if enclosing.last().is_some_and(|(_, v)| *v == value) {
            continue;
        }
        enclosing.push((c.net, value));
        out.push((c.net, value));
    }
    out
}
