//! The policy file: TOML text → validated [`Policy`].

use std::collections::HashMap;
use std::path::Path;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::cidr::{CidrError, parse_cidr};
use super::domains::DomainPattern;
use super::error::{Location, PolicyError};
pub use crate::model::Action;
use crate::model::CountryCode;

impl Action {
    /// Names of the lists of this action in the file: `cidrs`, `countries`, `asns`.
    pub(crate) fn list_names(self) -> [&'static str; 3] {
        match self {
            Action::Allow => ["allow.cidrs", "allow.countries", "allow.asns"],
            Action::Deny => ["deny.cidrs", "deny.countries", "deny.asns"],
        }
    }

    /// Names of the lists of this action in the `[inbound]` section.
    pub(crate) fn inbound_list_names(self) -> [&'static str; 3] {
        match self {
            Action::Allow => [
                "inbound.allow.cidrs",
                "inbound.allow.countries",
                "inbound.allow.asns",
            ],
            Action::Deny => [
                "inbound.deny.cidrs",
                "inbound.deny.countries",
                "inbound.deny.asns",
            ],
        }
    }

    /// Name of the domain list of this action in the file: `allow.domains` or `deny.domains`.
    pub(crate) fn domains_list(self) -> &'static str {
        match self {
            Action::Allow => "allow.domains",
            Action::Deny => "deny.domains",
        }
    }
}

/// The rules of one action (`[allow]` or `[deny]`). Every list is optional in the file and
/// defaults to empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    /// Networks, normalised: host bits are never set (the parser refuses them), a bare address
    /// is a /32 or /128, and IPv4-mapped IPv6 networks of length /96 or more are stored as IPv4.
    pub cidrs: Vec<IpNet>,
    /// ISO 3166-1 alpha-2 country codes, upper case.
    pub countries: Vec<String>,
    /// AS numbers, never 0.
    pub asns: Vec<u32>,
    /// Domain patterns (exact names and `*.suffix`), canonical, each once.
    pub domains: Vec<DomainPattern>,
}

impl RuleSet {
    /// Whether the set has no rules at all.
    pub fn is_empty(&self) -> bool {
        self.cidrs.is_empty()
            && self.countries.is_empty()
            && self.asns.is_empty()
            && self.domains.is_empty()
    }
}

/// A validated policy, as read from a file or built in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The action when no rule matches. Defaults to [`Action::Deny`] when the file has no
    /// `default` key.
    pub default: Action,
    /// The `[allow]` rules (empty when the section is absent).
    pub allow: RuleSet,
    /// The `[deny]` rules (empty when the section is absent).
    pub deny: RuleSet,
    /// Who may connect to the target: the `[inbound]` section; `None` when the file has none
    /// (then every source may: the inbound default is allow).
    pub inbound: Option<InboundPolicy>,
    /// Where the policy came from: the file path, or `built-in`.
    pub origin: String,
}

/// The `[inbound]` section: rules on the source of connections and datagrams arriving at the
/// target (no domains: a source has no name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundPolicy {
    /// The action when no inbound rule matches; [`Action::Deny`] when the section has no
    /// `default` key.
    pub default: Action,
    /// `[inbound.allow]`.
    pub allow: RuleSet,
    /// `[inbound.deny]`.
    pub deny: RuleSet,
}

