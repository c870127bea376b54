//! Types shared by the ollama-egress kernel programs and the userspace daemon.
//!
//! Every struct here crosses the kernel/user boundary through a BPF map or the event ring
//! buffer, so each one is `#[repr(C)]`, `Copy`, and laid out without implicit padding: fields are
//! ordered by alignment and flags are `u32` rather than `bool` (a `bool` would leave three bytes
//! of padding whose contents the verifier and `aya::Pod` cannot vouch for). The size assertions
//! at the bottom of this file keep it that way.
#![cfg_attr(not(test), no_std)]

mod addr;
pub mod dns;

pub use addr::{
    V4_FORM_6TO4, V4_FORM_COMPATIBLE, V4_FORM_MAPPED, V4_FORM_NAT64, V4_FORM_NAT64_LOCAL,
    V4_FORM_NONE, V4_FORM_TRANSLATED, embedded_ipv4,
};

/// Name of the LPM trie maps, indexed by policy slot (see [`ACTIVE_SLOT_MAP`]).
pub const POLICY_V4_MAPS: [&str; 2] = ["POLICY_V4_0", "POLICY_V4_1"];
/// Name of the IPv6 LPM trie maps, indexed by policy slot.
pub const POLICY_V6_MAPS: [&str; 2] = ["POLICY_V6_0", "POLICY_V6_1"];
/// Array map with one `u32`: the slot (0 or 1) whose tries and [`SlotConfig`] are in force.
pub const ACTIVE_SLOT_MAP: &str = "ACTIVE_SLOT";
/// Array map of two [`SlotConfig`]s, one per policy slot.
pub const SLOT_CONFIG_MAP: &str = "SLOT_CONFIG";
/// Per-CPU array of [`Counter`]s, indexed by [`counter_index`].
pub const PACKET_COUNTERS_MAP: &str = "PACKET_COUNTERS";
/// Per-CPU array of `u64` statistics, indexed by the `STAT_*` constants.
pub const STATS_MAP: &str = "STATS";
/// Ring buffer of [`ConnectEvent`]s.
pub const EVENTS_MAP: &str = "EVENTS";
/// LRU hash of [`DedupKey`] → [`DedupValue`]: datagram destinations already decided, and
/// (socket, destination) pairs whose backstop drop was reported.
pub const DEDUP_MAP: &str = "DATAGRAM_SEEN";
/// Per-CPU array of one [`EventBudget`]: the cgroup_skb egress program's event rate bound.
pub const BACKSTOP_BUDGET_MAP: &str = "BACKSTOP_BUDGET";

/// Inbound policy LPM tries (IPv4), indexed by policy slot: the sources that may connect to the
/// target. Written with the outbound tries of the same slot, so one flip switches both.
pub const INBOUND_V4_MAPS: [&str; 2] = ["INBOUND_V4_0", "INBOUND_V4_1"];
/// Inbound policy LPM tries (IPv6), indexed by policy slot.
pub const INBOUND_V6_MAPS: [&str; 2] = ["INBOUND_V6_0", "INBOUND_V6_1"];
/// LRU hash of [`DedupKey`] → [`DedupValue`]: inbound connection attempts (listener, source,
/// source port) and datagram sources already reported.
pub const INBOUND_SEEN_MAP: &str = "INBOUND_SEEN";
/// Per-CPU array of one [`EventBudget`]: the inbound events' rate bound.
pub const INBOUND_BUDGET_MAP: &str = "INBOUND_BUDGET";

/// Every map of the kernel object, for pinning.
pub const ALL_MAPS: [&str; 26] = [
    POLICY_V4_MAPS[0],
    POLICY_V4_MAPS[1],
    POLICY_V6_MAPS[0],
    POLICY_V6_MAPS[1],
    ACTIVE_SLOT_MAP,
    SLOT_CONFIG_MAP,
    PACKET_COUNTERS_MAP,
    STATS_MAP,
    EVENTS_MAP,
    DEDUP_MAP,
    BACKSTOP_BUDGET_MAP,
    dns::DOMAIN_MAPS[0],
    dns::DOMAIN_MAPS[1],
    dns::BINDING_MAPS[0],
    dns::BINDING_MAPS[1],
    dns::DNS_QUERIES_MAP,
    dns::DNS_CONFIG_MAP,
    dns::SOCK_VERDICT_MAP,
    dns::SOCK_CONNECTED_MAP,
    dns::SOCK_CONNECTED_ON_MAP,
    INBOUND_V4_MAPS[0],
    INBOUND_V4_MAPS[1],
    INBOUND_V6_MAPS[0],
    INBOUND_V6_MAPS[1],
    INBOUND_SEEN_MAP,
    INBOUND_BUDGET_MAP,
];

