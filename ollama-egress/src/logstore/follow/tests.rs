//! Tests of [`follow`]: a thread follows while the test writes.

#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use time::macros::datetime;

use super::*;
use crate::logstore::record::tests::sample;
use crate::logstore::{LogWriter, RotateOptions};
use crate::model::Verdict;

/// Longest wait for a record that should come (generous for a loaded machine).
const COME: Duration = Duration::from_secs(10);
/// How long nothing must come to count as "nothing came": a few poll intervals.
const QUIET: Duration = Duration::from_millis(500);

fn rec(pid: u32) -> EventRecord {
    let mut r =
        sample(datetime!(2026-11-22 10:00:00 UTC) + time::Duration::seconds(i64::from(pid)));
    r.pid = pid;
    r
}

struct Follower {
    rx: Receiver<u32>,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<QueryStats, LogError>>,
}

impl Follower {
    fn start(dir: &Path, filter: Filter) -> Follower {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let dir = dir.to_path_buf();
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            follow(
                &dir,
                &filter,
                |r| {
                    tx.send(r.pid)
                        .map_err(|_| io::Error::other("receiver gone"))
                },
                || flag.load(Ordering::Relaxed),
            )
        });
        Follower { rx, stop, handle }
    }

    fn expect(&self, pids: impl IntoIterator<Item = u32>) {
        for want in pids {
            match self.rx.recv_timeout(COME) {
                Ok(got) => assert_eq!(got, want),
                Err(e) => panic!("waiting for pid {want}: {e}"),
            }
        }
    }

    fn expect_quiet(&self) {
        match self.rx.recv_timeout(QUIET) {
            Err(RecvTimeoutError::Timeout) => {}
            other => panic!("expected nothing, got {other:?}"),
        }
    }

    fn finish(self) -> QueryStats {
        self.stop.store(true, Ordering::Relaxed);
        let start = Instant::now();
        let stats = self.handle.join().unwrap().unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "follow did not stop promptly"
        );
        stats
    }
}

#[test]
fn backlog_then_appended_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = LogWriter::open(tmp.path(), RotateOptions::default()).unwrap();
    for i in 0..15 {
        w.write(&rec(i)).unwrap();
    }
    let f = Follower::start(tmp.path(), Filter::default());
    f.expect(5..15);
    f.expect_quiet();
    w.write(&rec(15)).unwrap();
    f.expect([15]);
    // A line written in two pieces arrives once, whole.
    let line = serde_json::to_string(&rec(16)).unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(w.path())
        .unwrap();
    file.write_all(&line.as_bytes()[..40]).unwrap();
    f.expect_quiet();
    file.write_all(&line.as_bytes()[40..]).unwrap();
    file.write_all(b"\n").unwrap();
    f.expect([16]);
    let stats = f.finish();
    assert_eq!((stats.emitted, stats.malformed), (12, 0));
}

#[test]
fn line_being_written_at_start_arrives_once_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = LogWriter::open(tmp.path(), RotateOptions::default()).unwrap();
    w.write(&rec(0)).unwrap();
    let line = serde_json::to_string(&rec(1)).unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(w.path())
        .unwrap();
    file.write_all(&line.as_bytes()[..100]).unwrap();
    let f = Follower::start(tmp.path(), Filter::default());
    f.expect([0]);
    f.expect_quiet();
    file.write_all(&line.as_bytes()[100..]).unwrap();
    file.write_all(b"\n").unwrap();
    f.expect([1]);
    assert_eq!(f.finish().malformed, 0);
}

#[test]
fn filter_and_limit_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = LogWriter::open(tmp.path(), RotateOptions::default()).unwrap();
    let with = |i: u32| {
        let mut r = rec(i);
        if i % 2 == 1 {
            r.verdict = Verdict::Allowed;
        }
        r
    };
    for i in 0..10 {
        w.write(&with(i)).unwrap();
    }
    let filter = Filter {
        verdict: Some(Verdict::Blocked),
        limit: Some(2),
        ..Filter::default()
    };
    let f = Follower::start(tmp.path(), filter);
    f.expect([6, 8]);
    for i in 10..14 {
        w.write(&with(i)).unwrap();
    }
    f.expect([10, 12]);
    f.expect_quiet();
    f.finish();
}

#[test]
fn survives_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let line_len = serde_json::to_string(&rec(0)).unwrap().len() as u64 + 1;
    // Two lines per file.
    let opts = RotateOptions {
        max_bytes: line_len * 2,
        max_files: 3,
    };
    let mut w = LogWriter::open(tmp.path(), opts).unwrap();
    for i in 0..5 {
        w.write(&rec(i)).unwrap();
    }
    // 0,1 in .2; 2,3 in .1; 4 in events.jsonl
    let f = Follower::start(
        tmp.path(),
        Filter {
            limit: Some(4),
            ..Filter::default()
        },
    );
    f.expect(1..5);
    // One record at a time: every second write rotates.
    for i in 5..11 {
        w.write(&rec(i)).unwrap();
        f.expect([i]);
    }
    // A burst with several rotations between two polls (a file holds one such record now).
    for i in 11..14 {
        w.write(&rec(i)).unwrap();
    }
    f.expect(11..14);
    f.expect_quiet();
    let stats = f.finish();
    assert_eq!(stats.malformed, 0);
}

#[test]
fn truncation_restarts_from_the_top() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = LogWriter::open(tmp.path(), RotateOptions::default()).unwrap();
    for i in 0..3 {
        w.write(&rec(i)).unwrap();
    }
    let f = Follower::start(tmp.path(), Filter::default());
    f.expect(0..3);
    drop(w);
    std::fs::OpenOptions::new()
        .write(true)
        .open(tmp.path().join("events.jsonl"))
        .unwrap()
        .set_len(0)
        .unwrap();
    let mut w = LogWriter::open(tmp.path(), RotateOptions::default()).unwrap();
    w.write(&rec(7)).unwrap();
    f.expect([7]);
    f.finish();
}

#[test]
fn waits_for_the_log_file() {
    let tmp = tempfile::tempdir().unwrap();
    let f = Follower::start(tmp.path(), Filter::default());
    f.expect_quiet();
    let mut w = LogWriter::open(tmp.path(), RotateOptions::default()).unwrap();
    w.write(&rec(1)).unwrap();
    f.expect([1]);
    f.finish();
}

#[test]
fn missing_dir_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = follow(
        &tmp.path().join("nope"),
        &Filter::default(),
        |_| Ok(()),
        || false,
    )
    .unwrap_err();
    assert!(matches!(err, LogError::NoLogDir { .. }), "{err}");
}
