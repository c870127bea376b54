//! A database file mapped read-only into memory, instead of copied into the heap.
//!
//! Only the pages a lookup or an expansion touches are read in, and they are page cache the
//! kernel may drop and read again: the resident cost of a database is what is used, not its
//! size.
//!
//! A mapped file that is truncated underneath is `SIGBUS` on the next access past the new end,
//! so the file is mapped only after it was checked (a regular file, within the size cap, the
//! same inode and size before and after the mapping), and this project never writes a database
//! in place: `geo update` writes a new file and renames it over the old one, which leaves the
//! mapped inode untouched until the daemon drops it. The remaining risk is a privileged process
//! truncating the installed file in place (`truncate`, `cp` over it); copying the file into
//! private memory would avoid it at the cost this module removes.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;
use std::ptr::NonNull;
use std::sync::Arc;

/// A read-only, private mapping of a whole file; clones share it, the last one unmaps it.
#[derive(Clone)]
pub struct Mapped(Arc<Region>);

struct Region {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value; sharing `&[u8]` views of it
// between threads is like sharing a `Vec<u8>`.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Mapped {
    /// Maps all `len` bytes of `file` (its size when it was checked); an empty file is an
    /// error (`InvalidData`), as is a file whose size is no longer `len` once mapped.
    pub fn map(file: &File, len: u64) -> io::Result<Mapped> {
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::FileTooLarge))?;
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "it is empty"));
        }
        // SAFETY: a fresh mapping chosen by the kernel (addr null), of a descriptor we hold;
        // the result is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mapped = Mapped(Arc::new(Region {
            ptr: NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?,
            len,
        }));
        if file.metadata()?.len() != len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "it changed while it was mapped (a writer may still be writing it)",
            ));
        }
        Ok(mapped)
    }

    /// Drops this process's view of the pages read so far (after a walk of the whole tree):
    /// they stay in the page cache, and the next access finds them there, but they no longer
    /// count as this process's resident memory. The mapping stays valid.
    pub fn release(&self) {
        // SAFETY: advice on our own read-only mapping; MADV_DONTNEED on a private file mapping
        // with no written pages only unmaps pages, which fault back in from the file.
        unsafe {
            libc::madvise(self.0.ptr.as_ptr().cast(), self.0.len, libc::MADV_DONTNEED);
        }
    }
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until `drop`.
        unsafe { std::slice::from_raw_parts(self.0.ptr.as_ptr(), self.0.len) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests;
