//! [`query`]: one streaming pass over the rotated log files, oldest first (or backwards from
//! the newest under a limit), and the [`Matcher`] that [`super::follow`] shares.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::filter::Filter;
use super::lines::{FileId, LineReader, ReadStatus, check_dir, open_existing};
use super::prefilter::Prefilter;
use super::revlines::RevLines;
use super::writer::rotated_files;
use super::{EVENTS_FILE, EventRecord, LogError};

/// What a query or follow went through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryStats {
    /// Log files read.
    pub files: usize,
    /// Bytes read.
    pub bytes: u64,
    /// Non-empty lines read.
    pub lines: u64,
    /// Lines skipped without parsing because a raw test proved they cannot match.
    pub prefiltered: u64,
    /// Lines that were not a valid record (or were too long), skipped. Lines the raw test
    /// rejected are not parsed, so not counted here even when malformed.
    pub malformed: u64,
    /// Records that matched the filter (under a limit, among the lines read: the backward scan
    /// stops early).
    pub matched: u64,
    /// Records handed to the sink (fewer than `matched` under a limit).
    pub emitted: u64,
    /// Under a limit: older matches exist than those handed to the sink.
    pub more: bool,
}

impl QueryStats {
    /// A line for stderr when lines were skipped, e.g. `skipped 3 malformed lines`.
    pub fn warning(&self) -> Option<String> {
        match self.malformed {
            0 => None,
            1 => Some("skipped 1 malformed line".to_owned()),
            n => Some(format!("skipped {n} malformed lines")),
        }
    }
}

/// The log files of `dir` oldest first: `events.jsonl.N` … `events.jsonl.1`, `events.jsonl`.
///
/// Errors: [`LogError::NoLogDir`] when `dir` does not exist, [`LogError::NoLog`] when it holds
/// none of them.
pub fn log_files(dir: &Path) -> Result<Vec<PathBuf>, LogError> {
    check_dir(dir)?;
    let mut rotated = rotated_files(dir)?;
    rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    let active = dir.join(EVENTS_FILE);
    if active.exists() {
        files.push(active);
    } else if files.is_empty() {
        return Err(LogError::NoLog { path: active });
    }
    Ok(files)
}

/// Streams the records of `dir` that match `filter` to `sink`, oldest first.
///
/// Without a limit it reads the rotated files and then `events.jsonl` forwards, line by line.
/// With `filter.limit = Some(n)` it reads them backwards from the newest line and stops after
/// the newest `n` matches, which reach the sink oldest first; [`QueryStats::more`] tells
/// whether older matches exist. Memory stays bounded by the limit whatever the log's size.
///
/// Malformed lines are skipped and counted in [`QueryStats::malformed`]. An error from the
/// sink stops the query and comes back as [`LogError::Output`]. A file that disappears
/// (rotated away) while the query runs is skipped; a file met twice under two names (rotated
/// while the query ran) is read once.
pub fn query<F>(dir: &Path, filter: &Filter, mut sink: F) -> Result<QueryStats, LogError>
where
    F: FnMut(&EventRecord) -> io::Result<()>,
{
    let files = log_files(dir)?;
    let matcher = Matcher::new(filter);
    let mut stats = QueryStats::default();
    let mut emit = |r: &EventRecord, stats: &mut QueryStats| {
        stats.emitted += 1;
        sink(r).map_err(|source| LogError::Output { source })
    };
    let mut seen = Vec::with_capacity(files.len());
    if let Some(n) = filter.limit {
        if n == 0 {
            return Ok(stats);
        }
        // One more than asked tells whether older matches exist.
        let want = n.saturating_add(1);
        let mut found = Vec::with_capacity(want.min(4096));
        for path in files.iter().rev() {
            let Some((file, meta)) = open_once(path, &mut seen)? else {
                continue;
            };
            stats.files += 1;
            let mut rev = RevLines::new(&file, meta.len());
            if scan_back(&mut rev, path, &matcher, &mut stats, &mut found, want)? {
                break;
            }
        }
        stats.more = found.len() > n;
        found.truncate(n);
        for r in found.iter().rev() {
            emit(r, &mut stats)?;
        }
        return Ok(stats);
    }
    forward(&files, &matcher, &mut stats, |r, _, stats| emit(r, stats))?;
    Ok(stats)
}

