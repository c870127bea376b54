//! The sockets another process already has, by cookie: each descriptor that is a socket is
//! duplicated into this process with `pidfd_getfd(2)` (root: CAP_SYS_PTRACE) and asked for its
//! `SO_COOKIE`, the id the kernel programs see for the same socket.

use std::{
    fs, io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

/// Cookies of the sockets open in process `pid`. Descriptors closed meanwhile are skipped.
pub fn cookies(proc_root: &Path, pid: u32) -> io::Result<Vec<u64>> {
    let fd_dir = proc_root.join(pid.to_string()).join("fd");
    let mut fds = Vec::new();
    for e in fs::read_dir(&fd_dir)?.flatten() {
        let Ok(target) = fs::read_link(e.path()) else {
            continue;
        };
        if target.to_string_lossy().starts_with("socket:")
            && let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok())
        {
            fds.push(fd);
        }
    }
    if fds.is_empty() {
        return Ok(Vec::new());
    }
    let pid = i32::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: plain syscall; the descriptor returned is owned below.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    let mut out = Vec::with_capacity(fds.len());
    for fd in fds {
        // SAFETY: plain syscall; the duplicate returned is owned below.
        let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
        if dup < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EBADF) {
                continue; // closed meanwhile
            }
            return Err(e);
        }
        // SAFETY: a new descriptor nothing else owns.
        let dup = unsafe { OwnedFd::from_raw_fd(dup as i32) };
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        // SAFETY: `cookie` and `len` are valid for the call.
        let ret = unsafe {
            libc::getsockopt(
                dup.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_COOKIE,
                (&mut cookie as *mut u64).cast(),
                &mut len,
            )
        };
        if ret == 0 && cookie != 0 {
            out.push(cookie);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
