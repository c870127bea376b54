//! [`follow`]: the newest matches, then new records as the daemon appends them, across
//! rotations.
//!
//! Synchronous and polling (every [`POLL_INTERVAL`]): run it on its own thread, or in
//! `tokio::task::spawn_blocking`, and stop it through the `stop` closure (e.g. an `AtomicBool`
//! a SIGINT handler sets).

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::query::{Filter, LineReader, Matcher, QueryStats, ReadStatus};
use super::writer::rotated_files;
use super::{EVENTS_FILE, EventRecord, LogError};

/// Matches [`follow`] shows from the existing log when the filter sets no limit.
pub const DEFAULT_FOLLOW_BACKLOG: usize = 10;

/// How often [`follow`] looks for new lines and for a rotation.
pub const POLL_INTERVAL: Duration = Duration::from_millis(150);

/// Shows the newest `filter.limit` (default [`DEFAULT_FOLLOW_BACKLOG`]) matches of the existing
/// log, oldest first, then every new matching record as it is appended to
/// `<dir>/events.jsonl`, until `stop()` returns true (checked at least every
/// [`POLL_INTERVAL`]).
///
/// Rotation is followed: when `events.jsonl` is replaced (another inode) the old file is read
/// to its end, then the new one from its start; when it is truncated in place it is read again
/// from its start. If `events.jsonl` does not exist yet, follow waits for it. Only one rotation
/// per poll interval is followed without loss (at 64 MiB per file that is hundreds of MB/s of
/// events).
///
/// Errors: [`LogError::NoLogDir`] when `dir` does not exist, read errors, and
/// [`LogError::Output`] when `sink` fails (which stops the follow).
pub fn follow<F, S>(
    dir: &Path,
    filter: &Filter,
    mut sink: F,
    stop: S,
) -> Result<QueryStats, LogError>
where
    F: FnMut(&EventRecord) -> io::Result<()>,
    S: Fn() -> bool,
{
    if let Err(e) = fs::metadata(dir) {
        return Err(match e.kind() {
            io::ErrorKind::NotFound => LogError::NoLogDir {
                path: dir.to_path_buf(),
            },
            _ => LogError::read(dir, e),
        });
    }
    let active = dir.join(EVENTS_FILE);
    let matcher = Matcher::new(filter);
    let mut stats = QueryStats::default();
    let mut buf = Vec::with_capacity(1024);

    // Open the active file first, so the backlog and the tail meet without a gap.
    let mut current = open_tail(&active)?;

    // The backlog: the newest matches of the rotated files and of the active file so far.
    let backlog = filter.limit.unwrap_or(DEFAULT_FOLLOW_BACKLOG);
    let mut newest: VecDeque<EventRecord> = VecDeque::with_capacity(backlog.min(4096));
    let mut keep = |r: EventRecord| {
        if backlog > 0 {
            if newest.len() == backlog {
                newest.pop_front();
            }
            newest.push_back(r);
        }
        Ok(())
    };
    let current_id = current.as_ref().map(|t| t.id);
    let mut rotated = rotated_files(dir)?;
    rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    for (_, path) in rotated {
        if stop() {
            return Ok(stats);
        }
        let Some(mut tail) = open_tail(&path)? else {
            continue;
        };
        // Rotated since we opened the active file: that one is read below.
        if Some(tail.id) == current_id {
            continue;
        }
        stats.files += 1;
        finish_file(&mut tail, &mut buf, &matcher, &mut stats, &mut keep)?;
    }
    if let Some(tail) = current.as_mut() {
        stats.files += 1;
        read_available(tail, &mut buf, &matcher, &mut stats, &mut keep)?;
    }

    let mut emitted = 0u64;
    let mut send = |r: EventRecord| {
        emitted += 1;
        sink(&r).map_err(|source| LogError::Output { source })
    };
    for r in newest.drain(..) {
        send(r)?;
    }

    // The tail.
    while !stop() {
        let mut progressed = false;
        if let Some(tail) = current.as_mut() {
            progressed |= read_available(tail, &mut buf, &matcher, &mut stats, &mut send)?;
        }
        match fs::metadata(&active) {
            Ok(meta) => {
                let id = FileId::of(&meta);
                let replaced = current.as_ref().is_none_or(|t| t.id != id);
                let truncated = current
                    .as_ref()
                    .is_some_and(|t| t.id == id && meta.len() < t.reader.bytes_read());
                if replaced || truncated {
                    // Open the new file first: whatever is rotated after this is found by the
                    // next poll.
                    let next = open_tail(&active)?;
                    let next_id = next.as_ref().map(|t| t.id);
                    if let Some(mut old) = current.take() {
                        if replaced {
                            // Rotated: all the writer put in the old file happened before the
                            // rename we see, so this read finishes it.
                            finish_file(&mut old, &mut buf, &matcher, &mut stats, &mut send)?;
                            // Files rotated in after it since the last poll, oldest first.
                            for path in newer_rotated(dir, old.id)? {
                                let Some(mut tail) = open_tail(&path)? else {
                                    continue;
                                };
                                if Some(tail.id) != next_id {
                                    stats.files += 1;
                                    finish_file(
                                        &mut tail, &mut buf, &matcher, &mut stats, &mut send,
                                    )?;
                                }
                            }
                        } else {
                            stats.bytes += old.reader.bytes_read();
                        }
                    }
                    buf.clear();
                    current = next;
                    if current.is_some() {
                        stats.files += 1;
                        progressed = true;
                    }
                }
            }
            // Between the writer's rename and its create: keep the old file for now.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(LogError::read(&active, e)),
        }
        if !progressed {
            std::thread::sleep(POLL_INTERVAL);
        }
    }
    if let Some(tail) = &current {
        stats.bytes += tail.reader.bytes_read();
    }
    stats.emitted = emitted;
    Ok(stats)
}

