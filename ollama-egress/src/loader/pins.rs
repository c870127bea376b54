//! The bpffs layout that keeps enforcement alive without the daemon:
//! `<pin-dir>/maps/<MAP>`, `<pin-dir>/progs/<program>`, `<pin-dir>/links/<program>`.
//! Pinned links keep the programs attached after the daemon exits (even by `kill -9`); a
//! restarted daemon re-opens the maps and swaps its programs into the pinned links.

use std::{
    fs, io,
    os::{
        fd::{AsFd as _, OwnedFd},
        unix::fs::MetadataExt as _,
    },
    path::{Path, PathBuf},
};

use super::{AttachPoint, sys};

mod lock;
mod secure;

pub use lock::{DirLock, LockError, holder_text, lock_dir};

/// `BPF_FS_MAGIC` from statfs(2).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Paths of the pinned objects under one pin directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinLayout {
    root: PathBuf,
}

/// Errors of managing pins.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The directory is not on a bpf file system and none could be mounted.
    #[error(
        "{path} is not on a bpf file system ({detail}); mount one with `mount -t bpf bpf /sys/fs/bpf`"
    )]
    NotBpffs {
        /// The pin directory.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// Another daemon holds the pin directory.
    #[error(
        "{path} is in use by another ollama-egress daemon ({pid}); stop it first, or give this one another --pin-dir"
    )]
    Locked {
        /// The pin directory.
        path: PathBuf,
        /// Who holds it (`pid N`, or why that is unknown).
        pid: String,
    },
    /// A component of the pin directory, or a pin in it, could have been planted by someone
    /// other than root.
    #[error(
        "refusing pin path {path}: {problem}; remove it (`ollama-egress detach --pin-dir ...` or rm) or choose another --pin-dir"
    )]
    Unsafe {
        /// The offending path.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A file operation on the pin directory failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PinError + use<> {
    let path = path.to_owned();
    move |source| PinError::Io { what, path, source }
}

