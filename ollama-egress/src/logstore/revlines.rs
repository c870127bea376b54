//! Reading a log file's lines from its end backwards, for "the newest N" without reading the
//! whole log.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::lines::{MAX_LINE, ReadStatus};

/// Bytes read per step backwards.
const BLOCK: usize = 64 * 1024;

/// The lines of `file[..end]`, last first. Uses positioned reads (`pread`), so the file's
/// offset is left alone.
pub(super) struct RevLines<'f> {
    file: &'f File,
    /// File offset of `chunk[0]`.
    chunk_start: u64,
    /// Bytes `chunk_start..` of the region not yet returned.
    chunk: Vec<u8>,
    /// Inside a line longer than [`MAX_LINE`]: discard back to the newline before it.
    skipping: bool,
    /// Bytes read from the file.
    bytes: u64,
}

impl<'f> RevLines<'f> {
    /// Lines of `file[..end]`.
    pub(super) fn new(file: &'f File, end: u64) -> RevLines<'f> {
        RevLines {
            file,
            chunk_start: end,
            chunk: Vec::new(),
            skipping: false,
            bytes: 0,
        }
    }

    /// Bytes read from the file so far.
    pub(super) fn bytes_read(&self) -> u64 {
        self.bytes
    }

    /// Drops an unterminated last line (one being written), returning where the complete
    /// lines end: just past the last newline, or 0.
    pub(super) fn drop_partial_tail(&mut self) -> io::Result<u64> {
        loop {
            if let Some(i) = self.chunk.iter().rposition(|&b| b == b'\n') {
                self.chunk.truncate(i + 1);
                return Ok(self.chunk_start + i as u64 + 1);
            }
            if self.chunk_start == 0 {
                self.chunk.clear();
                return Ok(0);
            }
            // Keep only what is needed to find the newline: a partial line can be dropped.
            self.chunk.clear();
            self.load()?;
        }
    }

    /// Puts the previous line (without its newline) in `buf`: `Line`, `Overlong` (discarded,
    /// `buf` empty) or `Eof` when the start of the file is reached.
    pub(super) fn prev_line(&mut self, buf: &mut Vec<u8>) -> io::Result<ReadStatus> {
        buf.clear();
        loop {
            if let Some(i) = self.chunk.iter().rposition(|&b| b == b'\n') {
                let skipped =
                    std::mem::take(&mut self.skipping) || self.chunk.len() - i - 1 > MAX_LINE;
                if !skipped {
                    buf.extend_from_slice(&self.chunk[i + 1..]);
                }
                self.chunk.truncate(i);
                return Ok(if skipped {
                    ReadStatus::Overlong
                } else {
                    ReadStatus::Line
                });
            }
            if self.chunk_start == 0 {
                if self.skipping {
                    self.skipping = false;
                    self.chunk.clear();
                    return Ok(ReadStatus::Overlong);
                }
                if self.chunk.is_empty() {
                    return Ok(ReadStatus::Eof);
                }
                if self.chunk.len() > MAX_LINE {
                    self.chunk.clear();
                    return Ok(ReadStatus::Overlong);
                }
                buf.append(&mut self.chunk);
                return Ok(ReadStatus::Line);
            }
            if self.chunk.len() > MAX_LINE {
                self.skipping = true;
                self.chunk.clear();
            }
            self.load()?;
        }
    }

    /// Prepends the block before `chunk_start` to `chunk`.
    fn load(&mut self) -> io::Result<()> {
        let len = BLOCK.min(usize::try_from(self.chunk_start).unwrap_or(BLOCK));
        let start = self.chunk_start - len as u64;
        let mut block = vec![0; len + self.chunk.len()];
        let mut filled = 0;
        while filled < len {
            match self
                .file
                .read_at(&mut block[filled..len], start + filled as u64)
            {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "log file shrank while being read",
                    ));
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        block[len..].copy_from_slice(&self.chunk);
        self.chunk = block;
        self.chunk_start = start;
        self.bytes += len as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