/// Default capacity of each policy trie (prefixes per family and slot).
pub const DEFAULT_MAX_PREFIXES: u32 = 1 << 20;
/// Default size of the event ring buffer in bytes (a power of two, a multiple of the page size).
pub const DEFAULT_RINGBUF_BYTES: u32 = 1 << 21;
/// Entries of the datagram de-duplication LRU map.
pub const DEDUP_ENTRIES: u32 = 16_384;

/// Let the traffic through.
pub const ACTION_ALLOW: u32 = 0;
/// Refuse the traffic (drop in enforce mode, record `would_block` in monitor mode).
pub const ACTION_DENY: u32 = 1;

/// Record decisions, never drop.
pub const MODE_MONITOR: u32 = 0;
/// Drop denied traffic.
pub const MODE_ENFORCE: u32 = 1;

/// The destination is allowed.
pub const VERDICT_ALLOWED: u32 = 0;
/// The destination is denied and the traffic was refused (enforce mode).
pub const VERDICT_BLOCKED: u32 = 1;
/// The destination is denied but monitor mode let it through.
pub const VERDICT_WOULD_BLOCK: u32 = 2;
/// Number of verdicts.
pub const VERDICT_COUNT: u32 = 3;

/// Packets leaving the cgroup.
pub const DIRECTION_EGRESS: u32 = 0;
/// Packets arriving at the cgroup.
pub const DIRECTION_INGRESS: u32 = 1;
/// Number of directions.
pub const DIRECTION_COUNT: u32 = 2;

/// Rule id of the policy's default action (no rule matched).
pub const RULE_DEFAULT: u32 = 0;
/// Rule id of IPv6 packets that carry a routing header with segments left, or whose extension
/// header chain cannot be read to its end: their final destination may not be the one in the
/// fixed header, so they are judged as denied.
pub const RULE_IPV6_ROUTING_HEADER: u32 = u32::MAX;
/// Rule id of a decision taken with no valid policy slot (denied by programs loaded for
/// enforce mode, allowed by monitor programs).
pub const RULE_NO_POLICY: u32 = u32::MAX - 1;
/// Name of the `.rodata` global the loader sets to 1 for enforce mode.
pub const ENFORCE_WITHOUT_POLICY_GLOBAL: &str = "ENFORCE_WITHOUT_POLICY";
/// Rule id of IPv4 packets that carry a source-route option (LSRR or SSRR), or whose options
/// cannot be read to their end: the routers named in the option, not (only) the destination in
/// the header, receive them, so they are judged as denied.
pub const RULE_IPV4_SOURCE_ROUTE: u32 = u32::MAX - 2;
/// Rule id of the inbound default (`inbound.default`): the policy compiler gives it the
/// `0.0.0.0/0` and `::/0` entries of the inbound tries (no number of the rule table, so an
/// `[inbound]` section renumbers no outbound rule).
pub const RULE_INBOUND_DEFAULT: u32 = u32::MAX - 3;
/// The lowest rule id reserved for rules of the kernel programs themselves (the device rules
/// below included); the policy compiler numbers its rules below it.
pub const RULE_RESERVED_MIN: u32 = u32::MAX - 31;

/// The stable name of a rule of the kernel programs, or `None` for an id the policy compiler
/// assigns. The one place these names are spelled.
pub const fn reserved_rule_name(rule_id: u32) -> Option<&'static str> {
    match rule_id {
        RULE_IPV6_ROUTING_HEADER => Some("ipv6-routing-header"),
        RULE_NO_POLICY => Some("no-policy"),
        RULE_IPV4_SOURCE_ROUTE => Some("ipv4-source-route"),
        RULE_INBOUND_DEFAULT => Some("inbound.default"),
        _ => device_rule_name(rule_id),
    }
}