impl PinLayout {
    /// The layout under `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    /// The pin directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where map `name` is pinned.
    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join("maps").join(name)
    }

    /// Where the program of `point` is pinned.
    pub fn prog(&self, point: AttachPoint) -> PathBuf {
        self.root.join("progs").join(point.program_name())
    }

    /// Where the link of `point` is pinned.
    pub fn link(&self, point: AttachPoint) -> PathBuf {
        self.root.join("links").join(point.program_name())
    }

    /// Whether any link is pinned here (enforcement is, or was, in place). Symlinks are not
    /// followed.
    pub fn has_links(&self) -> bool {
        AttachPoint::ALL
            .iter()
            .any(|p| fs::symlink_metadata(self.link(*p)).is_ok())
    }

    /// Makes sure the directory is on a bpf file system (mounting one, mode 0700, at
    /// `/sys/fs/bpf` when the pin directory is below it and nothing is mounted there yet) and
    /// creates the layout, every directory mode 0700. Every component below the bpffs mount
    /// must be a real directory (no symlink) owned by root (or this process's user) that no
    /// one else may write to (a root-owned sticky directory, as a bpffs root mounted without
    /// `mode=` is, excepted); existing pins must be files of that owner. Returns the pin
    /// directory, opened.
    pub fn prepare(&self) -> Result<OwnedFd, PinError> {
        let bpffs = Path::new("/sys/fs/bpf");
        if self.root.starts_with(bpffs) && !is_bpffs(bpffs) {
            nix::mount::mount(
                Some("bpf"),
                bpffs,
                Some("bpf"),
                nix::mount::MsFlags::empty(),
                Some("mode=0700"),
            )
            .map_err(|e| PinError::NotBpffs {
                path: self.root.clone(),
                detail: format!("mounting bpffs at /sys/fs/bpf failed: {e}"),
            })?;
        }
        let root = secure::open_dir(&self.root, true)?.ok_or_else(|| PinError::NotBpffs {
            path: self.root.clone(),
            detail: "statfs reports another file system".to_owned(),
        })?;
        for sub in ["maps", "progs", "links"] {
            let d = secure::open_child(&root, &self.root, sub, true)?;
            if let Some(d) = d {
                secure::check_entries(&d, &self.root.join(sub))?;
            }
        }
        Ok(root)
    }

    /// Checks an existing pin directory as [`prepare`](Self::prepare) does, creating
    /// nothing; `Ok(None)` when there is none.
    pub fn inspect(&self) -> Result<Option<OwnedFd>, PinError> {
        match fs::symlink_metadata(&self.root) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            _ => {}
        }
        let Some(root) = secure::open_dir(&self.root, false)? else {
            return Err(PinError::NotBpffs {
                path: self.root.clone(),
                detail: "statfs reports another file system".to_owned(),
            });
        };
        for sub in ["maps", "progs", "links"] {
            if let Some(d) = secure::open_child(&root, &self.root, sub, false)? {
                secure::check_entries(&d, &self.root.join(sub))?;
            }
        }
        Ok(Some(root))
    }

    /// Takes the pin directory for this process: an exclusive `flock` on `dir` (from
    /// [`prepare`](Self::prepare) or [`inspect`](Self::inspect)), held until the returned
    /// lock is dropped (or the process ends, however it ends).
    pub fn lock(&self, dir: OwnedFd) -> Result<DirLock, PinError> {
        lock_dir(dir, &self.root).map_err(|e| match e {
            LockError::Held { pid } => PinError::Locked {
                path: self.root.clone(),
                pid: holder_text(pid),
            },
            LockError::Io(source) => PinError::Io {
                what: "locking",
                path: self.root.clone(),
                source,
            },
        })
    }

    /// Detaches every pinned link from its cgroup (even while a daemon still holds it) and
    /// removes every pin and the directory. Returns how many links were detached.
    /// A pin directory that fails the checks of [`inspect`](Self::inspect) is refused: its
    /// pins could name links of someone else's choosing.
    pub fn detach_and_remove(&self) -> Result<usize, PinError> {
        if self.inspect()?.is_none() {
            return Ok(0);
        }
        let mut detached = 0;
        for point in AttachPoint::ALL {
            let path = self.link(point);
            if fs::symlink_metadata(&path).is_err() {
                continue;
            }
            let fd = sys::obj_get(&path).map_err(io_err("opening pinned link", &path))?;
            match sys::link_detach(fd.as_fd()) {
                Ok(()) => detached += 1,
                // Already detached (its cgroup was removed): nothing to undo.
                Err(e) if e.raw_os_error() == Some(libc::ENOLINK) => {}
                Err(e) => return Err(io_err("detaching link", &path)(e)),
            }
            fs::remove_file(&path).map_err(io_err("removing", &path))?;
        }
        detached += super::device::detach_pinned(&self.root.join("links"))?;
        detached += super::resolver::detach_pinned(&self.root.join("links"))?;
        self.remove_all()?;
        Ok(detached)
    }

    /// Removes every pin (maps and programs too) and the directories.
    fn remove_all(&self) -> Result<(), PinError> {
        for sub in ["links", "progs", "maps"] {
            let d = self.root.join(sub);
            let Ok(entries) = fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                fs::remove_file(&p).map_err(io_err("removing", &p))?;
            }
            fs::remove_dir(&d).map_err(io_err("removing", &d))?;
        }
        match fs::remove_dir(&self.root) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", &self.root)(e)),
            _ => Ok(()),
        }
    }

    /// The pinned links and what the kernel says about each.
    pub fn links(&self) -> Vec<(AttachPoint, Result<sys::CgroupLinkInfo, io::Error>)> {
        AttachPoint::ALL
            .iter()
            .filter(|p| self.link(**p).exists())
            .map(|p| {
                let info = sys::obj_get(&self.link(*p)).and_then(|fd| sys::link_info(fd.as_fd()));
                (*p, info)
            })
            .collect()
    }
}

/// The cgroup id of a cgroup v2 directory (its inode number).
pub fn cgroup_id(dir: &Path) -> io::Result<u64> {
    fs::metadata(dir).map(|m| m.ino())
}

// `f_type`'s integer type differs between architectures; the cast is a no-op on x86_64 only.
#[allow(clippy::unnecessary_cast)]
fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 as i64 == BPF_FS_MAGIC)
        .unwrap_or(false)
}