/// Streams every record of `dir` that matches `filter` to `sink` with its raw line, oldest
/// first, in one forward pass (`filter.limit` is ignored). For readers that need a field the
/// record does not keep; the same line reading, prefilter and counting as [`query`].
pub fn scan<F>(dir: &Path, filter: &Filter, mut sink: F) -> Result<QueryStats, LogError>
where
    F: FnMut(&EventRecord, &[u8]) -> io::Result<()>,
{
    let files = log_files(dir)?;
    let matcher = Matcher::new(filter);
    let mut stats = QueryStats::default();
    forward(&files, &matcher, &mut stats, |r, raw, stats| {
        stats.emitted += 1;
        sink(r, raw).map_err(|source| LogError::Output { source })
    })?;
    Ok(stats)
}

/// Reads `files` forwards, line by line, handing each matching record and its line to `emit`.
fn forward<F>(
    files: &[PathBuf],
    matcher: &Matcher<'_>,
    stats: &mut QueryStats,
    mut emit: F,
) -> Result<(), LogError>
where
    F: FnMut(&EventRecord, &[u8], &mut QueryStats) -> Result<(), LogError>,
{
    let mut seen = Vec::with_capacity(files.len());
    let mut buf = Vec::with_capacity(1024);
    for path in files {
        let Some((file, _)) = open_once(path, &mut seen)? else {
            continue;
        };
        stats.files += 1;
        let mut lines = LineReader::new(file);
        loop {
            buf.clear();
            let status = lines
                .read_line(&mut buf)
                .map_err(|e| LogError::read(path, e))?;
            if let Some(record) = matcher.process(&buf, status, stats) {
                emit(&record, &buf, stats)?;
            }
            if status == ReadStatus::Eof {
                break;
            }
        }
        stats.bytes += lines.bytes_read();
    }
    Ok(())
}

/// Opens `path` unless it is missing or is a file already in `seen` (by identity).
fn open_once(
    path: &Path,
    seen: &mut Vec<FileId>,
) -> Result<Option<(File, std::fs::Metadata)>, LogError> {
    let Some((file, meta)) = open_existing(path)? else {
        return Ok(None);
    };
    let id = FileId::of(&meta);
    if seen.contains(&id) {
        return Ok(None);
    }
    seen.push(id);
    Ok(Some((file, meta)))
}

/// Reads `rev` backwards, pushing matches to `found` (newest first) until it holds `want`.
/// True when it does.
pub(super) fn scan_back(
    rev: &mut RevLines<'_>,
    path: &Path,
    matcher: &Matcher<'_>,
    stats: &mut QueryStats,
    found: &mut Vec<EventRecord>,
    want: usize,
) -> Result<bool, LogError> {
    let mut buf = Vec::with_capacity(1024);
    while found.len() < want {
        let status = rev
            .prev_line(&mut buf)
            .map_err(|e| LogError::read(path, e))?;
        if status == ReadStatus::Eof {
            break;
        }
        if let Some(r) = matcher.process(&buf, status, stats) {
            found.push(r);
        }
    }
    stats.bytes += rev.bytes_read();
    Ok(found.len() >= want)
}

/// A [`Filter`] with its raw prefilter.
pub(super) struct Matcher<'f> {
    filter: &'f Filter,
    pre: Prefilter,
}

impl<'f> Matcher<'f> {
    pub(super) fn new(filter: &'f Filter) -> Matcher<'f> {
        Matcher {
            filter,
            pre: Prefilter::new(filter),
        }
    }

    /// Counts and judges one line as [`LineReader::read_line`] left it in `buf`; a partial
    /// line at end of file is judged too (the last line of a file may lack its newline).
    pub(super) fn process(
        &self,
        buf: &[u8],
        status: ReadStatus,
        stats: &mut QueryStats,
    ) -> Option<EventRecord> {
        match status {
            ReadStatus::Overlong => {
                stats.lines += 1;
                stats.malformed += 1;
                return None;
            }
            ReadStatus::Line | ReadStatus::Eof => {}
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        stats.lines += 1;
        // Validating UTF-8 first lets serde_json skip it (from_str is ~35% faster than
        // from_slice on these lines).
        let Ok(text) = std::str::from_utf8(buf) else {
            stats.malformed += 1;
            return None;
        };
        if !self.pre.may_match(text) {
            stats.prefiltered += 1;
            return None;
        }
        match serde_json::from_str::<EventRecord>(text) {
            Ok(r) if self.filter.matches(&r) => {
                stats.matched += 1;
                Some(r)
            }
            Ok(_) => None,
            Err(_) => {
                stats.malformed += 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests;
