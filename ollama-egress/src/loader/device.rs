//! The device programs: tcx egress on every network device of the daemon's network namespace
//! and of the target's (devices and namespaces that appear later are attached by a watcher
//! within [`DEVICE_POLL`], see [`super::netdev`]), and the cgroup
//! device program that refuses `/dev/net/tun` to the target and the setsockopt program that
//! refuses it the options bypassing the tc hooks. In enforce mode their links are
//! pinned next to the cgroup links (`<pin-dir>/links/tun_open`, `<pin-dir>/links/sockopt_guard`,
//! `<pin-dir>/links/tcx_*`, see [`super::netdev`]), adopted by a restarted daemon with the new
//! programs swapped in, and detached by `ollama-egress detach`.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::{
        fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf,
    maps::Array,
    programs::{CgroupDevice, CgroupSockopt, ProgramFd, SchedClassifier},
};
use ollama_egress_common::{DEVICE_TARGET_MAP, DeviceTarget};

use super::{
    LinkHandle, Loaded, LoaderError, PinError, PinLayout, cgroup_id,
    links::{open_pinned, remove_stale_pin},
    netdev::{DeviceWatch, TcPrograms, pinned_tcx},
    sys,
};

/// How often the watcher looks for new network devices. A device created in between carries
/// no tc program until the next look (its own frames; the outer packets of a tunnel over it
/// are judged at the lower device).
pub const DEVICE_POLL: Duration = Duration::from_secs(1);

/// The tc programs by framing: Ethernet, bare IP, anything else.
const TC_ETH: &str = "tc_egress_eth";
const TC_IP: &str = "tc_egress_ip";
const TC_OTHER: &str = "tc_egress_other";
const TC_PROGRAMS: [&str; 3] = [TC_ETH, TC_IP, TC_OTHER];
/// The guards on the target cgroup, by program name and kernel attach type:
/// `BPF_CGROUP_DEVICE` and `BPF_CGROUP_SETSOCKOPT` of `enum bpf_attach_type`.
const GUARDS: [(&str, u32); 2] = [("tun_open", 6), ("sockopt_guard", 22)];

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_LINK_CREATE: libc::c_long = 28;

/// Loads the device programs of the object (called from [`Loaded::load`]).
pub(super) fn load_programs(ebpf: &mut Ebpf) -> Result<(), LoaderError> {
    for name in TC_PROGRAMS {
        let prog = program(ebpf, name)?;
        <&mut SchedClassifier>::try_from(prog)
            .and_then(|p| p.load())
            .map_err(|source| LoaderError::Program {
                what: format!("loading program {name}"),
                source,
            })?;
    }
    let (tun, _) = GUARDS[0];
    let prog = program(ebpf, tun)?;
    <&mut CgroupDevice>::try_from(prog)
        .and_then(|p| p.load())
        .map_err(|source| LoaderError::Program {
            what: format!("loading program {tun}"),
            source,
        })?;
    let (sockopt, _) = GUARDS[1];
    let prog = program(ebpf, sockopt)?;
    <&mut CgroupSockopt>::try_from(prog)
        .and_then(|p| p.load())
        .map_err(|source| LoaderError::Program {
            what: format!("loading program {sockopt}"),
            source,
        })
}

fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut aya::programs::Program, LoaderError> {
    ebpf.program_mut(name).ok_or_else(|| LoaderError::Missing {
        kind: "program",
        name: name.to_owned(),
    })
}

/// Maps an I/O error of a system call to [`LoaderError::Sys`] saying `what` was done.
pub(super) fn sys_err(what: String) -> impl FnOnce(io::Error) -> LoaderError {
    move |source| LoaderError::Sys { what, source }
}

impl Loaded {
    /// Kernel ids of the device programs (tc and guards), by program name.
    pub fn device_program_ids(&self) -> Vec<(String, u32)> {
        TC_PROGRAMS
            .into_iter()
            .chain(GUARDS.map(|(name, _)| name))
            .filter_map(|name| Some((name.to_owned(), self.program_id_of(name).ok()?)))
            .collect()
    }