/// Ring-buffer events that could not be reserved (the buffer was full).
pub const STAT_EVENTS_LOST: u32 = 0;
/// Packets the cgroup_skb egress program dropped without an event of their own: repeats of a
/// (socket, destination) drop already reported under the same policy generation, and drops
/// beyond [`BACKSTOP_EVENTS_PER_SECOND`]. Every dropped packet is also counted in
/// [`PACKET_COUNTERS_MAP`]; every drop is either an event or counted here.
pub const STAT_SKB_DROPS_UNREPORTED: u32 = 1;
/// Events the cgroup_skb egress program makes per second and CPU at most (a flood of drops to
/// ever new destinations cannot flood the ring buffer and the log).
pub const BACKSTOP_EVENTS_PER_SECOND: u64 = 1000;
/// Inbound decisions that made no event of their own: repeats of a (socket, source, source
/// port) already reported under the same generation and verdict (a retransmitted SYN, further
/// datagrams), and decisions beyond [`INBOUND_EVENTS_PER_SECOND`] (a SYN flood). Every inbound
/// decision is counted in [`STAT_INBOUND_DECISIONS`]; each is an event or counted here.
pub const STAT_INBOUND_UNREPORTED: u32 = 6;
/// Inbound decisions: connection attempts (SYNs) at the target's listeners and datagrams
/// arriving at its sockets from sources it did not send to.
pub const STAT_INBOUND_DECISIONS: u32 = 7;
/// Inbound events made per second and CPU at most.
pub const INBOUND_EVENTS_PER_SECOND: u64 = 1000;
/// Number of `STAT_*` slots.
pub const STAT_COUNT: u32 = 8;

/// `AF_INET`.
pub const FAMILY_IPV4: u32 = 2;
/// `AF_INET6`.
pub const FAMILY_IPV6: u32 = 10;

/// Event kind: a connect/sendmsg decision.
pub const EVENT_KIND_CONNECT: u32 = 1;

/// Which hook made a decision.
pub const HOOK_CONNECT4: u32 = 1;
/// `cgroup/connect6`.
pub const HOOK_CONNECT6: u32 = 2;
/// `cgroup/sendmsg4`.
pub const HOOK_SENDMSG4: u32 = 3;
/// `cgroup/sendmsg6`.
pub const HOOK_SENDMSG6: u32 = 4;
/// `cgroup_skb/egress`: a packet the backstop dropped (raw and ping sockets, source routes,
/// routing headers, sockets decided under an earlier policy). `pid`, `tgid` and `comm` are the
/// task running when the packet left (the sender for raw and ping sockets; possibly another task
/// for a packet sent from softirq context, e.g. a TCP retransmission), `uid` the socket owner's.
pub const HOOK_SKB_EGRESS: u32 = 5;
/// `cgroup_skb/ingress`: an inbound decision (a connection attempt at a listener of the target,
/// a datagram from a source the socket did not send to, a packet of an accepted connection
/// whose source a new policy denies). `comm`/`pid` are those of the task running when the
/// packet arrived (often none of the target's: softirq).
pub const HOOK_SKB_INGRESS: u32 = 6;

/// Length of a task's `comm`.
pub const COMM_LEN: usize = 16;

/// Value of a policy trie entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyValue {
    /// [`ACTION_ALLOW`] or [`ACTION_DENY`].
    pub action: u32,
    /// Index into the daemon's rule table for this policy generation.
    pub rule_id: u32,
}

/// Everything about a policy slot that is not in its tries. Written before the slot is made
/// active, so a flip of [`ACTIVE_SLOT_MAP`] switches tries and settings together.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotConfig {
    /// Action when no prefix matches.
    pub default_action: u32,
    /// [`MODE_MONITOR`] or [`MODE_ENFORCE`].
    pub mode: u32,
    /// Increases with every policy load; events carry it so rule ids decode against the right
    /// rule table.
    pub generation: u32,
    /// Non-zero once the slot has been fully written (a zeroed slot is never made active).
    pub valid: u32,
    /// Number of entries in the slot's `DOMAINS_*` trie: with none, the programs skip the
    /// address bindings.
    pub domain_rules: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// Packet and byte counts of one (direction, verdict) pair.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets seen.
    pub packets: u64,
    /// Bytes seen (IP packet length).
    pub bytes: u64,
}

/// Index of the [`Counter`] for `direction` and `verdict` in [`PACKET_COUNTERS_MAP`].
#[inline(always)]
pub const fn counter_index(direction: u32, verdict: u32) -> u32 {
    direction * VERDICT_COUNT + verdict
}

/// Number of entries in [`PACKET_COUNTERS_MAP`].
pub const COUNTER_ENTRIES: u32 = DIRECTION_COUNT * VERDICT_COUNT;

/// Header at the start of every ring-buffer event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// `bpf_ktime_get_boot_ns()` when the event was made.
    pub ts_boot_ns: u64,
    /// `EVENT_KIND_*`.
    pub kind: u32,
    /// Size of the whole event in bytes, header included.
    pub size: u32,
}

