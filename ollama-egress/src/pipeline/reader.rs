//! Reading the ring buffer: wake on epoll readiness, drain every event, hand the decoded records
//! to a sink. On shutdown the buffer is drained one last time so nothing seen is lost.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use ollama_egress_common::{COMM_LEN, ConnectEvent, EventHeader, dns::EVENT_KIND_DNS};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::watch,
};

use super::decode::{Decoder, blank_record, exe_of};
use super::names::decode_dns_event;
use crate::logstore::EventRecord;

/// Where decoded events go (the log writer, metrics, tests).
pub trait EventSink {
    /// Takes one event.
    fn record(&mut self, rec: &EventRecord);
    /// Called after each batch: make what was recorded durable.
    fn flush(&mut self);
}

/// Counts of the pipeline since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Events decoded and handed to the sink.
    pub decoded: u64,
    /// Ring-buffer records that were not a valid event (never expected; counted, not hidden).
    pub malformed: u64,
    /// DNS answers learned into the names table.
    pub dns: u64,
}

/// The `EventHeader::kind` of a ring-buffer record, when it is long enough to have one.
fn event_kind(bytes: &[u8]) -> Option<u32> {
    const AT: usize = std::mem::offset_of!(EventHeader, kind);
    let kind = bytes.get(AT..AT + 4)?;
    Some(u32::from_ne_bytes(kind.try_into().ok()?))
}

/// Executable paths by process and task name, kept for a second: a process that makes many
/// connections is looked up in `/proc` once, not once per event. The task name is part of the
/// key, so an `exec` (which renames the task) or a pid reused by another program is looked up
/// afresh at once; the second bounds what an exec that keeps the name can mislabel. The
/// caller passes the time (a drain reads the clock once per [`CLOCK_EVERY`] events).
#[derive(Default)]
pub struct ExeCache {
    entries: HashMap<(u32, [u8; COMM_LEN]), (Instant, Option<String>)>,
}

impl ExeCache {
    const TTL: Duration = Duration::from_secs(1);
    const MAX: usize = 4096;

    fn get(&mut self, tgid: u32, comm: [u8; COMM_LEN], now: Instant) -> Option<&str> {
        let key = (tgid, comm);
        // A full cache sheds its stale entries before it takes a new key.
        if self.entries.len() >= Self::MAX && !self.entries.contains_key(&key) {
            self.entries
                .retain(|_, (at, _)| now.duration_since(*at) < Self::TTL);
        }
        // One hash lookup on a hit.
        let (at, exe) = self
            .entries
            .entry(key)
            .or_insert_with(|| (now, exe_of(tgid)));
        if now.duration_since(*at) >= Self::TTL {
            *at = now;
            *exe = exe_of(tgid);
        }
        exe.as_deref()
    }
}

/// Events a drain decodes per reading of the clock for the [`ExeCache`]: a clock read cost as
/// much as a tenth of an event's work on a VM, and 64 events take well under a millisecond.
const CLOCK_EVERY: usize = 64;

/// Drains every event now in `ring` into `sink`; returns how many were read.
pub fn drain(
    ring: &mut RingBuf<MapData>,
    decoder: &Mutex<Decoder>,
    sink: &mut dyn EventSink,
    stats: &mut PipelineStats,
    exes: &mut ExeCache,
) -> usize {
    let mut n = 0;
    let mut now = Instant::now();
    // One record for the drain's events: its strings keep their buffers from one to the next.
    let mut rec = blank_record();
    while let Some(item) = ring.next() {
        n += 1;
        if n % CLOCK_EVERY == 0 {
            now = Instant::now();
        }
        if event_kind(&item) == Some(EVENT_KIND_DNS) {
            let answer = decode_dns_event(&item);
            drop(item);
            match answer {
                Ok(answer) => {
                    decoder
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .learn(&answer);
                    stats.dns += 1;
                }
                Err(e) => {
                    stats.malformed += 1;
                    tracing::warn!("dropped a DNS event the kernel cannot have sent: {e}");
                }
            }
            continue;
        }
        let Some(ev) = ConnectEvent::from_bytes(&item) else {
            stats.malformed += 1;
            continue;
        };
        drop(item);
        let exe = exes.get(ev.pid, ev.comm, now);
        let decoded = decoder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .decode_into(&ev, exe, &mut rec);
        match decoded {
            Ok(()) => {
                sink.record(&rec);
                stats.decoded += 1;
            }
            Err(e) => {
                // Never logged as some other verdict: counted and reported.
                stats.malformed += 1;
                tracing::warn!("dropped an event the kernel cannot have sent: {e}");
            }
        }
    }
    if n > 0 {
        sink.flush();
    }
    n
}

/// How often the ring buffer is drained without a wake-up from the kernel (which only wakes
/// the reader when the buffer fills up: see the kernel's `wakeup_flags`).
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(25);

/// Reads events until `shutdown` turns true, then drains what is left and returns.
pub async fn run_reader(
    ring: RingBuf<MapData>,
    decoder: Arc<Mutex<Decoder>>,
    sink: &mut (dyn EventSink + Send),
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<PipelineStats> {
    let mut stats = PipelineStats::default();
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long as
    // the `AsyncFd` owns the ring buffer.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(std::io::Error::from)?;
    let mut exes = ExeCache::default();
    let mut tick = tokio::time::interval(DRAIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            _ = tick.tick() => {
                drain(fd.get_mut(), &decoder, sink, &mut stats, &mut exes);
            }
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), &decoder, sink, &mut stats, &mut exes);
                guard.clear_ready();
            }
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
    drain(fd.get_mut(), &decoder, sink, &mut stats, &mut exes);
    Ok(stats)
}

#[cfg(test)]
mod tests;