    /// Points the device programs at `cgroup`, attaches the cgroup device program to it and
    /// the tc program to every network device, and starts watching for new devices. Pinned
    /// links are adopted (their programs replaced) as the cgroup links are.
    pub(super) fn attach_devices(&mut self, cgroup: &Path, dir: &File) -> Result<(), LoaderError> {
        self.retarget_devices(cgroup, dir)?;
        if !tcx_supported() {
            tracing::error!(
                "this kernel has no tcx (Linux 6.6 or later is needed): frames of the target's packet sockets and tunnels are NOT judged at the network devices"
            );
            return Ok(());
        }
        let progs = TcPrograms {
            eth: self.tc_fd(TC_ETH)?,
            ip: self.tc_fd(TC_IP)?,
            other: self.tc_fd(TC_OTHER)?,
        };
        let watch = DeviceWatch::start(progs, self.pins.clone(), cgroup)?;
        self.devices = Some(watch);
        Ok(())
    }

    /// Points the device programs at `cgroup` (its id in the target map) and attaches the
    /// guards to it: at the first attach, and again when the target cgroup was made anew. The
    /// tc links on the devices stay: they read the target from the map.
    pub(super) fn retarget_devices(
        &mut self,
        cgroup: &Path,
        dir: &File,
    ) -> Result<(), LoaderError> {
        let target = DeviceTarget {
            cgroup_id: cgroup_id(cgroup).map_err(|source| LoaderError::Cgroup {
                path: cgroup.display().to_string(),
                source,
            })?,
            level: cgroup_level(cgroup),
            reserved: 0,
        };
        let map = self.map_mut(DEVICE_TARGET_MAP)?;
        let mut arr: Array<_, DeviceTarget> =
            Array::try_from(map).map_err(|source| LoaderError::Map {
                what: format!("opening {DEVICE_TARGET_MAP}"),
                source,
            })?;
        arr.set(0, target, 0).map_err(|source| LoaderError::Map {
            what: format!("writing {DEVICE_TARGET_MAP}"),
            source,
        })?;

        for (name, attach_type) in GUARDS {
            self.attach_guard(name, attach_type, cgroup, dir, target.cgroup_id)?;
        }
        Ok(())
    }

    fn tc_fd(&mut self, name: &str) -> Result<ProgramFd, LoaderError> {
        let prog = program(&mut self.ebpf, name)?;
        prog.fd()
            .and_then(|fd| fd.try_clone().map_err(Into::into))
            .map_err(|source| LoaderError::Program {
                what: format!("reading the descriptor of {name}"),
                source,
            })
    }

    /// A guard program on the target: adopted from its pin, or attached (and pinned).
    fn attach_guard(
        &mut self,
        name: &'static str,
        attach_type: u32,
        cgroup: &Path,
        dir: &File,
        target_id: u64,
    ) -> Result<(), LoaderError> {
        let pin = self.pins.as_ref().map(|p| guard_pin(p, name));
        if let Some(path) = pin.as_ref().filter(|p| p.exists()) {
            let (fd, info) = open_pinned(path)?;
            if info.cgroup_id == target_id {
                self.adopt_link(name, fd)?;
                return self.verify_guard(name, attach_type, cgroup, dir);
            }
            // Its cgroup is gone (or it is another's: the cgroup links' check refuses that
            // case before this runs): attach afresh.
            remove_stale_pin(path)?;
        }
        let what = format!("attaching {name} to {}", cgroup.display());
        let prog = program(&mut self.ebpf, name)?;
        let prog_fd = prog.fd().map_err(|source| LoaderError::Program {
            what: what.clone(),
            source,
        })?;
        // aya 0.14 offers no `FdLink` for cgroup device or sockopt links: create it directly.
        let link = link_create(prog_fd.as_fd(), dir.as_raw_fd() as u32, attach_type, 0)
            .map_err(sys_err(what))?;
        if let Some(path) = &pin {
            obj_pin(link.as_fd(), path).map_err(sys_err(format!("pinning the {name} link")))?;
        }
        let handle = LinkHandle::Adopted(link);
        self.links.push(handle);
        self.verify_guard(name, attach_type, cgroup, dir)
    }