/// The file as serde sees it: every key optional, unknown keys refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    default: Option<Spanned<String>>,
    #[serde(default)]
    allow: Option<RawRuleSet>,
    #[serde(default)]
    deny: Option<RawRuleSet>,
    #[serde(default)]
    inbound: Option<RawInbound>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInbound {
    #[serde(default)]
    default: Option<Spanned<String>>,
    #[serde(default)]
    allow: Option<RawRuleSet>,
    #[serde(default)]
    deny: Option<RawRuleSet>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRuleSet {
    #[serde(default)]
    cidrs: Vec<Spanned<String>>,
    #[serde(default)]
    countries: Vec<Spanned<String>>,
    #[serde(default)]
    asns: Vec<Spanned<i64>>,
    #[serde(default)]
    domains: Vec<Spanned<String>>,
}

impl Policy {
    /// The name [`Policy::builtin`] gives as its origin.
    pub const BUILTIN_ORIGIN: &'static str = "built-in";

    /// Reads and validates a policy file. A file that cannot be read is an error naming it
    /// (check [`PolicyError::is_not_found`] to fall back to [`Policy::builtin`]).
    pub fn from_file(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Policy::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and validates policy text; `origin` names it in errors and becomes
    /// [`Policy::origin`].
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| PolicyError::Toml {
            at: match e.span() {
                Some(span) => Location::at(origin, text, span.start),
                None => Location::unknown(origin),
            },
            message: friendlier(e.message().trim_end()),
        })?;
        let parser = Parser::new(text, origin);
        let default = parser.action(raw.default.as_ref())?;
        let inbound = match raw.inbound {
            None => None,
            Some(section) => Some(parser.inbound(section)?),
        };
        Ok(Policy {
            default,
            allow: parser.rule_set(Action::Allow, raw.allow.unwrap_or_default())?,
            deny: parser.rule_set(Action::Deny, raw.deny.unwrap_or_default())?,
            inbound,
            origin: origin.to_string(),
        })
    }

    /// The policy in force when no policy file exists: default deny, allow loopback
    /// (`127.0.0.0/8`, `::1/128`) and the private, shared and link-local ranges (`10.0.0.0/8`,
    /// `172.16.0.0/12`, `192.168.0.0/16`, `169.254.0.0/16`, `100.64.0.0/10`, `fc00::/7`,
    /// `fe80::/10`). In monitor mode everything else is recorded as `would_block`.
    pub fn builtin() -> Policy {
        const ALLOW: [&str; 9] = [
            "127.0.0.0/8",
            "::1/128",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "169.254.0.0/16",
            "100.64.0.0/10",
            "fc00::/7",
            "fe80::/10",
        ];
        Policy {
            default: Action::Deny,
            allow: RuleSet {
                cidrs: ALLOW.iter().filter_map(|c| c.parse().ok()).collect(),
                ..RuleSet::default()
            },
            deny: RuleSet::default(),
            inbound: None,
            origin: Policy::BUILTIN_ORIGIN.to_string(),
        }
    }
}

/// serde's type errors name Rust types; say what the policy format wants instead.
fn friendlier(message: &str) -> String {
    message
        .replace("expected i64", "expected an AS number such as 13335")
        .replace("expected a string", "expected a quoted string")
}