/// One connection (or datagram destination) decision.
///
/// Field names are the userspace ones: `tid` is the kernel's `pid`, `pid` the kernel's `tgid`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectEvent {
    /// Common header; `kind` is [`EVENT_KIND_CONNECT`].
    pub header: EventHeader,
    /// Thread id (the kernel's `pid`).
    pub tid: u32,
    /// Process id (the kernel's `tgid`).
    pub pid: u32,
    /// Real user id (of the socket owner for the packet programs).
    pub uid: u32,
    /// Real group id of the task, 0 when the hook does not know it.
    pub gid: u32,
    /// Task name, NUL padded.
    pub comm: [u8; COMM_LEN],
    /// Address family of the destination as judged: [`FAMILY_IPV4`] for IPv4 and IPv4 addresses
    /// in IPv6 form (see `v4_form`), [`FAMILY_IPV6`] otherwise; 0 for hooks with no address.
    pub family: u32,
    /// IP protocol (`IPPROTO_TCP`, `IPPROTO_UDP`, ...).
    pub protocol: u32,
    /// Destination port in host byte order.
    pub dport: u32,
    /// `VERDICT_*`.
    pub verdict: u32,
    /// Rule that decided, in the rule table of `generation`.
    pub rule_id: u32,
    /// Policy generation that decided.
    pub generation: u32,
    /// `HOOK_*`.
    pub hook: u32,
    /// The `V4_FORM_*` constant of an IPv6 destination judged as the IPv4 address it embeds
    /// ([`V4_FORM_NONE`] otherwise).
    pub v4_form: u32,
    /// Destination address in network byte order; an IPv4 address fills the first four bytes.
    pub daddr: [u8; 16],
    /// `MODE_*` of the policy slot that decided ([`MODE_MONITOR`] when no slot was valid).
    pub mode: u32,
    /// `DIRECTION_*`: [`DIRECTION_EGRESS`] for outbound decisions, [`DIRECTION_INGRESS`] for
    /// inbound ones (then `daddr`/`dport` are the peer's address and port, the source judged,
    /// and `lport` the target's port).
    pub direction: u32,
    /// Local port in host byte order, 0 when unknown.
    pub lport: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

impl ConnectEvent {
    /// Size of the event in bytes.
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

/// Key of the datagram de-duplication map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DedupKey {
    /// `bpf_get_socket_cookie` of the sending socket.
    pub cookie: u64,
    /// Destination address, as in [`ConnectEvent::daddr`].
    pub daddr: [u8; 16],
    /// Destination port in host byte order.
    pub dport: u32,
    /// Address family of the destination as judged.
    pub family: u32,
}

/// Value of the datagram de-duplication map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DedupValue {
    /// Policy generation of the last decision.
    pub generation: u32,
    /// Verdict of the last decision.
    pub verdict: u32,
}

/// The backstop's event budget on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventBudget {
    /// `bpf_ktime_get_boot_ns()` at the start of the current one-second window.
    pub window_start_ns: u64,
    /// Events made in the window.
    pub events: u64,
}