    /// Checks with the kernel that the guards are attached to `cgroup` (called by
    /// [`Loaded::verify_attached`]).
    pub(super) fn verify_guards(&self, cgroup: &Path) -> Result<(), LoaderError> {
        let dir = File::open(cgroup).map_err(|source| LoaderError::Cgroup {
            path: cgroup.display().to_string(),
            source,
        })?;
        for (name, attach_type) in GUARDS {
            self.verify_guard(name, attach_type, cgroup, &dir)?;
        }
        Ok(())
    }

    /// Checks with the kernel that guard `name` is attached to `cgroup`.
    fn verify_guard(
        &self,
        name: &'static str,
        attach_type: u32,
        cgroup: &Path,
        dir: &File,
    ) -> Result<(), LoaderError> {
        let id = self.program_id_of(name)?;
        let ids =
            sys::prog_query(dir.as_fd(), attach_type).map_err(|source| LoaderError::Query {
                path: cgroup.display().to_string(),
                source,
            })?;
        if ids.contains(&id) {
            Ok(())
        } else {
            Err(LoaderError::NotAttached {
                program: name,
                path: cgroup.display().to_string(),
            })
        }
    }
}

/// Whether the running kernel attaches tc programs with tcx links (Linux 6.6).
fn tcx_supported() -> bool {
    // SAFETY: zeroed utsname is valid; uname(2) fills it with NUL-terminated strings.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return true;
    }
    // SAFETY: `release` is NUL-terminated by the kernel.
    let release = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) };
    release
        .to_str()
        .ok()
        .and_then(|r| kernel_at_least(r, (6, 6)))
        .unwrap_or(true)
}

/// Whether a kernel release such as `6.18.44-foo` is at least `min` (major, minor).
fn kernel_at_least(release: &str, min: (u32, u32)) -> Option<bool> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    Some((major, minor) >= min)
}

/// Depth of a cgroup v2 directory below the root: every non-root cgroup has `cgroup.events`.
fn cgroup_level(cgroup: &Path) -> u32 {
    let mut level = 0;
    let mut p = cgroup;
    while p.join("cgroup.events").exists() {
        level += 1;
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    level
}

fn guard_pin(pins: &PinLayout, name: &str) -> PathBuf {
    pins.root().join("links").join(name)
}

/// Detaches every device link pinned in `links_dir` (tcx links and the cgroup device link)
/// and removes its pin; returns how many were detached. Called by
/// [`PinLayout::detach_and_remove`].
pub(super) fn detach_pinned(links_dir: &Path) -> Result<usize, PinError> {
    let mut paths: Vec<PathBuf> = pinned_tcx(links_dir).into_iter().map(|p| p.path).collect();
    for (name, _) in GUARDS {
        let guard = links_dir.join(name);
        if guard.exists() {
            paths.push(guard);
        }
    }
    let mut detached = 0;
    for path in paths {
        let err = |what: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| PinError::Io { what, path, source }
        };
        let fd = sys::obj_get(&path).map_err(err("opening pinned link", &path))?;
        match sys::link_detach(fd.as_fd()) {
            Ok(()) => detached += 1,
            // Already detached (its device or cgroup was removed).
            Err(e) if e.raw_os_error() == Some(libc::ENOLINK) => {}
            Err(e) => return Err(err("detaching link", &path)(e)),
        }
        std::fs::remove_file(&path).map_err(err("removing", &path))?;
    }
    Ok(detached)
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target: u32,
    attach_type: u32,
    flags: u32,
    relative_fd: u32,
    _pad: u32,
    expected_revision: u64,
}

/// `BPF_LINK_CREATE` of `prog` at `target` (a descriptor or an ifindex) and `attach_type`.
pub(super) fn link_create(
    prog: BorrowedFd<'_>,
    target: u32,
    attach_type: u32,
    flags: u32,
) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target,
        attach_type,
        flags,
        ..LinkCreateAttr::default()
    };
    let fd = sys::bpf(BPF_LINK_CREATE, &mut attr)?;
    let fd = i32::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[repr(C)]
#[derive(Default)]
struct ObjPinAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
}

/// Pins a BPF object at `path`.
pub(super) fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut attr = ObjPinAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        ..ObjPinAttr::default()
    };
    sys::bpf(BPF_OBJ_PIN, &mut attr).map(drop)
}

#[cfg(test)]
mod tests;