/// Validation of the raw lists, with positions for errors.
struct Parser<'a> {
    text: &'a str,
    origin: &'a str,
    /// Byte offset of the start of every line, so a position costs a binary search, not a scan
    /// of the text (policies may list hundreds of thousands of CIDRs).
    line_starts: Vec<usize>,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, origin: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            text,
            origin,
            line_starts,
        }
    }

    fn location<T>(&self, value: &Spanned<T>) -> Location {
        let mut offset = value.span().start.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line - 1];
        Location::new(
            self.origin,
            line,
            self.text[start..offset].chars().count() + 1,
        )
    }

    /// A `default` key's action; [`Action::Deny`] when there is none.
    fn action(&self, value: Option<&Spanned<String>>) -> Result<Action, PolicyError> {
        match value {
            None => Ok(Action::Deny),
            Some(value) => match value.get_ref().as_str() {
                "allow" => Ok(Action::Allow),
                "deny" => Ok(Action::Deny),
                other => Err(PolicyError::BadAction {
                    at: self.location(value),
                    value: other.to_string(),
                }),
            },
        }
    }

    /// The `[inbound]` section.
    fn inbound(&self, raw: RawInbound) -> Result<InboundPolicy, PolicyError> {
        let default = self.action(raw.default.as_ref())?;
        let mut sets = [RuleSet::default(), RuleSet::default()];
        for (i, (action, raw_set)) in [(Action::Allow, raw.allow), (Action::Deny, raw.deny)]
            .into_iter()
            .enumerate()
        {
            let raw_set = raw_set.unwrap_or_default();
            if let Some(first) = raw_set.domains.first() {
                return Err(PolicyError::InboundDomains {
                    at: self.location(first),
                    list: match action {
                        Action::Allow => "inbound.allow.domains",
                        Action::Deny => "inbound.deny.domains",
                    },
                });
            }
            sets[i] = self.lists(action.inbound_list_names(), action, raw_set)?;
        }
        let [allow, deny] = sets;
        Ok(InboundPolicy {
            default,
            allow,
            deny,
        })
    }

    fn rule_set(&self, action: Action, raw: RawRuleSet) -> Result<RuleSet, PolicyError> {
        self.lists(action.list_names(), action, raw)
    }

    /// The lists of one action, named `names` (cidrs, countries, asns) in errors.
    fn lists(
        &self,
        names: [&'static str; 3],
        action: Action,
        raw: RawRuleSet,
    ) -> Result<RuleSet, PolicyError> {
        let mut set = RuleSet::default();

        let [cidrs_list, countries_list, asns_list] = names;

        let list = cidrs_list;
        let mut seen = Seen::default();
        for item in &raw.cidrs {
            let text = item.get_ref();
            let at = self.location(item);
            let net = parse_cidr(text).map_err(|e| match e {
                CidrError::Invalid(reason) => PolicyError::InvalidCidr {
                    at: at.clone(),
                    list,
                    value: text.clone(),
                    reason,
                },
                CidrError::HostBits { network, host } => PolicyError::HostBitsSet {
                    at: at.clone(),
                    list,
                    value: text.clone(),
                    network,
                    host,
                },
            })?;
            seen.check(list, at, format!("{text:?}"), net.to_string())?;
            set.cidrs.push(net);
        }

        let list = countries_list;
        let mut seen = Seen::default();
        for item in &raw.countries {
            let text = item.get_ref();
            let at = self.location(item);
            let Ok(code) = CountryCode::parse(text) else {
                return Err(PolicyError::InvalidCountry {
                    at,
                    list,
                    value: text.clone(),
                });
            };
            let code = String::from(code);
            seen.check(list, at, format!("{text:?}"), code.clone())?;
            set.countries.push(code);
        }

        let list = asns_list;
        let mut seen = Seen::default();
        for item in &raw.asns {
            let value = *item.get_ref();
            let at = self.location(item);
            let asn = match u32::try_from(value) {
                Ok(asn) if asn != 0 => asn,
                _ => return Err(PolicyError::InvalidAsn { at, list, value }),
            };
            seen.check(list, at, value.to_string(), format!("AS{asn}"))?;
            set.asns.push(asn);
        }

        let list = action.domains_list();
        let mut seen = Seen::default();
        for item in &raw.domains {
            let text = item.get_ref();
            let at = self.location(item);
            let pattern =
                DomainPattern::parse(text).map_err(|reason| PolicyError::InvalidDomain {
                    at: at.clone(),
                    list,
                    value: text.clone(),
                    reason,
                })?;
            seen.check(list, at, format!("{text:?}"), pattern.to_string())?;
            set.domains.push(pattern);
        }
        Ok(set)
    }
}

/// Normalised entries of one list and the line each first appeared on.
#[derive(Default)]
struct Seen(HashMap<String, usize>);

impl Seen {
    fn check(
        &mut self,
        list: &'static str,
        at: Location,
        value: String,
        canonical: String,
    ) -> Result<(), PolicyError> {
        if let Some(&first_line) = self.0.get(&canonical) {
            return Err(PolicyError::Duplicate {
                at,
                list,
                value,
                canonical,
                first_line,
            });
        }
        self.0.insert(canonical, at.line);
        Ok(())
    }
}
