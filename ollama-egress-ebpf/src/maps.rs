//! Every map of the kernel programs. Names are the `*_MAP` constants of `ollama-egress-common`.

use aya_ebpf::{
    btf_maps::SkStorage,
    macros::{btf_map, map},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use ollama_egress_common::{
    COUNTER_ENTRIES, ConnectEvent, Counter, DEDUP_ENTRIES, DEFAULT_MAX_PREFIXES,
    DEFAULT_RINGBUF_BYTES, DedupKey, DedupValue, EventBudget, PolicyValue, STAT_COUNT, SlotConfig,
    dns::{
        BINDING_ENTRIES, Binding, BindingKey, DNS_QUERY_ENTRIES, DOMAIN_KEY_LEN, DnsConfig,
        DnsQueryKey, DnsWalk, MAX_DOMAIN_RULES, SOCK_CONNECTED_ENTRIES, SockVerdict,
    },
};

/// `BPF_F_NO_PREALLOC`: entries are allocated when inserted (required by LPM tries).
const NO_PREALLOC: u32 = 1;

/// IPv4 policy, slot 0. Userspace sizes the tries to the policy before loading.
#[map(name = "POLICY_V4_0")]
pub static POLICY_V4_0: LpmTrie<[u8; 4], PolicyValue> =
    LpmTrie::with_max_entries(DEFAULT_MAX_PREFIXES, 0);
/// IPv4 policy, slot 1.
#[map(name = "POLICY_V4_1")]
pub static POLICY_V4_1: LpmTrie<[u8; 4], PolicyValue> =
    LpmTrie::with_max_entries(DEFAULT_MAX_PREFIXES, 0);
/// IPv6 policy, slot 0.
#[map(name = "POLICY_V6_0")]
pub static POLICY_V6_0: LpmTrie<[u8; 16], PolicyValue> =
    LpmTrie::with_max_entries(DEFAULT_MAX_PREFIXES, 0);
/// IPv6 policy, slot 1.
#[map(name = "POLICY_V6_1")]
pub static POLICY_V6_1: LpmTrie<[u8; 16], PolicyValue> =
    LpmTrie::with_max_entries(DEFAULT_MAX_PREFIXES, 0);

/// Inbound policy (sources), IPv4, slot 0; sized like the outbound tries.
#[map(name = "INBOUND_V4_0")]
pub static INBOUND_V4_0: LpmTrie<[u8; 4], PolicyValue> =
    LpmTrie::with_max_entries(DEFAULT_MAX_PREFIXES, 0);
/// Inbound policy, IPv4, slot 1.
#[map(name = "INBOUND_V4_1")]
pub static INBOUND_V4_1: LpmTrie<[u8; 4], PolicyValue> =
    LpmTrie::with_max_entries(DEFAULT_MAX_PREFIXES, 0);
/// Inbound policy, IPv6, slot 0.
#[map(name = "INBOUND_V6_0")]
pub static INBOUND_V6_0: LpmTrie<[u8; 16], PolicyValue> =
    LpmTrie::with_max_entries(DEFAULT_MAX_PREFIXES, 0);
/// Inbound policy, IPv6, slot 1.
#[map(name = "INBOUND_V6_1")]
pub static INBOUND_V6_1: LpmTrie<[u8; 16], PolicyValue> =
    LpmTrie::with_max_entries(DEFAULT_MAX_PREFIXES, 0);

/// Inbound attempts and datagram sources already reported.
#[map(name = "INBOUND_SEEN")]
pub static INBOUND_SEEN: LruHashMap<DedupKey, DedupValue> =
    LruHashMap::with_max_entries(DEDUP_ENTRIES, 0);

/// The inbound events' budget, per CPU.
#[map(name = "INBOUND_BUDGET")]
pub static INBOUND_BUDGET: PerCpuArray<EventBudget> = PerCpuArray::with_max_entries(1, 0);

/// The inbound event being made, per CPU (built here, not on the ingress program's stack).
#[map(name = "INBOUND_SCRATCH")]
pub static INBOUND_SCRATCH: PerCpuArray<ConnectEvent> = PerCpuArray::with_max_entries(1, 0);

/// Index 0: the active policy slot.
#[map(name = "ACTIVE_SLOT")]
pub static ACTIVE_SLOT: Array<u32> = Array::with_max_entries(1, 0);

/// Settings of each policy slot.
#[map(name = "SLOT_CONFIG")]
pub static SLOT_CONFIG: Array<SlotConfig> = Array::with_max_entries(2, 0);

/// Packets and bytes per (direction, verdict).
#[map(name = "PACKET_COUNTERS")]
pub static PACKET_COUNTERS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(COUNTER_ENTRIES, 0);

/// Statistics (`STAT_*`).
#[map(name = "STATS")]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// One event per decision.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RINGBUF_BYTES, 0);

/// Datagram destinations already decided, per socket.
#[map(name = "DATAGRAM_SEEN")]
pub static DATAGRAM_SEEN: LruHashMap<DedupKey, DedupValue> =
    LruHashMap::with_max_entries(DEDUP_ENTRIES, 0);

/// The egress program's event budget, per CPU.
#[map(name = "BACKSTOP_BUDGET")]
pub static BACKSTOP_BUDGET: PerCpuArray<EventBudget> = PerCpuArray::with_max_entries(1, 0);

/// Domain rules of slot 0: reversed names (see `ollama_egress_common::dns::domain_key`).
#[map(name = "DOMAINS_0")]
pub static DOMAINS_0: LpmTrie<[u8; DOMAIN_KEY_LEN], PolicyValue> =
    LpmTrie::with_max_entries(MAX_DOMAIN_RULES, NO_PREALLOC);
/// Domain rules of slot 1.
#[map(name = "DOMAINS_1")]
pub static DOMAINS_1: LpmTrie<[u8; DOMAIN_KEY_LEN], PolicyValue> =
    LpmTrie::with_max_entries(MAX_DOMAIN_RULES, NO_PREALLOC);

/// What the domain rules of slot 0 say about the addresses learned from DNS answers.
#[map(name = "BINDINGS_0")]
pub static BINDINGS_0: LruHashMap<BindingKey, Binding> =
    LruHashMap::with_max_entries(BINDING_ENTRIES, 0);
/// The same for slot 1.
#[map(name = "BINDINGS_1")]
pub static BINDINGS_1: LruHashMap<BindingKey, Binding> =
    LruHashMap::with_max_entries(BINDING_ENTRIES, 0);

/// Queries the watched sockets sent → when (`bpf_ktime_get_boot_ns`).
#[map(name = "DNS_QUERIES")]
pub static DNS_QUERIES: LruHashMap<DnsQueryKey, u64> =
    LruHashMap::with_max_entries(DNS_QUERY_ENTRIES, 0);

/// Index 0: the settings of name learning (all zero until userspace writes them: the defaults
/// then apply).
#[map(name = "DNS_CONFIG")]
pub static DNS_CONFIG: Array<DnsConfig> = Array::with_max_entries(1, 0);

/// The walk over one DNS answer (and the event it becomes), per CPU.
#[map(name = "DNS_SCRATCH")]
pub static DNS_SCRATCH: PerCpuArray<DnsWalk> = PerCpuArray::with_max_entries(1, 0);

/// The decision a socket got at `connect()`, `accept()` or its last `sendmsg()` (see `verdict`).
#[btf_map(name = "SOCK_VERDICT")]
pub static SOCK_VERDICT: SkStorage<SockVerdict> = SkStorage::new();

/// The tables' `connect()` verdicts of TCP sockets, by socket cookie (see `verdict`).
#[map(name = "SOCK_CONNECTED")]
pub static SOCK_CONNECTED: HashMap<u64, SockVerdict> =
    HashMap::with_max_entries(SOCK_CONNECTED_ENTRIES, 0);

/// Non-zero once `connected_destroyed` is attached (written by userspace).
#[map(name = "SOCK_CONNECTED_ON")]
pub static SOCK_CONNECTED_ON: Array<u32> = Array::with_max_entries(1, 0);
