//! [`follow`]: the newest matches, then new records as the daemon appends them, across
//! rotations.
//!
//! Synchronous and polling (every [`POLL_INTERVAL`]): run it on its own thread, or in
//! `tokio::task::spawn_blocking`, and stop it through the `stop` closure (e.g. an `AtomicBool`
//! a SIGINT handler sets).

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::filter::Filter;
use super::lines::{FileId, LineReader, ReadStatus, check_dir, open_existing};
use super::query::{Matcher, QueryStats, scan_back};
use super::revlines::RevLines;
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
/// The backlog is read backwards from the end, so it comes at once whatever the log's size.
/// Rotation is followed: when `events.jsonl` is replaced (another inode) the old file is read
/// to its end, then the files rotated in after it since the last poll, then the new
/// `events.jsonl` from its start; when it is truncated in place it is read again from its
/// start. If `events.jsonl` does not exist yet, follow waits for it.
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
    check_dir(dir)?;
    let active = dir.join(EVENTS_FILE);
    let matcher = Matcher::new(filter);
    let mut stats = QueryStats::default();
    let mut buf = Vec::with_capacity(1024);

    // Open the active file first, so the backlog and the tail meet without a gap.
    let mut current = open_tail(&active)?;

    // The backlog: the newest matches, read backwards from the end of the active file's
    // complete lines, then through the rotated files newest first.
    let backlog = filter.limit.unwrap_or(DEFAULT_FOLLOW_BACKLOG);
    let mut found = Vec::with_capacity(backlog.min(4096));
    let mut seen = Vec::new();
    if let Some(tail) = current.as_mut() {
        stats.files += 1;
        seen.push(tail.id);
        let file = tail.reader.get_ref();
        let end = file
            .metadata()
            .map_err(|e| LogError::read(&tail.path, e))?
            .len();
        let mut rev = RevLines::new(file, end);
        // A line being written is left to the tail.
        let start = rev
            .drop_partial_tail()
            .map_err(|e| LogError::read(&tail.path, e))?;
        if backlog > 0 {
            scan_back(
                &mut rev, &tail.path, &matcher, &mut stats, &mut found, backlog,
            )?;
        }
        tail.reader
            .seek_to(start)
            .map_err(|e| LogError::read(&tail.path, e))?;
    }
    if found.len() < backlog {
        let mut rotated = rotated_files(dir)?;
        rotated.sort_by_key(|(n, _)| *n);
        for (_, path) in rotated {
            if stop() {
                return Ok(stats);
            }
            let Some(tail) = open_tail(&path)? else {
                continue;
            };
            // Met twice: rotated while we looked.
            if seen.contains(&tail.id) {
                continue;
            }
            seen.push(tail.id);
            stats.files += 1;
            let file = tail.reader.get_ref();
            let end = file.metadata().map_err(|e| LogError::read(&path, e))?.len();
            let mut rev = RevLines::new(file, end);
            if scan_back(&mut rev, &path, &matcher, &mut stats, &mut found, backlog)? {
                break;
            }
        }
    }

    let mut emitted = 0u64;
    let mut send = |r: EventRecord| {
        emitted += 1;
        sink(&r).map_err(|source| LogError::Output { source })
    };
    for r in found.into_iter().rev() {
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
                    .is_some_and(|t| t.id == id && meta.len() < t.reader.position());
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

/// An open log file being read.
struct Tail {
    path: PathBuf,
    id: FileId,
    reader: LineReader<File>,
}

/// Opens `path` for reading; `None` if it does not exist.
fn open_tail(path: &Path) -> Result<Option<Tail>, LogError> {
    let Some((file, meta)) = open_existing(path)? else {
        return Ok(None);
    };
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
mod tests;
