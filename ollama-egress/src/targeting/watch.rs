//! Noticing at once that the target cgroup was made again: an inotify watch on its parent
//! directory for the creation of its name (or, for a container followed by name, of any
//! directory: a re-created container's has a new name), with a periodic wake-up as the backstop
//! (the parent itself may be replaced, or inotify may be unavailable).

use std::{
    ffi::{CString, OsStr, OsString},
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tokio::io::unix::AsyncFd;

/// The longest the daemon waits between two looks at the target's identity.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(500);

/// What woke a [`CgroupWatch`].
#[derive(Debug)]
pub struct Seen {
    /// The directories made in the target's parent (only the target's own name unless the
    /// watch takes any); empty for the periodic wake-up.
    pub created: Vec<OsString>,
    /// When the watch read them.
    pub at: Instant,
    /// The watch may have missed directories (there is none, or the parent was replaced and is
    /// watched again only now): look by other means.
    pub unwatched: bool,
}

/// Wakes when a directory of the target's name (or any directory) appears in its parent, or
/// after [`FOLLOW_INTERVAL`].
pub struct CgroupWatch {
    inotify: Option<AsyncFd<OwnedFd>>,
    parent: Option<PathBuf>,
    /// The inode of the parent watched: a parent removed and made again has another.
    parent_ino: Option<u64>,
    /// Whether failing to watch was logged already.
    warned: bool,
    name: OsString,
    /// Whether every new directory of the parent wakes it, not only the target's name.
    any: bool,
    /// When the periodic wake-up is due. Kept across calls: the daemon's loop drops an
    /// unfinished `wait` whenever another event comes first, and that must not postpone it.
    next: tokio::time::Instant,
}

impl CgroupWatch {
    /// Watches the parent of `cgroup`. Without inotify (or without a parent) it only wakes
    /// periodically; that is logged, not an error.
    pub fn new(cgroup: &Path) -> Self {
        let mut w = Self {
            inotify: None,
            parent: None,
            parent_ino: None,
            warned: false,
            name: OsString::new(),
            any: false,
            next: tokio::time::Instant::now() + FOLLOW_INTERVAL,
        };
        w.retarget(cgroup);
        w
    }

    /// Watches the parent of `cgroup` for any new directory (a container followed by name).
    pub fn any_in_parent(cgroup: &Path) -> Self {
        let mut w = Self::new(cgroup);
        w.any = true;
        w
    }

    /// The target is `cgroup` from now on; its parent is watched (again, when it is another).
    pub fn retarget(&mut self, cgroup: &Path) {
        self.name = cgroup.file_name().unwrap_or_default().to_owned();
        let parent = cgroup.parent().map(Path::to_path_buf);
        if parent == self.parent && self.inotify.is_some() {
            return;
        }
        self.parent = parent;
        self.rewatch();
    }

    /// Watches the parent afresh.
    fn rewatch(&mut self) {
        self.inotify = None;
        let Some(parent) = self.parent.as_deref() else {
            return;
        };
        self.parent_ino = inode(parent);
        match watch_parent(parent) {
            Ok(fd) => {
                self.inotify = Some(fd);
                self.warned = false;
            }
            Err(e) if !self.warned => {
                self.warned = true;
                tracing::warn!(
                    parent = %parent.display(),
                    "cannot watch for the target cgroup being made again ({e}); checking every {} ms",
                    FOLLOW_INTERVAL.as_millis()
                );
            }
            Err(_) => {}
        }
    }

    /// Whether the parent watched is no longer the directory at its path.
    fn parent_replaced(&self) -> bool {
        self.parent
            .as_deref()
            .is_some_and(|p| inode(p).is_none() || inode(p) != self.parent_ino)
    }

    /// Returns when the target's name (or any directory) was created in its parent, or after
    /// [`FOLLOW_INTERVAL`].
    pub async fn wait(&mut self) -> Seen {
        let created = self.wait_event().await;
        self.next = tokio::time::Instant::now() + FOLLOW_INTERVAL;
        let at = Instant::now();
        let mut unwatched = false;
        if created.is_empty() && (self.inotify.is_none() || self.parent_replaced()) {
            // A watch on a removed parent sees nothing again: watch the one at the path now.
            self.rewatch();
            unwatched = true;
        }
        Seen {
            created,
            at,
            unwatched,
        }
    }

    async fn wait_event(&mut self) -> Vec<OsString> {
        let deadline = self.next;
        let Some(fd) = &self.inotify else {
            tokio::time::sleep_until(deadline).await;
            return Vec::new();
        };
        loop {
            let ready = tokio::time::timeout_at(deadline, fd.readable()).await;
            let mut guard = match ready {
                Ok(Ok(guard)) => Some(guard),
                Ok(Err(_)) => return Vec::new(),
                // The timer: what the watch holds already still counts as seen by it.
                Err(_) => None,
            };
            let created: Vec<OsString> = match read_names(fd.get_ref()) {
                Ok(Some((names, lost))) => {
                    let created = names
                        .into_iter()
                        .filter(|name| self.any || *name == self.name)
                        .collect();
                    if lost {
                        // The parent was removed: the next wake-up watches the one at its path.
                        self.inotify = None;
                        return created;
                    }
                    created
                }
                Ok(None) => {
                    if let Some(g) = guard.as_mut() {
                        g.clear_ready();
                    }
                    Vec::new()
                }
                Err(e) => {
                    tracing::warn!("reading the cgroup watch failed: {e}");
                    self.inotify = None;
                    return Vec::new();
                }
            };
            if !created.is_empty() || guard.is_none() {
                return created;
            }
        }
    }
}

/// The names of the events waiting on the inotify descriptor, and whether the watch was
/// removed (its directory is gone); `None` when there are none.
fn read_names(fd: &OwnedFd) -> io::Result<Option<(Vec<OsString>, bool)>> {
    let mut buf = [0u8; 4096];
    // SAFETY: reading into a buffer we own from a non-blocking descriptor we own.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(e)
        };
    }
    let n = usize::try_from(n).unwrap_or(0);
    let buf = &buf[..n];
    let names = names_in(buf).map(OsStr::to_os_string).collect();
    Ok(Some((names, watch_removed(buf))))
}

fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

fn watch_parent(parent: &Path) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: plain syscall; the descriptor returned is owned below.
    let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let c = CString::new(parent.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: valid descriptor and NUL-terminated path.
    let wd = unsafe {
        libc::inotify_add_watch(
            fd.as_raw_fd(),
            c.as_ptr(),
            libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_ONLYDIR,
        )
    };
    if wd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the `OwnedFd` keeps the descriptor open, and it always returns the same one, for
    // as long as the `AsyncFd` lives.
    unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)
}

/// Whether a buffer of `struct inotify_event`s says the watch was removed (`IN_IGNORED`).
fn watch_removed(buf: &[u8]) -> bool {
    const HEADER: usize = 16;
    let mut off = 0;
    while off + HEADER <= buf.len() {
        let word = |at: usize| {
            buf[at..at + 4]
                .try_into()
                .map(u32::from_ne_bytes)
                .unwrap_or(0)
        };
        if word(off + 4) & libc::IN_IGNORED != 0 {
            return true;
        }
        off += HEADER + word(off + 12) as usize;
    }
    false
}

/// The names carried by a buffer of `struct inotify_event`s.
fn names_in(buf: &[u8]) -> impl Iterator<Item = &OsStr> {
    const HEADER: usize = 16; // wd, mask, cookie, len
    let mut off = 0;
    std::iter::from_fn(move || {
        while off + HEADER <= buf.len() {
            let len_bytes: [u8; 4] = buf[off + 12..off + 16].try_into().ok()?;
            let len = u32::from_ne_bytes(len_bytes) as usize;
            let start = off + HEADER;
            let end = (start + len).min(buf.len());
            off = start + len;
            let raw = &buf[start..end];
            let name = &raw[..raw.iter().position(|b| *b == 0).unwrap_or(raw.len())];
            if !name.is_empty() {
                return Some(OsStr::from_bytes(name));
            }
        }
        None
    })
}

#[cfg(test)]
mod tests;
