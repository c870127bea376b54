//! Names: what the kernel learns from DNS answers, how domain rules are keyed, and how a
//! socket remembers its verdict.
//!
//! - A DNS answer arriving at a watched socket (or at the resolver's cgroup) that answers a query
//!   recorded in [`DNS_QUERIES_MAP`] binds each A/AAAA address to the question name: for each
//!   policy slot whose `DOMAINS_*` trie has a rule for the name, the address's [`Binding`] in
//!   that slot's `BINDINGS_*` map gets the rule's action until now + the clamped TTL. A
//!   [`DnsEvent`] tells userspace the name and the addresses.
//! - Domain rules live in LPM tries keyed by the name reversed ([`domain_key`]): one lookup
//!   finds the most specific rule (an exact name is longer than any `*.suffix` of it, a longer
//!   suffix longer than a shorter one).
//! - A connect judged by the policy stores its decision in the socket ([`SockVerdict`]): the
//!   packet programs honour it while the policy generation is the same, so a connection outlives
//!   the binding's TTL.
//!
//! Names are canonical: ASCII lowercase, no trailing dot, labels of 1 to 63 bytes from
//! `[a-z0-9_-]`, at most [`NAME_MAX`] bytes. A name with any other byte is never learned.

/// Bytes of a DNS message the kernel examines (a UDP payload, or a TCP segment's message after
/// its two-byte length). Answers past them are not learned.
pub const DNS_MSG_MAX: usize = 1024;
/// The longest canonical name, in bytes.
pub const NAME_MAX: usize = 253;
/// The key size of the `DOMAINS_*` tries: a reversed name and its terminator, zero padded.
pub const DOMAIN_KEY_LEN: usize = 256;
/// Addresses one answer binds (and one [`DnsEvent`] carries) at most; further ones are ignored.
pub const DNS_MAX_ADDRS: usize = 32;
/// The DNS port.
pub const DNS_PORT: u16 = 53;

/// LPM tries `[u8; DOMAIN_KEY_LEN]` → `PolicyValue`, indexed by policy slot.
pub const DOMAIN_MAPS: [&str; 2] = ["DOMAINS_0", "DOMAINS_1"];
/// LRU hashes [`BindingKey`] → [`Binding`], indexed by policy slot.
pub const BINDING_MAPS: [&str; 2] = ["BINDINGS_0", "BINDINGS_1"];
/// LRU hash [`DnsQueryKey`] → `u64` (`bpf_ktime_get_boot_ns()` when the query left).
pub const DNS_QUERIES_MAP: &str = "DNS_QUERIES";
/// Array map with one [`DnsConfig`].
pub const DNS_CONFIG_MAP: &str = "DNS_CONFIG";
/// Socket storage of [`SockVerdict`]s.
pub const SOCK_VERDICT_MAP: &str = "SOCK_VERDICT";
/// Hash socket cookie (`u64`) → [`SockVerdict`], preallocated: the `connect()` verdicts of TCP
/// sockets that the tables decided, kept without a socket-storage allocation and deleted when
/// the socket is destroyed.
pub const SOCK_CONNECTED_MAP: &str = "SOCK_CONNECTED";
/// Entries of [`SOCK_CONNECTED_MAP`]; a connect that finds it full keeps its verdict in socket
/// storage.
pub const SOCK_CONNECTED_ENTRIES: u32 = 16_384;
/// Array of one `u32`: non-zero once the program that deletes a destroyed socket's
/// [`SOCK_CONNECTED_MAP`] entry is attached (until then every verdict goes to socket storage).
pub const SOCK_CONNECTED_ON_MAP: &str = "SOCK_CONNECTED_ON";

/// Domain rules per slot at most.
pub const MAX_DOMAIN_RULES: u32 = 16_384;
/// Addresses with a binding per slot at most (least recently used ones are evicted).
pub const BINDING_ENTRIES: u32 = 65_536;
/// Outstanding queries remembered at most.
pub const DNS_QUERY_ENTRIES: u32 = 8_192;

