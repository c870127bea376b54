//! Reading the daemon's inputs and writing its files without trusting the file system: inputs
//! must be regular files of a bounded size that do not change while read; written files are
//! created with `O_NOFOLLOW | O_EXCL`, their mode set on the descriptor, and renamed into place.

use std::{
    fs,
    io::{self, Read as _, Write as _},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

/// Largest policy file read: 16 MiB. A policy is a few kilobytes; its country and ASN rules
/// expand in the daemon, not in the file.
pub const MAX_POLICY_BYTES: u64 = 16 << 20;
/// Largest geo database accepted: 1 GiB (GeoLite2-City is about 70 MB).
pub const MAX_GEO_BYTES: u64 = 1 << 30;

/// Why an input file was not read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Opening or reading failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// It is a FIFO, a device, a directory or a socket.
    #[error("it is not a regular file ({0})")]
    NotRegular(&'static str),
    /// It is larger than the cap.
    #[error("it is larger than {cap} bytes ({size} bytes)")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// It is empty.
    #[error("it is empty (an editor may still be writing it)")]
    Empty,
    /// It changed while it was read.
    #[error("it changed while it was read (an editor may still be writing it)")]
    Changed,
    /// Someone other than root may write it.
    #[error("{0}")]
    Untrusted(String),
}

impl InputError {
    /// As an `io::Error` (for error types that carry one), keeping a missing file `NotFound`.
    pub fn into_io(self) -> io::Error {
        match self {
            InputError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }
    }
}

fn kind_name(ft: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Opens `path` for reading without blocking on a FIFO (symlinks are followed: the target is
/// what is checked) and checks that it is a regular file of at most `cap` bytes.
pub fn open_regular(path: &Path, cap: u64) -> Result<(fs::File, fs::Metadata), InputError> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.file_type().is_file() {
        return Err(InputError::NotRegular(kind_name(meta.file_type())));
    }
    if meta.len() > cap {
        return Err(InputError::TooLarge {
            size: meta.len(),
            cap,
        });
    }
    Ok((f, meta))
}

fn same_version(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    (a.dev(), a.ino(), a.len(), a.mtime(), a.mtime_nsec())
        == (b.dev(), b.ino(), b.len(), b.mtime(), b.mtime_nsec())
}

/// Reads a whole regular file of at most `cap` bytes that is not empty and does not change
/// while it is read (same inode, size and mtime before and after, and still the file at
/// `path`).
pub fn read_stable(path: &Path, cap: u64) -> Result<Vec<u8>, InputError> {
    let (f, before) = open_regular(path, cap)?;
    let mut buf = Vec::with_capacity(usize::try_from(before.len()).unwrap_or(0));
    f.take(cap + 1).read_to_end(&mut buf)?;
    let after = fs::metadata(path)?;
    if buf.len() as u64 > cap {
        return Err(InputError::TooLarge {
            size: buf.len() as u64,
            cap,
        });
    }
    if !same_version(&before, &after) || buf.len() as u64 != before.len() {
        return Err(InputError::Changed);
    }
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Err(InputError::Empty);
    }
    Ok(buf)
}

/// Refuses a file that someone other than root (or this process's user) owns or that anyone
/// may write to: its content decides what the daemon enforces.
pub fn check_trusted(meta: &fs::Metadata) -> Result<(), InputError> {
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(InputError::Untrusted(format!(
            "it is owned by uid {}, not by root",
            meta.uid()
        )));
    }
    if meta.mode() & 0o002 != 0 {
        return Err(InputError::Untrusted(format!(
            "anyone may write to it (mode {:04o})",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Writes `bytes` to `dir/name` atomically with mode `mode`: a fresh temporary file (any
/// leftover, symlink or not, is removed first, never followed), the mode set on the
/// descriptor, synced, then renamed over `name` (rename replaces a symlink, it does not write
/// through it).
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp: PathBuf = dir.join(format!(".{name}.tmp"));
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&tmp)?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(name))
}

/// Reads `dir/name` if it is a regular file (not followed through a symlink) of at most `cap`
/// bytes; `None` when there is none.
pub fn read_own(dir: &Path, name: &str, cap: u64) -> io::Result<Option<Vec<u8>>> {
    let path = dir.join(name);
    let f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a regular file", path.display()),
        ));
    }
    let mut buf = Vec::new();
    f.take(cap).read_to_end(&mut buf)?;
    Ok(Some(buf))
}

#[cfg(test)]
mod tests;
