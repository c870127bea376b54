//! [`LogWriter`]: appends records to `events.jsonl` and rotates it by size.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::record::json;
use super::{EVENTS_FILE, EventRecord, LogError};

/// Default size at which `events.jsonl` is rotated: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Default number of rotated files kept (`events.jsonl.1` … `events.jsonl.8`); with the default
/// size the log takes at most 9 × 64 MiB = 576 MiB.
pub const DEFAULT_MAX_FILES: usize = 8;

/// Mode of a log directory the writer creates.
const DIR_MODE: u32 = 0o750;
/// Mode of a log file the writer creates.
const FILE_MODE: u32 = 0o640;

/// When and how far the log rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotateOptions {
    /// Rotate when appending a record would make `events.jsonl` larger than this many bytes
    /// (default [`DEFAULT_MAX_BYTES`], 64 MiB). A single record larger than this is still
    /// written, alone in its file.
    pub max_bytes: u64,
    /// Rotated files to keep (default [`DEFAULT_MAX_FILES`], 8); the oldest beyond this are
    /// deleted. 0 keeps none: the active file starts over.
    pub max_files: usize,
}

impl Default for RotateOptions {
    fn default() -> Self {
        RotateOptions {
            max_bytes: DEFAULT_MAX_BYTES,
            max_files: DEFAULT_MAX_FILES,
        }
    }
}

/// Appends [`EventRecord`]s to `<dir>/events.jsonl`, one JSON object per line.
///
/// [`write`](Self::write) puts each record out in a single `write(2)` on an `O_APPEND`
/// descriptor; [`stage`](Self::stage) collects records and [`commit`](Self::commit) (or
/// [`flush`](Self::flush), or a full batch of [`BATCH_BYTES`]) puts them out together, whole
/// lines only, in one `write(2)`: the daemon stages a ring-buffer drain and commits it at its
/// end. What is staged and not committed is committed on drop. A failed write or rotation
/// (disk full, permissions) returns an error, counts the records in [`dropped`](Self::dropped)
/// and leaves the writer usable: the next commit tries again. Not meant for several writers on
/// one directory at once.
#[derive(Debug)]
pub struct LogWriter {
    dir: PathBuf,
    path: PathBuf,
    opts: RotateOptions,
    /// `None` after a failed (re)open; reopened on the next write.
    file: Option<File>,
    /// Bytes in the active file, as far as this writer knows.
    size: u64,
    /// A failed write may have left part of a line behind; start the next with a newline.
    broken_line: bool,
    written: u64,
    dropped: u64,
    /// Staged lines, not yet written.
    pending: Vec<u8>,
    /// How many records `pending` holds.
    pending_records: u64,
}

/// Staged bytes at which [`LogWriter::stage`] commits by itself.
pub const BATCH_BYTES: usize = 256 << 10;

/// Appends `record` to `out` as one JSON line, newline included: the line format of
/// `events.jsonl` (and of `run --log-stdout`).
///
/// Terminal controls and bidi overrides from data (a process sets its own comm) are written as
/// \uXXXX: `cat`/`tail -f` of the log cannot be made to rewrite a screen.
pub fn encode_line(record: &EventRecord, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let start = out.len();
    let text = match json::write(record, out) {
        Some(text) => text,
        None => {
            serde_json::to_writer(&mut *out, record)?;
            json::Text::Other
        }
    };
    if text == json::Text::Other
        && !crate::terminal::is_printable_ascii(&out[start..])
        && let Ok(text) = std::str::from_utf8(&out[start..])
        && let std::borrow::Cow::Owned(escaped) = crate::terminal::escape_json(text)
    {
        out.truncate(start);
        out.extend_from_slice(escaped.as_bytes());
    }
    out.push(b'\n');
    Ok(())
}

