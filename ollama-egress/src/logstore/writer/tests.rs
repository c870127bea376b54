//! Tests of [`LogWriter`]: appending, rotation, permissions, errors.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::logstore::record::tests::sample;
use time::macros::datetime;

fn records(n: usize) -> Vec<EventRecord> {
    (0..n)
        .map(|i| {
            let mut r =
                sample(datetime!(2026-11-22 10:00:00 UTC) + time::Duration::seconds(i as i64));
            r.pid = i as u32;
            r
        })
        .collect()
}

fn pids(path: &Path) -> Vec<u32> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<EventRecord>(l).unwrap().pid)
        .collect()
}

#[test]
fn creates_dir_and_file_with_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/log");
    let mut w = LogWriter::open(&dir, RotateOptions::default()).unwrap();
    w.write(&records(1)[0]).unwrap();
    w.flush().unwrap();
    let dmode = fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
    let fmode = fs::metadata(dir.join(EVENTS_FILE))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(dmode, 0o750, "dir mode {dmode:o}");
    assert_eq!(fmode, 0o640, "file mode {fmode:o}");
    assert_eq!((w.written(), w.dropped()), (1, 0));
}

#[test]
fn appends_to_existing_file() {
    let tmp = tempfile::tempdir().unwrap();
    let recs = records(4);
    {
        let mut w = LogWriter::open(tmp.path(), RotateOptions::default()).unwrap();
        w.write(&recs[0]).unwrap();
        w.write(&recs[1]).unwrap();
    }
    let mut w = LogWriter::open(tmp.path(), RotateOptions::default()).unwrap();
    w.write(&recs[2]).unwrap();
    w.write(&recs[3]).unwrap();
    assert_eq!(pids(&tmp.path().join(EVENTS_FILE)), vec![0, 1, 2, 3]);
}

#[test]
fn rotation_keeps_max_files_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let recs = records(40);
    let line_len = serde_json::to_string(&recs[39]).unwrap().len() as u64 + 1;
    // Three lines per file.
    let opts = RotateOptions {
        max_bytes: line_len * 3 + 1,
        max_files: 3,
    };
    let mut w = LogWriter::open(tmp.path(), opts).unwrap();
    for r in &recs {
        w.write(r).unwrap();
    }
    let mut rotated: Vec<usize> = rotated_files(tmp.path())
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    rotated.sort();
    assert_eq!(rotated, vec![1, 2, 3]);
    let mut all = Vec::new();
    for n in [3, 2, 1] {
        let p = pids(&rotated_path(&w.path, n));
        assert_eq!(p.len(), 3);
        all.extend(p);
    }
    let active = pids(w.path());
    assert_eq!(active, vec![39]);
    all.extend(active);
    assert_eq!(all, (30..40).collect::<Vec<u32>>());
    for (_, p) in rotated_files(tmp.path()).unwrap() {
        assert!(fs::metadata(&p).unwrap().len() <= opts.max_bytes);
    }
}

#[test]
fn rotation_removes_leftovers_and_zero_keeps_none() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("events.jsonl.7"), "old\n").unwrap();
    fs::write(tmp.path().join("events.jsonl.1.gz"), "not ours\n").unwrap();
    let recs = records(3);
    let opts = RotateOptions {
        max_bytes: 10,
        max_files: 0,
    };
    let mut w = LogWriter::open(tmp.path(), opts).unwrap();
    for r in &recs {
        w.write(r).unwrap();
    }
    assert!(rotated_files(tmp.path()).unwrap().is_empty());
    assert!(tmp.path().join("events.jsonl.1.gz").exists());
    assert_eq!(pids(w.path()), vec![2]);
}

#[test]
fn oversized_record_is_written_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = RotateOptions {
        max_bytes: 10,
        max_files: 2,
    };
    let mut w = LogWriter::open(tmp.path(), opts).unwrap();
    for r in &records(2) {
        w.write(r).unwrap();
    }
    assert_eq!(pids(w.path()), vec![1]);
    assert_eq!(pids(&rotated_path(w.path(), 1)), vec![0]);
}

