//! One daemon per pin directory and per target: an exclusive `flock` on the directory,
//! released by the kernel when the holder exits however it exits. The holder is found in
//! `/proc/locks` to name it in the refusal.

use std::{
    io,
    os::fd::{AsRawFd as _, OwnedFd},
    path::Path,
};

/// An exclusive lock on a directory, held while this value lives.
#[derive(Debug)]
pub struct DirLock {
    /// The locked descriptor (closing it releases the lock).
    fd: OwnedFd,
}

impl DirLock {
    /// The locked directory's descriptor.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }
}

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("held by {}", holder_text(*pid))]
    Held {
        /// The holder, when `/proc/locks` names it.
        pid: Option<u32>,
    },
    /// `flock` failed otherwise.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// `pid N` (with its name when known) or a note that the holder is unknown.
pub fn holder_text(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let comm = comm.trim();
            if comm.is_empty() {
                format!("pid {pid}")
            } else {
                format!("pid {pid}, {comm}")
            }
        }
        None => "holder unknown".to_owned(),
    }
}

/// Takes an exclusive, non-blocking `flock` on `fd`, the directory `path`.
pub fn lock_dir(fd: OwnedFd, path: &Path) -> Result<DirLock, LockError> {
    // SAFETY: valid descriptor.
    if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(DirLock { fd });
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
        return Err(LockError::Io(e));
    }
    let pid = std::fs::metadata(path).ok().and_then(|m| {
        use std::os::unix::fs::MetadataExt as _;
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        flock_holder(&locks, m.dev(), m.ino())
    });
    Err(LockError::Held { pid })
}

/// The pid holding a `FLOCK` on inode `ino` of device `dev`, from `/proc/locks` text.
fn flock_holder(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // `1: FLOCK  ADVISORY  WRITE 4242 00:2a:1234 0 EOF`; waiters carry a `->` field.
        if fields.get(1) != Some(&"FLOCK") {
            return None;
        }
        let pid: u32 = fields.get(4)?.parse().ok()?;
        let mut id = fields.get(5)?.split(':');
        let maj = u32::from_str_radix(id.next()?, 16).ok()?;
        let min = u32::from_str_radix(id.next()?, 16).ok()?;
        let i: u64 = id.next()?.parse().ok()?;
        (maj == major && min == minor && i == ino).then_some(pid)
    })
}

#[cfg(test)]
mod tests;