// Layout guards: no implicit padding, sizes as documented.
const _: () = assert!(core::mem::size_of::<PolicyValue>() == 8);
const _: () = assert!(core::mem::size_of::<SlotConfig>() == 24);
const _: () = assert!(core::mem::size_of::<Counter>() == 16);
const _: () = assert!(core::mem::size_of::<EventHeader>() == 16);
const _: () = assert!(core::mem::size_of::<ConnectEvent>() == 16 + 16 + 16 + 32 + 16 + 16);
const _: () = assert!(
    ConnectEvent::SIZE == 112,
    "ConnectEvent layout changed: readers check size"
);
const _: () = assert!(core::mem::size_of::<DedupKey>() == 8 + 16 + 4 + 4);
const _: () = assert!(core::mem::size_of::<DedupValue>() == 8);
const _: () = assert!(core::mem::size_of::<EventBudget>() == 16);

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: all of these are `#[repr(C)]`, `Copy`, made only of integers and byte arrays, and
    // have no padding (checked by the size assertions above), so every bit pattern is valid.
    unsafe impl aya::Pod for PolicyValue {}
    unsafe impl aya::Pod for SlotConfig {}
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for EventHeader {}
    unsafe impl aya::Pod for ConnectEvent {}
    unsafe impl aya::Pod for DedupKey {}
    unsafe impl aya::Pod for DedupValue {}
    unsafe impl aya::Pod for EventBudget {}
    unsafe impl aya::Pod for dns::DnsConfig {}
    unsafe impl aya::Pod for dns::DnsQueryKey {}
    unsafe impl aya::Pod for dns::BindingKey {}
    unsafe impl aya::Pod for dns::Binding {}
    unsafe impl aya::Pod for dns::SockVerdict {}
    unsafe impl aya::Pod for dns::DnsAddr {}
    unsafe impl aya::Pod for dns::DnsEvent {}

    impl ConnectEvent {
        /// Decodes an event from ring-buffer bytes. Returns `None` when `bytes` is shorter than
        /// an event or its header does not describe a connect event.
        pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
            if bytes.len() < Self::SIZE {
                return None;
            }
            // SAFETY: the length was checked, the type is Pod, and read_unaligned copes with any
            // alignment of the ring-buffer slice.
            let ev = unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) };
            if ev.header.kind != EVENT_KIND_CONNECT || ev.header.size as usize != Self::SIZE {
                return None;
            }
            Some(ev)
        }

        /// The event's bytes, as the kernel writes them.
        pub fn as_bytes(&self) -> &[u8] {
            // SAFETY: Pod without padding: every byte is initialised.
            unsafe { core::slice::from_raw_parts((self as *const Self).cast::<u8>(), Self::SIZE) }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Device programs: tc/tcx egress on every network device of the daemon's network namespace
// (traffic of the target's sockets that never meets a cgroup_skb program: packet sockets,
// tunnels), and a cgroup device program on the target (opening the TUN/TAP clone device).
// ---------------------------------------------------------------------------------------------

/// Array map with one [`DeviceTarget`]: which cgroup subtree the device programs judge.
pub const DEVICE_TARGET_MAP: &str = "DEVICE_TARGET";
/// Per-CPU array of [`Counter`]s indexed by verdict: frames of the target judged at a device.
pub const DEVICE_COUNTERS_MAP: &str = "DEVICE_COUNTERS";

/// `tc` egress on a network device: a frame of the target's socket judged at the device.
pub const HOOK_DEVICE_EGRESS: u32 = 16;
/// `cgroup/dev`: the target opened (or made a node of) the TUN/TAP clone device.
pub const HOOK_DEVICE_OPEN: u32 = 17;

/// Rule id of a frame of the target that carries no IPv4 or IPv6 packet (ARP, other
/// ethertypes, too many VLAN tags, a truncated header): its destination cannot be judged.
pub const RULE_DEVICE_NON_IP: u32 = u32::MAX - 16;
/// Rule id of a frame of the target whose IP header may send it on elsewhere than its
/// destination address (IPv4 options, IPv6 hop-by-hop, routing or destination options).
pub const RULE_DEVICE_IP_OPTIONS: u32 = u32::MAX - 17;
/// Rule id of the target opening `/dev/net/tun` (char 10:200): a TUN/TAP device injects
/// packets that the kernel forwards without a socket of the target.
pub const RULE_TUN_DEVICE: u32 = u32::MAX - 18;

/// Rule id of the target setting a socket option that sends frames past the devices' tc
/// hooks: `PACKET_QDISC_BYPASS` on a packet socket, or any `SOL_XDP` option (AF_XDP).
pub const RULE_DEVICE_BYPASS_OPTION: u32 = u32::MAX - 19;
/// `cgroup/setsockopt`: the target set an option that would bypass the device programs.
pub const HOOK_SOCKOPT: u32 = 18;

/// Major and minor number of the TUN/TAP clone device `/dev/net/tun`.
pub const TUN_DEVICE: (u32, u32) = (10, 200);

/// What the device programs judge: sockets whose cgroup is `cgroup_id` or below it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceTarget {
    /// cgroup v2 id (inode number) of the target; 0 judges nothing.
    pub cgroup_id: u64,
    /// Depth of the target below the cgroup v2 root (the root is level 0).
    pub level: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

const _: () = assert!(core::mem::size_of::<DeviceTarget>() == 16);

// SAFETY: `#[repr(C)]`, `Copy`, integers only, no padding (size checked above).
#[cfg(feature = "user")]
unsafe impl aya::Pod for DeviceTarget {}

/// The name events give the device programs' own rule ids, `None` for any other id.
pub const fn device_rule_name(rule_id: u32) -> Option<&'static str> {
    match rule_id {
        RULE_DEVICE_NON_IP => Some("device-non-ip"),
        RULE_DEVICE_IP_OPTIONS => Some("device-ip-options"),
        RULE_TUN_DEVICE => Some("tun-device"),
        RULE_DEVICE_BYPASS_OPTION => Some("device-bypass-option"),
        _ => None,
    }
}
