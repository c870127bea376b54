//! The daemon's [`EventSink`]: the event log, the metrics, and per-verdict tallies for
//! `status`. A failing disk is reported, never fatal.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use tracing::warn;

use super::state::Counters;

use crate::{
    logstore::{EventRecord, LogWriter},
    metrics::Metrics,
    model::Verdict,
    pipeline::EventSink,
};

/// Events seen since start, by verdict, and log records lost to write errors.
#[derive(Debug, Default)]
pub struct EventTally {
    allowed: AtomicU64,
    blocked: AtomicU64,
    would_block: AtomicU64,
    log_dropped: AtomicU64,
}

impl EventTally {
    fn count(&self, v: Verdict) {
        let c = match v {
            Verdict::Allowed => &self.allowed,
            Verdict::Blocked => &self.blocked,
            Verdict::WouldBlock => &self.would_block,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Copies the tallies into the state file's counters.
    pub fn fill(&self, counters: &mut Counters) {
        let c = &mut counters.connections;
        c.allowed = self.allowed.load(Ordering::Relaxed);
        c.blocked = self.blocked.load(Ordering::Relaxed);
        c.would_block = self.would_block.load(Ordering::Relaxed);
        counters.log_dropped = self.log_dropped.load(Ordering::Relaxed);
    }
}

/// Writes events to the log and counts them; warns once per failure streak and keeps going.
pub struct LogSink {
    writer: LogWriter,
    metrics: Arc<Metrics>,
    tally: Arc<EventTally>,
    failing: bool,
}

impl LogSink {
    /// A sink writing through `writer`.
    pub fn new(writer: LogWriter, metrics: Arc<Metrics>, tally: Arc<EventTally>) -> Self {
        Self {
            writer,
            metrics,
            tally,
            failing: false,
        }
    }

    fn report(&mut self, result: Result<(), crate::logstore::LogError>) {
        match result {
            Ok(()) => {
                if self.failing {
                    warn!("event log writable again");
                }
                self.failing = false;
            }
            Err(e) => {
                self.tally
                    .log_dropped
                    .store(self.writer.dropped(), Ordering::Relaxed);
                if !self.failing {
                    warn!(
                        "cannot write the event log, events are being dropped (enforcement continues): {e}"
                    );
                }
                self.failing = true;
            }
        }
    }
}

impl EventSink for LogSink {
    fn record(&mut self, rec: &EventRecord) {
        self.tally.count(rec.verdict);
        self.metrics.observe_event(rec);
        let r = self.writer.write(rec);
        self.report(r);
    }

    fn flush(&mut self) {
        let r = self.writer.flush();
        self.report(r);
    }
}
