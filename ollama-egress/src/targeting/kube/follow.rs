//! Waking when pods come and go on this node: an inotify watch on the directories kubelet
//! makes pod cgroups in (both drivers' QoS levels), with a periodic wake-up as the backstop
//! (nested layouts, a QoS level made later, the API's view changing without a cgroup change).
//!
//! The API is not watched (`watch=1`): kubelet makes a pod's cgroup before its containers
//! start, so the cgroup's appearance is the moment to look, and one list per appearance is
//! cheaper for the API server than a watch per node held open.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::io::unix::AsyncFd;

use super::layout::pod_parent_dirs;

/// The longest the daemon goes without listing the pods again.
pub const RELIST_INTERVAL: Duration = Duration::from_secs(10);

/// Events that follow a first one within this time are taken with it (kubelet makes a pod's
/// cgroup, then its QoS level's bookkeeping, in a burst).
const SETTLE: Duration = Duration::from_millis(20);

/// Wakes when a directory appears or goes in a pod cgroup parent, or after [`RELIST_INTERVAL`].
pub struct PodDirWatch {
    mount: PathBuf,
    inotify: Option<AsyncFd<OwnedFd>>,
    watched: Vec<PathBuf>,
    interval: Duration,
    next: tokio::time::Instant,
}

impl PodDirWatch {
    /// Watches the pod cgroup parents under `mount` (the mount itself while kubelet has made
    /// none). Without inotify it only wakes periodically; that is logged, not an error.
    pub fn new(mount: &Path) -> Self {
        Self::with_interval(mount, RELIST_INTERVAL)
    }

    /// The same, waking at least every `interval`.
    pub fn with_interval(mount: &Path, interval: Duration) -> Self {
        let inotify = match init() {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!(
                    "cannot watch for pod cgroups ({e}); listing the pods every {} s",
                    interval.as_secs()
                );
                None
            }
        };
        let mut w = Self {
            mount: mount.to_owned(),
            inotify,
            watched: Vec::new(),
            interval,
            next: tokio::time::Instant::now() + interval,
        };
        w.arm();
        w
    }

    /// The directories watched now.
    pub fn watched(&self) -> &[PathBuf] {
        &self.watched
    }

    /// Adds watches for the parents that exist now (watching one twice is harmless).
    fn arm(&mut self) {
        let Some(fd) = &self.inotify else { return };
        let mut dirs = pod_parent_dirs(&self.mount);
        if dirs.is_empty() {
            dirs.push(self.mount.clone());
        }
        for dir in dirs {
            if self.watched.contains(&dir) {
                continue;
            }
            match add_watch(fd.get_ref(), &dir) {
                Ok(()) => self.watched.push(dir),
                Err(e) => tracing::debug!(dir = %dir.display(), "cannot watch: {e}"),
            }
        }
    }

    /// Returns when a pod cgroup may have come or gone, or after the interval.
    pub async fn wait(&mut self) {
        self.wait_event().await;
        self.arm();
        self.next = tokio::time::Instant::now() + self.interval;
    }

    async fn wait_event(&mut self) {
        let deadline = self.next;
        let Some(fd) = &self.inotify else {
            tokio::time::sleep_until(deadline).await;
            return;
        };
        loop {
            let Ok(Ok(mut guard)) = tokio::time::timeout_at(deadline, fd.readable()).await else {
                return;
            };
            let mut buf = [0u8; 4096];
            // SAFETY: reading into a buffer we own from a non-blocking descriptor we own.
            let n =
                unsafe { libc::read(fd.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    guard.clear_ready();
                    continue;
                }
                tracing::warn!("reading the pod cgroup watch failed: {e}");
                self.inotify = None;
                return;
            }
            tokio::time::sleep(SETTLE).await;
            // Drain what came meanwhile.
            // SAFETY: as above.
            while unsafe {
                libc::read(fd.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
            } > 0
            {}
            guard.clear_ready();
            return;
        }
    }
}

fn init() -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: plain syscall; the descriptor returned is owned below.
    let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: the `OwnedFd` keeps the descriptor open, and it always returns the same one, for
    // as long as the `AsyncFd` lives.
    unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)
}

fn add_watch(fd: &OwnedFd, dir: &Path) -> io::Result<()> {
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: valid descriptor and NUL-terminated path.
    let wd = unsafe {
        libc::inotify_add_watch(
            fd.as_raw_fd(),
            c.as_ptr(),
            libc::IN_CREATE
                | libc::IN_DELETE
                | libc::IN_MOVED_TO
                | libc::IN_MOVED_FROM
                | libc::IN_ONLYDIR,
        )
    };
    if wd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
