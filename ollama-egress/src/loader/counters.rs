//! The kernel's per-CPU packet/byte counters and statistics, summed.

use aya::maps::{MapData, PerCpuArray};
use ollama_egress_common::{
    COUNTER_ENTRIES, Counter, DIRECTION_COUNT, PACKET_COUNTERS_MAP, STAT_EVENTS_LOST,
    STAT_INBOUND_DECISIONS, STAT_INBOUND_UNREPORTED, STATS_MAP, VERDICT_COUNT, counter_index,
};

use ollama_egress_common::dns::{STAT_DNS_IGNORED, STAT_DNS_LEARNED, STAT_DNS_MALFORMED};

use super::LoaderError;

/// Packet/byte counters and statistics kept by the kernel programs.
pub struct KernelCounters {
    pub(super) packets: PerCpuArray<MapData, Counter>,
    pub(super) stats: PerCpuArray<MapData, u64>,
}

/// A snapshot of [`KernelCounters`], summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// `[direction][verdict]`.
    pub packets: [[Counter; VERDICT_COUNT as usize]; DIRECTION_COUNT as usize],
    /// Events the ring buffer could not take.
    pub events_lost: u64,
    /// DNS answers learned, ignored (answering no query) and malformed, in that order.
    pub dns_answers: [u64; 3],
    /// Inbound decisions (connection attempts, datagram sources), and those of them that made
    /// no event of their own (repeats, over the rate bound), in that order.
    pub inbound: [u64; 2],
}

impl KernelCounters {
    /// Reads and sums the per-CPU counters.
    pub fn snapshot(&self) -> Result<CounterSnapshot, LoaderError> {
        let mut snap = CounterSnapshot::default();
        for d in 0..DIRECTION_COUNT {
            for v in 0..VERDICT_COUNT {
                let idx = counter_index(d, v);
                debug_assert!(idx < COUNTER_ENTRIES);
                let values = self
                    .packets
                    .get(&idx, 0)
                    .map_err(|source| LoaderError::Map {
                        what: format!("reading {PACKET_COUNTERS_MAP}[{idx}]"),
                        source,
                    })?;
                let slot = &mut snap.packets[d as usize][v as usize];
                for c in values.iter() {
                    slot.packets += c.packets;
                    slot.bytes += c.bytes;
                }
            }
        }
        snap.events_lost = self.stat(STAT_EVENTS_LOST)?;
        for (i, stat) in [STAT_DNS_LEARNED, STAT_DNS_IGNORED, STAT_DNS_MALFORMED]
            .into_iter()
            .enumerate()
        {
            snap.dns_answers[i] = self.stat(stat)?;
        }
        for (i, stat) in [STAT_INBOUND_DECISIONS, STAT_INBOUND_UNREPORTED]
            .into_iter()
            .enumerate()
        {
            snap.inbound[i] = self.stat(stat)?;
        }
        Ok(snap)
    }

    /// One `STATS` slot, summed over the CPUs.
    fn stat(&self, stat: u32) -> Result<u64, LoaderError> {
        let values = self
            .stats
            .get(&stat, 0)
            .map_err(|source| LoaderError::Map {
                what: format!("reading {STATS_MAP}[{stat}]"),
                source,
            })?;
        Ok(values.iter().sum())
    }
}
