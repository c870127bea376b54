//! [`Filter`] and [`query`]: one streaming pass over the rotated log files, oldest first.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use time::OffsetDateTime;

use super::prefilter::Prefilter;
use super::revlines::RevLines;
use super::writer::rotated_files;
use super::{EVENTS_FILE, EventRecord, LogError, Verdict};

/// Which records a query returns. Every field left `None` matches everything; the fields that
/// are set must all match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this verdict.
    pub verdict: Option<Verdict>,
    /// Only records at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only records at or before this time.
    pub until: Option<OffsetDateTime>,
    /// Only this ISO 3166 alpha-2 country, compared case-insensitively; records without a
    /// country never match.
    pub country: Option<String>,
    /// Only destinations inside this network. An IPv4-mapped IPv6 destination
    /// (`::ffff:a.b.c.d`) matches an IPv4 network holding `a.b.c.d`, and an IPv4 destination
    /// matches an IPv6 network holding its mapped form.
    pub dst: Option<IpNet>,
    /// Only this destination port.
    pub port: Option<u16>,
    /// Only this command name (exact).
    pub comm: Option<String>,
    /// Only this rule id; a trailing `*` makes it a prefix (`deny.*`, `deny.countries:*`).
    pub rule: Option<String>,
    /// Return only the newest N matches (still printed oldest first). Not part of
    /// [`matches`](Self::matches).
    pub limit: Option<usize>,
}

impl Filter {
    /// True when `r` passes every criterion that is set (`limit` aside).
    pub fn matches(&self, r: &EventRecord) -> bool {
        self.verdict.is_none_or(|v| v == r.verdict)
            && self.since.is_none_or(|t| r.ts >= t)
            && self.until.is_none_or(|t| r.ts <= t)
            && self.port.is_none_or(|p| p == r.dport)
            && self.comm.as_deref().is_none_or(|c| c == r.comm)
            && self.dst.as_ref().is_none_or(|net| net_contains(net, r.dst))
            && self.country.as_deref().is_none_or(|c| {
                r.country
                    .as_deref()
                    .is_some_and(|rc| rc.eq_ignore_ascii_case(c))
            })
            && self
                .rule
                .as_deref()
                .is_none_or(|want| match want.strip_suffix('*') {
                    Some(prefix) => r.rule.starts_with(prefix),
                    None => r.rule == want,
                })
    }
}

/// `net` holds `ip`, also across the IPv4-mapped IPv6 form.
pub(super) fn net_contains(net: &IpNet, ip: IpAddr) -> bool {
    if net.contains(&ip) {
        return true;
    }
    match (net, ip) {
        (IpNet::V4(net), IpAddr::V6(v6)) => v6.to_ipv4_mapped().is_some_and(|v4| net.contains(&v4)),
        (IpNet::V6(net), IpAddr::V4(v4)) => net.contains(&v4.to_ipv6_mapped()),
        _ => false,
    }
}

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

/// Lines longer than this are skipped as malformed (a record is a few hundred bytes).
pub(super) const MAX_LINE: usize = 64 * 1024;

/// Read buffer size.
const BUF_SIZE: usize = 256 * 1024;

/// The log files of `dir` oldest first: `events.jsonl.N` … `events.jsonl.1`, `events.jsonl`.
///
/// Errors: [`LogError::NoLogDir`] when `dir` does not exist, [`LogError::NoLog`] when it holds
/// none of them.
pub fn log_files(dir: &Path) -> Result<Vec<PathBuf>, LogError> {
    super::follow::check_dir(dir)?;
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
    let mut buf = Vec::with_capacity(1024);
    for path in &files {
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
            if let Some(record) = matcher.process(&buf, status, &mut stats) {
                emit(&record, &mut stats)?;
            }
            if status == ReadStatus::Eof {
                break;
            }
        }
        stats.bytes += lines.bytes_read();
    }
    Ok(stats)
}

/// Opens `path` unless it is missing or is a file already in `seen` (by identity).
fn open_once(
    path: &Path,
    seen: &mut Vec<FileId>,
) -> Result<Option<(File, std::fs::Metadata)>, LogError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::read(path, e)),
    };
    let meta = file.metadata().map_err(|e| LogError::read(path, e))?;
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

/// Identity of a file: a rotation shows as a new inode under the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub(super) fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
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

/// What [`LineReader::read_line`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadStatus {
    /// A whole line (newline stripped) is in the buffer.
    Line,
    /// A line longer than the limit was consumed and discarded; the buffer is empty.
    Overlong,
    /// End of file; the buffer holds what there was of an unterminated last line (maybe
    /// nothing). Calling again later continues that line if the file grew.
    Eof,
}

/// Reads lines of bounded length from a file, keeping its place across end of file.
pub(super) struct LineReader<R> {
    inner: BufReader<R>,
    /// Inside an overlong line: discard up to its newline.
    skipping: bool,
    /// File offset of the next byte to consume.
    pos: u64,
    /// Where reading started.
    start: u64,
    scratch: Vec<u8>,
}

impl<R: Read + Seek> LineReader<R> {
    /// Continues reading at file offset `pos` (the start of a line), dropping what is
    /// buffered.
    pub(super) fn seek_to(&mut self, pos: u64) -> io::Result<()> {
        self.inner.seek(SeekFrom::Start(pos))?;
        self.pos = pos;
        self.start = pos;
        self.skipping = false;
        Ok(())
    }
}

impl<R: Read> LineReader<R> {
    pub(super) fn new(inner: R) -> LineReader<R> {
        LineReader {
            inner: BufReader::with_capacity(BUF_SIZE, inner),
            skipping: false,
            pos: 0,
            start: 0,
            scratch: Vec::new(),
        }
    }

    /// Bytes consumed so far.
    pub(super) fn bytes_read(&self) -> u64 {
        self.pos - self.start
    }

    /// File offset of the next byte to consume.
    pub(super) fn position(&self) -> u64 {
        self.pos
    }

    /// The underlying reader; reading from it directly would lose the place.
    pub(super) fn get_ref(&self) -> &R {
        self.inner.get_ref()
    }

    /// Appends to `buf` up to the next newline. `buf` must hold only what earlier `Eof` results
    /// left in it.
    pub(super) fn read_line(&mut self, buf: &mut Vec<u8>) -> io::Result<ReadStatus> {
        loop {
            if self.skipping {
                self.scratch.clear();
                let n = (&mut self.inner)
                    .take(BUF_SIZE as u64)
                    .read_until(b'\n', &mut self.scratch)?;
                self.pos += n as u64;
                if n == 0 {
                    // The overlong line ends at the end of the file, unterminated: it still
                    // counts as one (skipped) line; the next call reports the end.
                    self.skipping = false;
                    return Ok(ReadStatus::Overlong);
                }
                if self.scratch.last() == Some(&b'\n') {
                    self.skipping = false;
                    return Ok(ReadStatus::Overlong);
                }
                continue;
            }
            let room = (MAX_LINE + 1).saturating_sub(buf.len()) as u64;
            let n = (&mut self.inner).take(room).read_until(b'\n', buf)?;
            self.pos += n as u64;
            if buf.last() == Some(&b'\n') {
                buf.pop();
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
                return Ok(ReadStatus::Line);
            }
            if buf.len() > MAX_LINE {
                buf.clear();
                self.skipping = true;
                continue;
            }
            // read_until stops short of the limit without a newline only at end of file.
            return Ok(ReadStatus::Eof);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "query_tests.rs"]
mod tests;
