//! Reading the ring buffer: wake on epoll readiness, drain every event, hand the decoded records
//! to a sink. On shutdown the buffer is drained one last time so nothing seen is lost.

use std::sync::{Arc, Mutex, PoisonError};

use aya::maps::{MapData, RingBuf};
use ollama_egress_common::ConnectEvent;
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::watch,
};

use super::decode::{Decoder, exe_of};
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
}

/// Drains every event now in `ring` into `sink`; returns how many were read.
pub fn drain(
    ring: &mut RingBuf<MapData>,
    decoder: &Mutex<Decoder>,
    sink: &mut dyn EventSink,
    stats: &mut PipelineStats,
) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        n += 1;
        let Some(ev) = ConnectEvent::from_bytes(&item) else {
            stats.malformed += 1;
            continue;
        };
        drop(item);
        let exe = exe_of(ev.tgid);
        let rec = decoder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .decode(&ev, exe);
        sink.record(&rec);
        stats.decoded += 1;
    }
    if n > 0 {
        sink.flush();
    }
    n
}

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
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), &decoder, sink, &mut stats);
                guard.clear_ready();
            }
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
    drain(fd.get_mut(), &decoder, sink, &mut stats);
    Ok(stats)
}
