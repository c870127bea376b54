//! Opening the pin directory without trusting what others could have put in its path: every
//! component is opened relative to its parent's descriptor with `O_NOFOLLOW`, and every
//! component on the bpf file system is checked for its owner and mode before it is used.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Component, Path, PathBuf},
};

use super::{BPF_FS_MAGIC, PinError};

/// Mode of the directories this code creates.
const DIR_MODE: libc::mode_t = 0o700;

fn io_err(what: &'static str, path: &Path, source: io::Error) -> PinError {
    PinError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

fn unsafe_path(path: &Path, problem: impl Into<String>) -> PinError {
    PinError::Unsafe {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

fn cstr(name: &std::ffi::OsStr, path: &Path) -> Result<CString, PinError> {
    CString::new(name.as_bytes()).map_err(|_| unsafe_path(path, "the name contains a NUL byte"))
}

fn fstatat(dir: BorrowedFd<'_>, name: &CString) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid descriptor, NUL-terminated name, writable stat buffer.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatat filled it.
    Ok(unsafe { st.assume_init() })
}

fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid descriptor, writable stat buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat filled it.
    Ok(unsafe { st.assume_init() })
}

fn open_at(dir: BorrowedFd<'_>, name: &CString, nofollow: bool) -> io::Result<OwnedFd> {
    let mut flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    if nofollow {
        flags |= libc::O_NOFOLLOW;
    }
    // SAFETY: valid descriptor and NUL-terminated name; the result is checked.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor this function owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

// `f_type`'s integer type differs between architectures; the cast is a no-op on x86_64 only.
#[allow(clippy::unnecessary_cast)]
fn on_bpffs(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut sfs = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: valid descriptor, writable buffer.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), sfs.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatfs filled it.
    let sfs = unsafe { sfs.assume_init() };
    Ok(sfs.f_type as i64 == BPF_FS_MAGIC)
}

/// The users trusted to own pin paths: root and this process's effective user.
fn trusted(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// What is wrong with a directory's owner or mode, if anything.
pub(super) fn dir_problem(st: &libc::stat) -> Option<String> {
    if !trusted(st.st_uid) {
        return Some(format!(
            "it is owned by uid {}, not by root: someone else may have planted it",
            st.st_uid
        ));
    }
    let open = st.st_mode & 0o022 != 0;
    let sticky = st.st_mode & libc::S_ISVTX != 0;
    if open && !(sticky && st.st_uid == 0) {
        return Some(format!(
            "it is writable by group or others (mode {:04o})",
            st.st_mode & 0o7777
        ));
    }
    None
}

/// Opens directory `name` under `parent` (whose path is `parent_path`), creating it with mode
/// 0700 when missing and `create`; checks it. `Ok(None)` when missing and not `create`.
pub(super) fn open_child(
    parent: &OwnedFd,
    parent_path: &Path,
    name: &str,
    create: bool,
) -> Result<Option<OwnedFd>, PinError> {
    let path = parent_path.join(name);
    let c = cstr(std::ffi::OsStr::new(name), &path)?;
    step(parent.as_fd(), &c, &path, create, true)
}

/// One component: stat without following, create when asked, open with `O_NOFOLLOW`, check.
fn step(
    parent: BorrowedFd<'_>,
    name: &CString,
    path: &Path,
    create: bool,
    checked: bool,
) -> Result<Option<OwnedFd>, PinError> {
    match fstatat(parent, name) {
        Ok(st) => {
            if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                if checked {
                    return Err(unsafe_path(path, "it is a symlink"));
                }
                // Above the bpf file system (e.g. /sys): the system's own layout.
                return open_at(parent, name, false)
                    .map(Some)
                    .map_err(|e| io_err("opening", path, e));
            }
            if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                return Err(unsafe_path(path, "it is not a directory"));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
            // SAFETY: valid descriptor and NUL-terminated name.
            if unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), DIR_MODE) } != 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::AlreadyExists {
                    return Err(io_err("creating", path, e));
                }
            }
            let fd = open_at(parent, name, true).map_err(|e| io_err("opening", path, e))?;
            // The umask may have taken bits away; none were added.
            // SAFETY: valid descriptor.
            if unsafe { libc::fchmod(fd.as_raw_fd(), DIR_MODE) } != 0 {
                return Err(io_err(
                    "setting the mode of",
                    path,
                    io::Error::last_os_error(),
                ));
            }
            return check_open(fd, path, checked).map(Some);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("examining", path, e)),
    }
    let fd = open_at(parent, name, true).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => unsafe_path(path, "it is a symlink"),
        _ => io_err("opening", path, e),
    })?;
    check_open(fd, path, checked).map(Some)
}

