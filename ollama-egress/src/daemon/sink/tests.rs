//! Tests of the sink: `--log-stdout` copies each log line exactly, and a stdout that cannot be
//! written loses nothing from the log file and is counted.

use std::{
    io,
    net::{IpAddr, Ipv4Addr},
    sync::Mutex,
};

use time::OffsetDateTime;

use super::*;
use crate::{
    logstore::{EVENTS_FILE, RotateOptions},
    model::{Direction, Family, Mode},
};

/// A writer whose bytes the test reads back.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A stdout whose reader has gone away.
struct Closed;

impl Write for Closed {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::from(io::ErrorKind::BrokenPipe))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn event(verdict: Verdict, comm: &str) -> EventRecord {
    EventRecord {
        ts: OffsetDateTime::UNIX_EPOCH,
        verdict,
        mode: Mode::Enforce,
        direction: Direction::Outbound,
        pid: 4242,
        tid: 4242,
        comm: comm.into(),
        exe: None,
        uid: 0,
        gid: 0,
        proto: "tcp".into(),
        family: Family::Ipv4,
        dst: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
        dport: 443,
        src: None,
        sport: None,
        host: None,
        country: None,
        asn: None,
        as_org: None,
        rule: "default".into(),
        container: None,
        hook: None,
        via: None,
    }
}

fn sink(dir: &std::path::Path) -> (LogSink, Arc<EventTally>) {
    let writer = LogWriter::open(dir, RotateOptions::default()).expect("open log");
    let metrics = Arc::new(Metrics::new("0.0.0").expect("metrics"));
    let tally = Arc::new(EventTally::default());
    (LogSink::new(writer, metrics, Arc::clone(&tally)), tally)
}

#[test]
fn stdout_gets_the_same_lines_as_the_log_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (sink, _) = sink(tmp.path());
    let out = Shared::default();
    let mut sink = sink.with_copy_to(Box::new(out.clone()));
    sink.record(&event(Verdict::Allowed, "ollama"));
    // A comm with a terminal control: escaped on stdout as in the file.
    sink.record(&event(Verdict::Blocked, "evil\u{1b}[2J"));
    sink.flush();

    let file = std::fs::read_to_string(tmp.path().join(EVENTS_FILE)).expect("log file");
    let stdout = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
    assert_eq!(stdout, file, "stdout and events.jsonl differ");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0]["verdict"], "allowed");
    assert_eq!(lines[1]["verdict"], "blocked");
    assert_eq!(lines[1]["comm"], "evil\u{1b}[2J");
    assert!(
        !stdout.contains('\u{1b}'),
        "raw control on stdout: {stdout:?}"
    );
}

#[test]
fn without_the_option_nothing_is_copied() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut sink, _) = sink(tmp.path());
    assert!(sink.stdout.is_none());
    sink.record(&event(Verdict::Allowed, "ollama"));
    sink.flush();
    let file = std::fs::read_to_string(tmp.path().join(EVENTS_FILE)).expect("log file");
    assert_eq!(file.lines().count(), 1);
}

/// Records of one drain go out together at its flush; nothing staged is lost when the sink
/// is dropped without one.
#[test]
fn records_are_written_at_the_flush_and_at_drop() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let lines = || {
        std::fs::read_to_string(tmp.path().join(EVENTS_FILE))
            .expect("log file")
            .lines()
            .count()
    };
    let (mut sink, _) = sink(tmp.path());
    sink.record(&event(Verdict::Allowed, "ollama"));
    sink.record(&event(Verdict::Blocked, "ollama"));
    assert_eq!(lines(), 0, "written before the batch ended");
    sink.flush();
    assert_eq!(lines(), 2);
    sink.record(&event(Verdict::Allowed, "ollama"));
    drop(sink);
    assert_eq!(lines(), 3, "a staged record was lost at drop");
}

#[test]
fn a_closed_stdout_is_counted_and_the_log_file_keeps_everything() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (sink, tally) = sink(tmp.path());
    let mut sink = sink.with_copy_to(Box::new(Closed));
    for _ in 0..3 {
        sink.record(&event(Verdict::WouldBlock, "ollama"));
    }
    sink.flush();
    let file = std::fs::read_to_string(tmp.path().join(EVENTS_FILE)).expect("log file");
    assert_eq!(file.lines().count(), 3, "{file}");
    let mut counters = Counters::default();
    tally.fill(&mut counters);
    assert_eq!(counters.log_dropped, 3);
    assert_eq!(counters.connections.would_block, 3);
}