#[test]
fn failed_rotation_drops_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let recs = records(3);
    let opts = RotateOptions {
        max_bytes: 10,
        max_files: 1,
    };
    let mut w = LogWriter::open(tmp.path(), opts).unwrap();
    w.write(&recs[0]).unwrap();
    // A non-empty directory where the rotated file goes: neither removable nor replaceable,
    // even for root.
    let blocker = tmp.path().join("events.jsonl.1");
    fs::create_dir(&blocker).unwrap();
    fs::write(blocker.join("x"), "x").unwrap();
    let err = w.write(&recs[1]).unwrap_err();
    assert!(matches!(err, LogError::Rotate { .. }), "{err}");
    assert!(err.to_string().contains("events.jsonl.1"), "{err}");
    assert_eq!((w.written(), w.dropped()), (1, 1));
    fs::remove_dir_all(&blocker).unwrap();
    w.write(&recs[2]).unwrap();
    assert_eq!((w.written(), w.dropped()), (2, 1));
    assert_eq!(pids(&blocker), vec![0]);
    assert_eq!(pids(w.path()), vec![2]);
}

#[test]
fn write_error_is_reported_and_writer_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let recs = records(2);
    let mut w = LogWriter::open(tmp.path(), RotateOptions::default()).unwrap();
    // Simulate a device that refuses writes (as ENOSPC would) with /dev/full.
    w.file = Some(OpenOptions::new().append(true).open("/dev/full").unwrap());
    let err = w.write(&recs[0]).unwrap_err();
    assert!(matches!(err, LogError::Write { .. }), "{err}");
    assert!(err.to_string().contains("events.jsonl"), "{err}");
    assert_eq!(w.dropped(), 1);
    w.reopen().unwrap();
    w.write(&recs[1]).unwrap();
    assert_eq!(pids(w.path()), vec![1]);
}

#[test]
fn symlinked_log_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("elsewhere");
    fs::write(&target, "").unwrap();
    std::os::unix::fs::symlink(&target, tmp.path().join(EVENTS_FILE)).unwrap();
    let err = LogWriter::open(tmp.path(), RotateOptions::default()).unwrap_err();
    assert!(matches!(err, LogError::Unsafe { .. }), "{err}");
    assert!(err.to_string().contains("symlink"), "{err}");
}

#[test]
fn terminal_controls_are_escaped_in_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = LogWriter::open(tmp.path(), RotateOptions::default()).unwrap();
    let mut r = records(1).remove(0);
    r.comm = "ev\u{1b}[2J\u{9b}31m\u{202e}il".to_owned();
    w.write(&r).unwrap();
    w.flush().unwrap();
    let text = fs::read_to_string(tmp.path().join(EVENTS_FILE)).unwrap();
    assert!(
        !text
            .chars()
            .any(|c| c != '\n' && crate::terminal::is_unsafe(c)),
        "raw controls in the log: {text:?}"
    );
    assert!(
        text.contains("\\u009b") && text.contains("\\u202e"),
        "{text}"
    );
    let back: EventRecord = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(back.comm, r.comm, "the value survives the escaping");
}

#[test]
fn staged_records_rotate_like_written_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let recs = records(40);
    let line_len = serde_json::to_string(&recs[39]).unwrap().len() as u64 + 1;
    let opts = RotateOptions {
        max_bytes: line_len * 3 + 1,
        max_files: 20,
    };
    let mut w = LogWriter::open(tmp.path(), opts).unwrap();
    for r in &recs {
        w.stage(r).unwrap();
    }
    w.commit().unwrap();
    assert_eq!((w.written(), w.dropped()), (40, 0));
    let mut rotated = rotated_files(tmp.path()).unwrap();
    rotated.sort();
    let mut all = Vec::new();
    for (_, p) in rotated.iter().rev() {
        assert!(fs::metadata(p).unwrap().len() <= opts.max_bytes);
        all.extend(pids(p));
    }
    all.extend(pids(w.path()));
    assert_eq!(all, (0..40).collect::<Vec<u32>>());
}

#[test]
fn a_failed_commit_drops_the_whole_batch_and_the_writer_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let recs = records(4);
    let mut w = LogWriter::open(tmp.path(), RotateOptions::default()).unwrap();
    w.file = Some(OpenOptions::new().append(true).open("/dev/full").unwrap());
    w.stage(&recs[0]).unwrap();
    w.stage(&recs[1]).unwrap();
    let err = w.flush().unwrap_err();
    assert!(matches!(err, LogError::Write { .. }), "{err}");
    assert_eq!((w.written(), w.dropped()), (0, 2));
    w.reopen().unwrap();
    w.stage(&recs[2]).unwrap();
    w.stage(&recs[3]).unwrap();
    w.flush().unwrap();
    assert_eq!(pids(w.path()), vec![2, 3]);
    assert_eq!((w.written(), w.dropped()), (2, 2));
}