impl LogWriter {
    /// Opens `<dir>/events.jsonl` for appending, creating `dir` (mode 0750) and the file
    /// (mode 0640) when missing. Existing directories and files keep their permissions.
    pub fn open(dir: &Path, opts: RotateOptions) -> Result<LogWriter, LogError> {
        create_dir(dir)?;
        let path = dir.join(EVENTS_FILE);
        let mut writer = LogWriter {
            dir: dir.to_path_buf(),
            path,
            opts,
            file: None,
            size: 0,
            broken_line: false,
            written: 0,
            dropped: 0,
            pending: Vec::with_capacity(16 << 10),
            pending_records: 0,
        };
        writer.reopen()?;
        Ok(writer)
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The active log file, `<dir>/events.jsonl`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records written since [`open`](Self::open).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Records dropped because writing or rotating failed, since [`open`](Self::open).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Appends one record as one line, rotating first if the line would not fit.
    ///
    /// On error the record is not in the log (at most a fragment, which readers skip as a
    /// malformed line), [`dropped`](Self::dropped) counts it, and the writer stays usable.
    pub fn write(&mut self, record: &EventRecord) -> Result<(), LogError> {
        self.stage(record)?;
        self.commit()
    }

    /// Adds one record to the batch, committing the batch first and rotating when the record
    /// would not fit in the active file, and committing when the batch reaches
    /// [`BATCH_BYTES`]. Errors are those of [`write`](Self::write).
    pub fn stage(&mut self, record: &EventRecord) -> Result<(), LogError> {
        let start = self.pending.len();
        if let Err(source) = encode_line(record, &mut self.pending) {
            self.pending.truncate(start);
            self.dropped += 1;
            return Err(LogError::Encode {
                path: self.path.clone(),
                source,
            });
        }
        let before = self.size.saturating_add(start as u64);
        if before > 0 && self.size.saturating_add(self.pending.len() as u64) > self.opts.max_bytes {
            let line = self.pending.split_off(start);
            let committed = self.commit();
            if let Err(e) = self.rotate() {
                self.dropped += 1;
                return Err(e);
            }
            // A fresh file needs no newline to close a fragment.
            self.broken_line = false;
            self.pending.extend_from_slice(&line);
            self.pending_records += 1;
            return committed;
        }
        self.pending_records += 1;
        if self.pending.len() >= BATCH_BYTES {
            return self.commit();
        }
        Ok(())
    }

    /// Writes the staged records in one `write(2)`; on error none of them is in the log (at
    /// most a fragment) and [`dropped`](Self::dropped) counts them all.
    pub fn commit(&mut self) -> Result<(), LogError> {
        if self.pending_records == 0 {
            return Ok(());
        }
        let n = std::mem::take(&mut self.pending_records);
        let result = self.write_pending();
        self.pending.clear();
        match result {
            Ok(()) => self.written += n,
            Err(_) => self.dropped += n,
        }
        result
    }

    /// Commits the staged records and flushes the active file. Records are not buffered in
    /// user space past this, so the flush only reports an error the OS has kept for the file;
    /// it does not `fsync`.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.commit()?;
        match &mut self.file {
            Some(file) => file.flush().map_err(|source| LogError::Write {
                path: self.path.clone(),
                source,
            }),
            None => Ok(()),
        }
    }