/// Default lower bound of a binding's lifetime, seconds: a shorter TTL is raised to it.
pub const DEFAULT_DNS_MIN_TTL_S: u32 = 60;
/// Default upper bound of a binding's lifetime, seconds: a longer TTL is lowered to it.
pub const DEFAULT_DNS_MAX_TTL_S: u32 = 3_600;
/// Default time an answer may take to arrive after its query, milliseconds.
pub const DEFAULT_DNS_QUERY_WINDOW_MS: u32 = 5_000;

/// Event kind: a DNS answer was learned ([`DnsEvent`]).
pub const EVENT_KIND_DNS: u32 = 2;

/// Answers that matched a query and were learned.
pub const STAT_DNS_LEARNED: u32 = 2;
/// Answers that matched no query the watched sockets sent (forged, late, or unasked).
pub const STAT_DNS_IGNORED: u32 = 3;
/// Answers that matched a query but could not be parsed (or carried a name that is not
/// canonical).
pub const STAT_DNS_MALFORMED: u32 = 4;
/// Bindings that could not be written (a map update failed).
pub const STAT_DNS_BIND_FAILED: u32 = 5;

/// [`SockVerdict::origin`]: the decision came from the IP tries or the default.
pub const ORIGIN_TABLES: u32 = 0;
/// [`SockVerdict::origin`]: the decision came from a domain rule through a binding.
pub const ORIGIN_DOMAIN: u32 = 1;

/// Settings of name learning, written by userspace before the programs are attached.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// A binding lives at least this long, seconds.
    pub min_ttl_s: u32,
    /// A binding lives at most this long, seconds.
    pub max_ttl_s: u32,
    /// An answer counts only within this time after its query, milliseconds.
    pub query_window_ms: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            min_ttl_s: DEFAULT_DNS_MIN_TTL_S,
            max_ttl_s: DEFAULT_DNS_MAX_TTL_S,
            query_window_ms: DEFAULT_DNS_QUERY_WINDOW_MS,
            reserved: 0,
        }
    }
}

/// A query a watched socket sent, waiting for its answer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DnsQueryKey {
    /// The resolver's address, network byte order, IPv4 in the first four bytes.
    pub server: [u8; 16],
    /// `FAMILY_*` of `server`.
    pub family: u32,
    /// `IPPROTO_UDP` or `IPPROTO_TCP`.
    pub proto: u32,
    /// The resolver's port, host byte order.
    pub server_port: u32,
    /// The querying socket's port, host byte order.
    pub local_port: u32,
    /// The DNS message id.
    pub id: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// An address a name was bound to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BindingKey {
    /// The address, network byte order, IPv4 in the first four bytes.
    pub addr: [u8; 16],
    /// `FAMILY_*` of `addr`.
    pub family: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// What the domain rules of one policy slot say about an address, from the names bound to it.
/// Deny wins: an address bound to an allowed and a denied name is denied while the denying
/// binding lives.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Binding {
    /// Until when (`bpf_ktime_get_boot_ns()`) a name an allow rule matches is bound; 0: none.
    pub allow_until_ns: u64,
    /// Until when a name a deny rule matches is bound; 0: none.
    pub deny_until_ns: u64,
    /// The `SlotConfig::generation` the rules were taken from; an entry of another generation
    /// is stale and counts as no binding.
    pub generation: u32,
    /// Rule id of the allow rule.
    pub allow_rule: u32,
    /// Rule id of the deny rule.
    pub deny_rule: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// [`SockVerdict::direction`]: the socket connected out; `daddr` is its destination.
pub const SOCK_OUTBOUND: u32 = 0;
/// [`SockVerdict::direction`]: the socket is a connection the target accepted; `daddr` is the
/// peer, judged by the inbound policy, and the socket's packets in both directions by it.
pub const SOCK_INBOUND: u32 = 1;
/// [`SockVerdict::direction`]: the last destination the socket's `sendmsg()` was judged for
/// (`daddr`, `dport`), so the datagram's packet and the replies to it are counted by that
/// decision without a table walk. Never replaces a [`SOCK_OUTBOUND`] or [`SOCK_INBOUND`] one.
pub const SOCK_DATAGRAM: u32 = 2;

