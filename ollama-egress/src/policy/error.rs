//! Errors of policy parsing, validation and compilation.

use std::fmt;
use std::path::PathBuf;

/// Where in a policy file a problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file path, or `built-in`, or whatever name the caller gave the text.
    pub origin: String,
    /// 1-based line number; 0 when the TOML parser reported no position.
    pub line: usize,
    /// 1-based column, counted in characters; 0 when unknown.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` of `text`, which came from `origin`.
    pub(crate) fn at(origin: &str, text: &str, offset: usize) -> Location {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Location {
            origin: origin.to_string(),
            line,
            column,
        }
    }

    /// The location of line `line`, column `column` (both 1-based) of `origin`.
    pub(crate) fn new(origin: &str, line: usize, column: usize) -> Location {
        Location {
            origin: origin.to_string(),
            line,
            column,
        }
    }

    /// A location without a position in the file.
    pub(crate) fn unknown(origin: &str) -> Location {
        Location {
            origin: origin.to_string(),
            line: 0,
            column: 0,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.origin)
        } else {
            write!(
                f,
                "{}: line {}, column {}",
                self.origin, self.line, self.column
            )
        }
    }
}

/// A policy could not be loaded or compiled. The message names the file, the line and column
/// (for problems in the text) and the problem; the policy is rejected as a whole.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy file could not be read (missing, no permission, not UTF-8, ...).
    #[error("cannot read policy file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },

    /// The text is not valid TOML, has a key the policy format does not know, or a value of the
    /// wrong type.
    #[error("{at}: {message}")]
    Toml {
        /// Where the parser stopped.
        at: Location,
        /// The parser's description of the problem.
        message: String,
    },

    /// `default` is neither `"allow"` nor `"deny"`.
    #[error("{at}: default: {value:?} is not an action; expected \"allow\" or \"deny\"")]
    BadAction {
        /// The value.
        at: Location,
        /// What the file says.
        value: String,
    },

    /// A `cidrs` entry is not an IP address or a CIDR network.
    #[error("{at}: {list}: {value:?} is not a valid CIDR: {reason}")]
    InvalidCidr {
        /// The entry.
        at: Location,
        /// `allow.cidrs` or `deny.cidrs`.
        list: &'static str,
        /// The entry as written.
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A `cidrs` entry has bits set after its prefix (`10.1.2.3/8`). Such an entry is a typo or
    /// a misunderstanding; a security tool must not guess which network was meant.
    #[error(
        "{at}: {list}: {value:?} has host bits set; write \"{network}\" for the whole network \
         or \"{host}\" for the single address"
    )]
    HostBitsSet {
        /// The entry.
        at: Location,
        /// `allow.cidrs` or `deny.cidrs`.
        list: &'static str,
        /// The entry as written.
        value: String,
        /// The network with the host bits cleared (`10.0.0.0/8`).
        network: ipnet::IpNet,
        /// The single address (`10.1.2.3/32`).
        host: ipnet::IpNet,
    },

    /// A `countries` entry is not two ASCII letters.
    #[error(
        "{at}: {list}: {value:?} is not a country code; expected an ISO 3166-1 alpha-2 code \
         of two letters, e.g. \"CN\""
    )]
    InvalidCountry {
        /// The entry.
        at: Location,
        /// `allow.countries` or `deny.countries`.
        list: &'static str,
        /// The entry as written.
        value: String,
    },

    /// An `asns` entry is 0 (reserved) or outside the 32-bit AS number range.
    #[error("{at}: {list}: {value} is not a valid AS number; expected 1 to 4294967295")]
    InvalidAsn {
        /// The entry.
        at: Location,
        /// `allow.asns` or `deny.asns`.
        list: &'static str,
        /// The number as written.
        value: i64,
    },

    /// A `domains` entry is not a name or a `*.suffix` pattern.
    #[error("{at}: {list}: {value:?} is not a valid domain: {reason}")]
    InvalidDomain {
        /// The entry.
        at: Location,
        /// `allow.domains` or `deny.domains`.
        list: &'static str,
        /// The entry as written.
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An `[inbound.allow]` or `[inbound.deny]` section lists domains: inbound rules judge the
    /// source address of a connection, which has no name.
    #[error(
        "{at}: {list}: inbound rules judge a connection's source address, which has no name; use cidrs, countries or asns"
    )]
    InboundDomains {
        /// The first entry.
        at: Location,
        /// `inbound.allow.domains` or `inbound.deny.domains`.
        list: &'static str,
    },

    /// The policy has more domain rules than the kernel's domain trie holds.
    #[error("{origin}: {count} domain rules; at most {max} are supported")]
    TooManyDomainRules {
        /// The policy's origin.
        origin: String,
        /// How many distinct domain patterns it has.
        count: usize,
        /// The capacity of the trie.
        max: u32,
    },

    /// An entry appears twice in the same list (after normalisation: `10.0.0.1` and
    /// `10.0.0.1/32`, or `cn` and `CN`, are the same entry).
    #[error(
        "{at}: {list}: {value} duplicates the entry on line {first_line} (both mean {canonical})"
    )]
    Duplicate {
        /// The second occurrence.
        at: Location,
        /// The list, e.g. `deny.countries`.
        list: &'static str,
        /// The second occurrence as written (quoted for strings).
        value: String,
        /// The normalised entry both occurrences stand for.
        canonical: String,
        /// Line of the first occurrence.
        first_line: usize,
    },

    /// The policy has country or ASN rules but no geo database was given to expand them.
    #[error(
        "{origin}: country/ASN rules ({}) need the geo databases: run `ollama-egress geo update` \
         or pass --geo-db/--asn-db",
        rules.join(", ")
    )]
    GeoDatabaseMissing {
        /// The policy's origin.
        origin: String,
        /// Ids of the rules that need the databases, e.g. `deny.countries:CN`.
        rules: Vec<String>,
    },

    /// A country or ASN of the policy is not in the database.
    #[error("{origin}: {list}: {item} is not in the {database} database")]
    NotInDatabase {
        /// The policy's origin.
        origin: String,
        /// The list, e.g. `deny.countries`.
        list: &'static str,
        /// The entry, e.g. `"XX"` or `64512`.
        item: String,
        /// `geo` for countries, `ASN` for AS numbers.
        database: &'static str,
    },

    /// The geo database failed while a country or ASN rule was expanded.
    #[error("{origin}: expanding {rule}: {message}")]
    Expansion {
        /// The policy's origin.
        origin: String,
        /// The rule id, e.g. `deny.asns:45102`.
        rule: String,
        /// The database's error.
        message: String,
    },

    /// The policy has more rules than fit in a 32-bit rule id.
    #[error("{origin}: too many rules ({count})")]
    TooManyRules {
        /// The policy's origin.
        origin: String,
        /// How many rules it has.
        count: usize,
    },
}

impl PolicyError {
    /// Whether this is a [`PolicyError::Read`] of a file that does not exist (the daemon then
    /// falls back to [`Policy::builtin`](super::Policy::builtin) for the default path).
    pub fn is_not_found(&self) -> bool {
        matches!(self, PolicyError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    /// The location in the file the error refers to, for errors that have one.
    pub fn location(&self) -> Option<&Location> {
        match self {
            PolicyError::Toml { at, .. }
            | PolicyError::BadAction { at, .. }
            | PolicyError::InvalidCidr { at, .. }
            | PolicyError::HostBitsSet { at, .. }
            | PolicyError::InvalidCountry { at, .. }
            | PolicyError::InvalidAsn { at, .. }
            | PolicyError::InvalidDomain { at, .. }
            | PolicyError::InboundDomains { at, .. }
            | PolicyError::Duplicate { at, .. } => Some(at),
            _ => None,
        }
    }
}

/// A geo database could not expand a country or ASN into networks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// The country or ASN is not in the database (no network is mapped to it).
    #[error("not in the database")]
    Unknown,
    /// The database is missing, unreadable or corrupt.
    #[error("geo database error: {0}")]
    Database(String),
}
