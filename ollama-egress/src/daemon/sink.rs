//! The daemon's [`EventSink`]: the event log, with `--log-stdout` a copy of each line on
//! stdout, the metrics, and per-verdict tallies for `status`. A failing disk or a closed stdout
//! is reported and counted, never fatal.

use std::{
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use tracing::warn;

use super::state::Counters;

use crate::{
    logstore::{EventRecord, LogWriter, encode_line},
    metrics::Metrics,
    model::Verdict,
    pipeline::EventSink,
};

/// Events seen since start, by verdict, and log records lost to write errors (in the log file
/// and, with `--log-stdout`, on stdout).
#[derive(Debug, Default)]
pub struct EventTally {
    allowed: AtomicU64,
    blocked: AtomicU64,
    would_block: AtomicU64,
    log_dropped: AtomicU64,
    stdout_dropped: AtomicU64,
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
        counters.log_dropped = self
            .log_dropped
            .load(Ordering::Relaxed)
            .saturating_add(self.stdout_dropped.load(Ordering::Relaxed));
    }
}

/// Writes events to the log and counts them; warns once per failure streak and keeps going.
pub struct LogSink {
    writer: LogWriter,
    metrics: Arc<Metrics>,
    tally: Arc<EventTally>,
    failing: bool,
    stdout: Option<LineCopy>,
}

/// Where `--log-stdout` writes: each record as the same JSON line as in the log, one
/// `write_all` and a flush per line (a log collector reading the pipe sees whole lines).
struct LineCopy {
    out: Box<dyn Write + Send>,
    line: Vec<u8>,
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
            stdout: None,
        }
    }

    /// Also writes every record, as a JSON line, to `out` (stdout for `--log-stdout`).
    #[must_use]
    pub fn with_copy_to(mut self, out: Box<dyn Write + Send>) -> Self {
        self.stdout = Some(LineCopy {
            out,
            line: Vec::with_capacity(512),
            failing: false,
        });
        self
    }

    fn copy(&mut self, rec: &EventRecord) {
        let Some(copy) = self.stdout.as_mut() else {
            return;
        };
        copy.line.clear();
        let result = encode_line(rec, &mut copy.line)
            .map_err(std::io::Error::other)
            .and_then(|()| copy.out.write_all(&copy.line))
            .and_then(|()| copy.out.flush());
        match result {
            Ok(()) => {
                if copy.failing {
                    warn!("stdout writable again: events are copied there again");
                }
                copy.failing = false;
            }
            Err(e) => {
                self.tally.stdout_dropped.fetch_add(1, Ordering::Relaxed);
                if !copy.failing {
                    warn!(
                        "cannot write events to stdout, they are kept in the log file only (enforcement continues): {e}"
                    );
                }
                copy.failing = true;
            }
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
        let r = self.writer.stage(rec);
        self.report(r);
        self.copy(rec);
    }

    fn flush(&mut self) {
        let r = self.writer.flush();
        self.report(r);
    }
}

#[cfg(test)]
mod tests;