/// Checks an opened directory on bpffs (the descriptor is what is used from now on, so a
/// rename after the check changes nothing).
fn check_open(fd: OwnedFd, path: &Path, checked: bool) -> Result<OwnedFd, PinError> {
    if checked {
        let st = fstat(fd.as_fd()).map_err(|e| io_err("examining", path, e))?;
        if let Some(problem) = dir_problem(&st) {
            return Err(unsafe_path(path, problem));
        }
    }
    Ok(fd)
}

/// Opens the absolute directory `path` component by component. Components on the bpf file
/// system are checked and, with `create`, made when missing. `Ok(None)` when `path` itself is
/// not on bpffs.
pub(super) fn open_dir(path: &Path, create: bool) -> Result<Option<OwnedFd>, PinError> {
    if !path.is_absolute() {
        return Err(unsafe_path(
            path,
            "the pin directory must be an absolute path",
        ));
    }
    let root = CString::new("/").map_err(|_| unsafe_path(path, "bad path"))?;
    // SAFETY: NUL-terminated path; the result is checked.
    let fd = unsafe {
        libc::open(
            root.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io_err(
            "opening",
            Path::new("/"),
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: a fresh descriptor.
    let mut cur = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut cur_path = PathBuf::from("/");
    let mut in_bpffs = false;
    for comp in path.components() {
        let name = match comp {
            Component::RootDir => continue,
            Component::Normal(n) => n,
            Component::CurDir | Component::ParentDir | Component::Prefix(_) => {
                return Err(unsafe_path(
                    path,
                    "the pin directory must not contain . or ..",
                ));
            }
        };
        cur_path.push(name);
        let c = cstr(name, &cur_path)?;
        // Only directories on bpffs may be created: the mount point must exist.
        let Some(next) = step(cur.as_fd(), &c, &cur_path, create && in_bpffs, in_bpffs)? else {
            if in_bpffs {
                return Err(io_err(
                    "opening",
                    &cur_path,
                    io::Error::from(io::ErrorKind::NotFound),
                ));
            }
            // Missing above any bpf file system: the pin directory is not on one.
            return Ok(None);
        };
        let next_bpffs = on_bpffs(next.as_fd()).map_err(|e| io_err("examining", &cur_path, e))?;
        if next_bpffs && !in_bpffs {
            // The mount root itself.
            let st = fstat(next.as_fd()).map_err(|e| io_err("examining", &cur_path, e))?;
            if let Some(problem) = dir_problem(&st) {
                return Err(unsafe_path(&cur_path, problem));
            }
        }
        in_bpffs = next_bpffs;
        cur = next;
    }
    Ok(in_bpffs.then_some(cur))
}

/// Checks every entry of a pin subdirectory: no symlinks, nothing of another owner.
pub(super) fn check_entries(dir: &OwnedFd, path: &Path) -> Result<(), PinError> {
    let entries = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))
        .map_err(|e| io_err("listing", path, e))?;
    for e in entries {
        let e = e.map_err(|e| io_err("listing", path, e))?;
        let name = e.file_name();
        let p = path.join(&name);
        let st = fstatat(dir.as_fd(), &cstr(&name, &p)?).map_err(|e| io_err("examining", &p, e))?;
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            return Err(unsafe_path(&p, "it is a symlink"));
        }
        if !trusted(st.st_uid) {
            return Err(unsafe_path(
                &p,
                format!(
                    "it is owned by uid {}, not by root: someone else may have planted it",
                    st.st_uid
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
