//! The daemon's [`EventSink`]: the event log. A failing disk is reported, never fatal.

use tracing::warn;

use crate::{
    logstore::{EventRecord, LogWriter},
    pipeline::EventSink,
};

/// Writes events to the log; warns once per failure streak and keeps going.
pub struct LogSink<'a> {
    writer: &'a mut LogWriter,
    failing: bool,
}

impl<'a> LogSink<'a> {
    /// A sink writing through `writer`.
    pub fn new(writer: &'a mut LogWriter) -> Self {
        Self {
            writer,
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

impl EventSink for LogSink<'_> {
    fn record(&mut self, rec: &EventRecord) {
        let r = self.writer.write(rec);
        self.report(r);
    }

    fn flush(&mut self) {
        let r = self.writer.flush();
        self.report(r);
    }
}
