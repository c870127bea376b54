//! Reading log files: bounded lines forwards ([`LineReader`]), the identity of a file across
//! renames ([`FileId`]), opening a file that may have been rotated away ([`open_existing`]) and
//! the log directory check ([`check_dir`]). [`super::revlines`] reads lines backwards with the
//! same limit.

use std::fs::{self, File, Metadata};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::LogError;

/// Lines longer than this are skipped as malformed (a record is a few hundred bytes).
pub(super) const MAX_LINE: usize = 64 * 1024;

/// Read buffer size.
const BUF_SIZE: usize = 256 * 1024;

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

/// Opens `path` for reading with its metadata; `None` if it does not exist (rotated away).
pub(super) fn open_existing(path: &Path) -> Result<Option<(File, Metadata)>, LogError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::read(path, e)),
    };
    let meta = file.metadata().map_err(|e| LogError::read(path, e))?;
    Ok(Some((file, meta)))
}

/// [`LogError::NoLogDir`] when `dir` does not exist.
pub(crate) fn check_dir(dir: &Path) -> Result<(), LogError> {
    match fs::metadata(dir) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(LogError::NoLogDir {
            path: dir.to_path_buf(),
        }),
        Err(e) => Err(LogError::read(dir, e)),
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