/// Identity of a file: a rotation shows as a new inode under the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(meta: &fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// An open log file being read.
struct Tail {
    path: PathBuf,
    id: FileId,
    reader: LineReader<File>,
}

/// Opens `path` for reading; `None` if it does not exist.
fn open_tail(path: &Path) -> Result<Option<Tail>, LogError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::read(path, e)),
    };
    let meta = file.metadata().map_err(|e| LogError::read(path, e))?;
    Ok(Some(Tail {
        path: path.to_path_buf(),
        id: FileId::of(&meta),
        reader: LineReader::new(file),
    }))
}

/// Reads a file that will not grow any more (rotated) to its end, an unterminated last line
/// included, and counts its bytes.
fn finish_file(
    tail: &mut Tail,
    buf: &mut Vec<u8>,
    matcher: &Matcher<'_>,
    stats: &mut QueryStats,
    on_match: &mut dyn FnMut(EventRecord) -> Result<(), LogError>,
) -> Result<(), LogError> {
    read_available(tail, buf, matcher, stats, on_match)?;
    let last = matcher.process(buf, ReadStatus::Eof, stats);
    buf.clear();
    if let Some(r) = last {
        on_match(r)?;
    }
    stats.bytes += tail.reader.bytes_read();
    Ok(())
}

/// The rotated files newer than the one with identity `old`, oldest first: those rotated in
/// after it while nobody looked. Empty when `old` is no longer among them.
fn newer_rotated(dir: &Path, old: FileId) -> Result<Vec<PathBuf>, LogError> {
    let mut rotated = rotated_files(dir)?;
    rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let ids: Vec<Option<FileId>> = rotated
        .iter()
        .map(|(_, p)| fs::metadata(p).ok().map(|m| FileId::of(&m)))
        .collect();
    match ids.iter().position(|id| *id == Some(old)) {
        Some(at) => Ok(rotated.into_iter().skip(at + 1).map(|(_, p)| p).collect()),
        None => Ok(Vec::new()),
    }
}

/// Reads the whole lines `tail` has now, handing matches to `on_match`; an unterminated last
/// line stays in `buf` for the next call. True if anything was read.
fn read_available(
    tail: &mut Tail,
    buf: &mut Vec<u8>,
    matcher: &Matcher<'_>,
    stats: &mut QueryStats,
    on_match: &mut dyn FnMut(EventRecord) -> Result<(), LogError>,
) -> Result<bool, LogError> {
    let before = tail.reader.bytes_read();
    loop {
        let status = tail
            .reader
            .read_line(buf)
            .map_err(|e| LogError::read(&tail.path, e))?;
        if status == ReadStatus::Eof {
            break;
        }
        let matched = matcher.process(buf, status, stats);
        buf.clear();
        if let Some(r) = matched {
            on_match(r)?;
        }
    }
    Ok(tail.reader.bytes_read() > before)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "follow_tests.rs"]
mod tests;
