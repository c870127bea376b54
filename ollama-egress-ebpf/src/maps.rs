//! Every map of the kernel programs. Names are the `*_MAP` constants of `ollama-egress-common`.

use aya_ebpf::{
    macros::map,
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use ollama_egress_common::{
    COUNTER_ENTRIES, Counter, DEDUP_ENTRIES, DEFAULT_MAX_PREFIXES, DEFAULT_RINGBUF_BYTES, DedupKey,
    DedupValue, EventBudget, PolicyValue, STAT_COUNT, SlotConfig,
};

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