/// The decision a socket's `connect()` (or, for an accepted connection, its peer) got, kept
/// with the socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockVerdict {
    /// The destination judged, as in `ConnectEvent::daddr`.
    pub daddr: [u8; 16],
    /// `FAMILY_*` of `daddr` as judged.
    pub family: u32,
    /// The policy generation that decided.
    pub generation: u32,
    /// `ACTION_*` of the decision.
    pub action: u32,
    /// Rule id of the decision.
    pub rule_id: u32,
    /// `ORIGIN_*`.
    pub origin: u32,
    /// [`SOCK_OUTBOUND`], [`SOCK_INBOUND`] or [`SOCK_DATAGRAM`].
    pub direction: u32,
    /// Destination port of a [`SOCK_DATAGRAM`] verdict (host byte order), 0 otherwise. A
    /// [`SOCK_DATAGRAM`] verdict is stored when its event is made (or found made) already.
    pub dport: u32,
}

/// One address of a [`DnsEvent`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsAddr {
    /// The address, network byte order, IPv4 in the first four bytes.
    pub addr: [u8; 16],
    /// `FAMILY_*` of `addr`.
    pub family: u32,
    /// The binding's lifetime, seconds, after clamping.
    pub ttl_s: u32,
}

/// An answer the kernel learned: the question name and the addresses bound to it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsEvent {
    /// Common header; `kind` is [`EVENT_KIND_DNS`].
    pub header: crate::EventHeader,
    /// The resolver that answered, as in [`DnsQueryKey::server`].
    pub server: [u8; 16],
    /// `FAMILY_*` of `server`.
    pub server_family: u32,
    /// `IPPROTO_UDP` or `IPPROTO_TCP`.
    pub proto: u32,
    /// Entries of `addrs` in use.
    pub n_addrs: u32,
    /// Bytes of `name` in use.
    pub name_len: u32,
    /// The bound addresses.
    pub addrs: [DnsAddr; DNS_MAX_ADDRS],
    /// The question name, canonical, zero padded.
    pub name: [u8; DOMAIN_KEY_LEN],
}

impl DnsEvent {
    /// Size of the event in bytes.
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

const _: () = assert!(core::mem::size_of::<DnsConfig>() == 16);
const _: () = assert!(core::mem::size_of::<DnsQueryKey>() == 40);
const _: () = assert!(core::mem::size_of::<BindingKey>() == 24);
const _: () = assert!(core::mem::size_of::<Binding>() == 32);
const _: () = assert!(core::mem::size_of::<SockVerdict>() == 44);
const _: () = assert!(core::mem::size_of::<DnsAddr>() == 24);
const _: () = assert!(DnsEvent::SIZE == 16 + 16 + 16 + 24 * DNS_MAX_ADDRS + DOMAIN_KEY_LEN);

/// Whether `b` may appear in a label of a canonical name.
#[inline(always)]
pub const fn is_name_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
}

/// The `DOMAINS_*` trie entry of a rule for the canonical `name`: the name's bytes reversed,
/// then a 0 byte for an exact name or a `.` for `*.name` (names under it, not itself), zero
/// padded; and the prefix length in bits that covers them. `None` for an empty name or one
/// longer than [`NAME_MAX`].
pub fn domain_key(name: &[u8], wildcard: bool) -> Option<(u32, [u8; DOMAIN_KEY_LEN])> {
    if name.is_empty() || name.len() > NAME_MAX {
        return None;
    }
    let mut key = [0u8; DOMAIN_KEY_LEN];
    for (i, &b) in name.iter().rev().enumerate() {
        key[i] = b;
    }
    key[name.len()] = if wildcard { b'.' } else { 0 };
    Some(((name.len() as u32 + 1) * 8, key))
}

/// The key a lookup for the canonical `name` uses: [`domain_key`] of the exact name, with the
/// whole key as prefix. The longest rule prefix of it is the most specific rule for the name.
pub fn lookup_key(name: &[u8]) -> Option<(u32, [u8; DOMAIN_KEY_LEN])> {
    domain_key(name, false).map(|(_, key)| (DOMAIN_KEY_LEN as u32 * 8, key))
}

mod parse;

pub use parse::{
    CLASS_IN, DNS_HEADER_LEN, DnsError, DnsWalk, LookupKey, PHASE_DONE, Step, TYPE_A, TYPE_AAAA,
    WALK_MAX_STEPS,
};

#[cfg(test)]
mod tests;