    fn write_pending(&mut self) -> Result<(), LogError> {
        if self.broken_line {
            self.pending.insert(0, b'\n');
        }
        if self.file.is_none() {
            self.reopen()?;
        }
        let Some(file) = self.file.as_mut() else {
            // reopen() either sets the file or fails.
            return Err(LogError::Write {
                path: self.path.clone(),
                source: io::Error::other("log file not open"),
            });
        };
        match file.write_all(&self.pending) {
            Ok(()) => {
                self.size += self.pending.len() as u64;
                self.broken_line = false;
                Ok(())
            }
            Err(source) => {
                // Cut a partial batch off again; if that fails too, the next batch starts with
                // a newline so the fragment stays a line of its own.
                match file.set_len(self.size) {
                    Ok(()) => {}
                    Err(_) => self.broken_line = true,
                }
                // The real size is unknown after a partial write; re-read it on the next write.
                if let Ok(meta) = file.metadata() {
                    self.size = meta.len();
                    self.broken_line = self.size > 0 && self.broken_line;
                } else {
                    self.file = None;
                }
                Err(LogError::Write {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// (Re)opens the active file for appending and learns its size.
    fn reopen(&mut self) -> Result<(), LogError> {
        self.file = None;
        let file = open_append(&self.path)?;
        let size = file
            .metadata()
            .map_err(|source| LogError::Open {
                path: self.path.clone(),
                source,
            })?
            .len();
        self.size = size;
        self.file = Some(file);
        Ok(())
    }

    /// `events.jsonl.(max_files-1)` → `.max_files` … `events.jsonl` → `.1`, deleting what falls
    /// off the end, then opens a new `events.jsonl`.
    fn rotate(&mut self) -> Result<(), LogError> {
        let max = self.opts.max_files;
        // Delete everything at or beyond the last slot, including leftovers of a larger
        // max_files in an earlier run.
        let present = rotated_files(&self.dir).map_err(|e| match e {
            LogError::Read { path, source } => LogError::Rotate { path, source },
            other => other,
        })?;
        for (n, path) in present {
            if n >= max.max(1) {
                remove_if_exists(&path)?;
            }
        }
        if max == 0 {
            remove_if_exists(&self.path)?;
        } else {
            for n in (1..max).rev() {
                rename_if_exists(
                    &rotated_path(&self.path, n),
                    &rotated_path(&self.path, n + 1),
                )?;
            }
            rename_if_exists(&self.path, &rotated_path(&self.path, 1))?;
        }
        self.file = None;
        self.size = 0;
        self.reopen()
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if let Err(e) = self.commit() {
            tracing::warn!("events lost when the log closed: {e}");
        }
    }
}

/// `events.jsonl.N`.
fn rotated_path(active: &Path, n: usize) -> PathBuf {
    let mut name = active.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The rotated files present in `dir`, as `(N, path)`, unordered.
pub(super) fn rotated_files(dir: &Path) -> Result<Vec<(usize, PathBuf)>, LogError> {
    let entries = fs::read_dir(dir).map_err(|e| LogError::read(dir, e))?;
    let prefix = format!("{EVENTS_FILE}.");
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LogError::read(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(suffix) = name.strip_prefix(&prefix) else {
            continue;
        };
        // Only plain decimal suffixes: not "events.jsonl.1.gz" or "events.jsonl.+1".
        if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(n) = suffix.parse::<usize>()
            && n > 0
        {
            out.push((n, entry.path()));
        }
    }
    Ok(out)
}

fn remove_if_exists(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LogError::Rotate {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> Result<(), LogError> {
    match fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LogError::Rotate {
            path: from.to_path_buf(),
            source,
        }),
    }
}

/// Creates `dir` and missing parents; a directory this call creates gets exactly 0750. Then
/// checks that `dir` is this user's and closed to writers other than its owner and group, and
/// that no directory above it lets others swap it (each is root's or this user's, and
/// writable by others only when sticky, as /tmp is).
fn create_dir(dir: &Path) -> Result<(), LogError> {
    let err = |source| LogError::CreateDir {
        path: dir.to_path_buf(),
        source,
    };
    if !dir.is_dir() {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(err)?;
        }
        match DirBuilder::new().mode(DIR_MODE).create(dir) {
            // The umask may have taken bits away; set them as documented.
            Ok(()) => {
                fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(err)?
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(err(e)),
        }
    }
    check_dir(dir)
}

/// See [`create_dir`].
fn check_dir(dir: &Path) -> Result<(), LogError> {
    use std::os::unix::fs::MetadataExt as _;
    let euid = nix::unistd::geteuid().as_raw();
    let canon = dir.canonicalize().map_err(|source| LogError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let refuse = |path: &Path, problem: String| LogError::Unsafe {
        path: path.to_path_buf(),
        problem,
    };
    let meta = fs::metadata(&canon).map_err(|source| LogError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    if meta.uid() != euid {
        return Err(refuse(
            dir,
            format!(
                "the log directory is owned by uid {}, not by uid {euid} that the daemon runs as: its owner could redirect the daemon's writes",
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o002 != 0 {
        return Err(refuse(
            dir,
            format!(
                "the log directory is writable by others (mode {:04o}); chmod o-w it",
                meta.mode() & 0o7777
            ),
        ));
    }
    for anc in canon.ancestors().skip(1) {
        let m = fs::metadata(anc).map_err(|source| LogError::CreateDir {
            path: anc.to_path_buf(),
            source,
        })?;
        let trusted = m.uid() == 0 || m.uid() == euid;
        let open = m.mode() & 0o022 != 0 && m.mode() & libc::S_ISVTX == 0;
        if !trusted || open {
            return Err(refuse(
                dir,
                format!(
                    "{} above it is owned by uid {} with mode {:04o}: someone else could replace the log directory",
                    anc.display(),
                    m.uid(),
                    m.mode() & 0o7777
                ),
            ));
        }
    }
    Ok(())
}

/// Opens `path` for appending without following a symlink and without waiting on a FIFO; it
/// must be a regular file. A file this call creates gets exactly 0640.
fn open_append(path: &Path) -> Result<File, LogError> {
    let err = |source| LogError::Open {
        path: path.to_path_buf(),
        source,
    };
    let open = |create_new: bool| {
        let mut o = OpenOptions::new();
        o.append(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
        if create_new {
            o.create_new(true);
        }
        o.open(path)
    };
    let file = match open(false) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => match open(true) {
            Ok(f) => {
                f.set_permissions(fs::Permissions::from_mode(FILE_MODE))
                    .map_err(err)?;
                f
            }
            // Lost a race with another creator: use theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => open(false).map_err(err)?,
            Err(e) => return Err(err(e)),
        },
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(LogError::Unsafe {
                path: path.to_path_buf(),
                problem: "it is a symlink".to_owned(),
            });
        }
        // A FIFO with no reader refuses a non-blocking writer.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return Err(LogError::Unsafe {
                path: path.to_path_buf(),
                problem: "it is not a regular file (a FIFO)".to_owned(),
            });
        }
        Err(e) => return Err(err(e)),
    };
    let meta = file.metadata().map_err(err)?;
    if !meta.file_type().is_file() {
        return Err(LogError::Unsafe {
            path: path.to_path_buf(),
            problem: "it is not a regular file".to_owned(),
        });
    }
    Ok(file)
}

#[cfg(test)]
mod tests;
