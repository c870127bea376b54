//! The device programs: tcx egress on every network device of the daemon's network namespace
//! (devices created later are attached by a watcher within [`DEVICE_POLL`]), and the cgroup
//! device program that refuses `/dev/net/tun` to the target. In enforce mode their links are
//! pinned next to the cgroup links (`<pin-dir>/links/tun_open`,
//! `<pin-dir>/links/tcx_egress_<ifindex>`), adopted by a restarted daemon with the new
//! programs swapped in, and detached by `ollama-egress detach`.

use std::{
    collections::BTreeMap,
    ffi::{CStr, CString},
    fs::File,
    io,
    os::{
        fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::Array,
    programs::{CgroupDevice, ProgramFd, SchedClassifier},
};
use ollama_egress_common::{DEVICE_TARGET_MAP, DeviceTarget};

use super::{LinkHandle, Loaded, LoaderError, PinError, PinLayout, cgroup_id, sys};

/// How often the watcher looks for new network devices. A device created in between carries
/// no tc program until the next look (its own frames; the outer packets of a tunnel over it
/// are judged at the lower device).
pub const DEVICE_POLL: Duration = Duration::from_secs(1);

/// The tc programs by framing: Ethernet, bare IP, anything else.
const TC_ETH: &str = "tc_egress_eth";
const TC_IP: &str = "tc_egress_ip";
const TC_OTHER: &str = "tc_egress_other";
const TC_PROGRAMS: [&str; 3] = [TC_ETH, TC_IP, TC_OTHER];
/// The cgroup device program.
const TUN_PROGRAM: &str = "tun_open";
/// Pin name prefix of the tcx links, followed by the ifindex.
const TCX_PIN_PREFIX: &str = "tcx_egress_";

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;
/// `BPF_CGROUP_DEVICE` of `enum bpf_attach_type`.
const BPF_CGROUP_DEVICE: u32 = 6;
/// `BPF_TCX_EGRESS` of `enum bpf_attach_type`.
const BPF_TCX_EGRESS: u32 = 47;
/// `BPF_F_BEFORE` without a relative program: first in the device's tcx chain, so no program
/// attached earlier can pass a frame on before it is judged.
const BPF_F_BEFORE: u32 = 1 << 3;

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
    let prog = program(ebpf, TUN_PROGRAM)?;
    <&mut CgroupDevice>::try_from(prog)
        .and_then(|p| p.load())
        .map_err(|source| LoaderError::Program {
            what: format!("loading program {TUN_PROGRAM}"),
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

fn sys_err(what: String) -> impl FnOnce(io::Error) -> LoaderError {
    move |source| LoaderError::Sys { what, source }
}

impl Loaded {
    /// Points the device programs at `cgroup`, attaches the cgroup device program to it and
    /// the tc program to every network device, and starts watching for new devices. Pinned
    /// links are adopted (their programs replaced) as the cgroup links are.
    pub(super) fn attach_devices(&mut self, cgroup: &Path, dir: &File) -> Result<(), LoaderError> {
        let target = DeviceTarget {
            cgroup_id: cgroup_id(cgroup).map_err(|source| LoaderError::Cgroup {
                path: cgroup.display().to_string(),
                source,
            })?,
            level: cgroup_level(cgroup),
            reserved: 0,
        };
        let map = self
            .ebpf
            .map_mut(DEVICE_TARGET_MAP)
            .ok_or_else(|| LoaderError::Missing {
                kind: "map",
                name: DEVICE_TARGET_MAP.to_owned(),
            })?;
        let mut arr: Array<_, DeviceTarget> =
            Array::try_from(map).map_err(|source| LoaderError::Map {
                what: format!("opening {DEVICE_TARGET_MAP}"),
                source,
            })?;
        arr.set(0, target, 0).map_err(|source| LoaderError::Map {
            what: format!("writing {DEVICE_TARGET_MAP}"),
            source,
        })?;

        self.attach_tun_guard(cgroup, dir, target.cgroup_id)?;

        let progs = TcPrograms {
            eth: self.tc_fd(TC_ETH)?,
            ip: self.tc_fd(TC_IP)?,
            other: self.tc_fd(TC_OTHER)?,
        };
        let watch = DeviceWatch::start(progs, self.pins.clone())?;
        self.devices = Some(watch);
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

    /// The cgroup device program on the target: adopted from its pin, or attached (and pinned).
    fn attach_tun_guard(
        &mut self,
        cgroup: &Path,
        dir: &File,
        target_id: u64,
    ) -> Result<(), LoaderError> {
        let pin = self.pins.as_ref().map(tun_pin);
        if let Some(path) = pin.as_ref().filter(|p| p.exists()) {
            let fd = sys::obj_get(path)
                .map_err(sys_err(format!("opening pinned link {}", path.display())))?;
            let info = sys::link_info(fd.as_fd())
                .map_err(sys_err(format!("reading pinned link {}", path.display())))?;
            if info.cgroup_id == target_id {
                let prog = program(&mut self.ebpf, TUN_PROGRAM)?;
                let prog_fd = prog.fd().map_err(|source| LoaderError::Program {
                    what: format!("reading the descriptor of {TUN_PROGRAM}"),
                    source,
                })?;
                sys::link_update(fd.as_fd(), prog_fd.as_fd()).map_err(sys_err(format!(
                    "replacing the program of the pinned {TUN_PROGRAM} link"
                )))?;
                self.links.push(LinkHandle::Adopted(fd));
                return self.verify_tun_guard(cgroup, dir);
            }
            // Its cgroup is gone (or it is another's: the cgroup links' check refuses that
            // case before this runs): attach afresh.
            std::fs::remove_file(path).map_err(sys_err(format!(
                "removing the stale pin {}",
                path.display()
            )))?;
        }
        let what = format!("attaching {TUN_PROGRAM} to {}", cgroup.display());
        let prog = program(&mut self.ebpf, TUN_PROGRAM)?;
        let prog_fd = prog.fd().map_err(|source| LoaderError::Program {
            what: what.clone(),
            source,
        })?;
        // aya 0.14 offers no `FdLink` for cgroup device links: create the link directly.
        let link = link_create(
            prog_fd.as_fd(),
            dir.as_raw_fd() as u32,
            BPF_CGROUP_DEVICE,
            0,
        )
        .map_err(sys_err(what))?;
        if let Some(path) = &pin {
            obj_pin(link.as_fd(), path)
                .map_err(sys_err(format!("pinning the {TUN_PROGRAM} link")))?;
        }
        let handle = LinkHandle::Adopted(link);
        self.links.push(handle);
        self.verify_tun_guard(cgroup, dir)
    }

    /// Checks with the kernel that the cgroup device program is attached to `cgroup`.
    fn verify_tun_guard(&self, cgroup: &Path, dir: &File) -> Result<(), LoaderError> {
        let prog = self
            .ebpf
            .program(TUN_PROGRAM)
            .ok_or_else(|| LoaderError::Missing {
                kind: "program",
                name: TUN_PROGRAM.to_owned(),
            })?;
        let id = prog
            .info()
            .map_err(|source| LoaderError::Program {
                what: format!("reading the id of {TUN_PROGRAM}"),
                source,
            })?
            .id();
        let ids = sys::prog_query(dir.as_fd(), BPF_CGROUP_DEVICE).map_err(|source| {
            LoaderError::Query {
                path: cgroup.display().to_string(),
                source,
            }
        })?;
        if ids.contains(&id) {
            Ok(())
        } else {
            Err(LoaderError::NotAttached {
                program: TUN_PROGRAM,
                path: cgroup.display().to_string(),
            })
        }
    }
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

fn tun_pin(pins: &PinLayout) -> PathBuf {
    pins.root().join("links").join(TUN_PROGRAM)
}

fn tcx_pin(pins: &PinLayout, ifindex: u32) -> PathBuf {
    pins.root()
        .join("links")
        .join(format!("{TCX_PIN_PREFIX}{ifindex}"))
}

/// Descriptors of the three tc programs.
struct TcPrograms {
    eth: ProgramFd,
    ip: ProgramFd,
    other: ProgramFd,
}

impl TcPrograms {
    /// The program for a device of link type `arphrd`.
    fn for_type(&self, arphrd: u16) -> &ProgramFd {
        match arphrd {
            // Ethernet, loopback (Ethernet-framed)
            libc::ARPHRD_ETHER | libc::ARPHRD_LOOPBACK => &self.eth,
            // TUN and other devices that send bare IP: none, IPIP, IPv6-in-IPv6, SIT, GRE,
            // IP6GRE, raw IP, PPP
            0xfffe | 768 | 769 | 776 | 778 | 823 | 519 | 512 => &self.ip,
            _ => &self.other,
        }
    }
}

/// Keeps the tc program attached to every network device of the namespace.
pub(super) struct DeviceWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DeviceWatch {
    /// Adopts pinned tcx links, attaches to every device now present (an error here fails the
    /// start: nothing is left half-judged), then keeps looking for new devices.
    fn start(progs: TcPrograms, pins: Option<PinLayout>) -> Result<Self, LoaderError> {
        let mut state = Devices {
            progs,
            pins,
            links: BTreeMap::new(),
        };
        state.adopt()?;
        state.sync()?;
        tracing::info!(
            devices = state.links.len(),
            "tc egress attached to every network device of this namespace"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("device-watch".into())
            .spawn(move || {
                let mut next = Instant::now() + DEVICE_POLL;
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                    if Instant::now() < next {
                        continue;
                    }
                    next = Instant::now() + DEVICE_POLL;
                    if let Err(e) = state.sync() {
                        tracing::warn!("attaching tc egress to new network devices failed: {e}");
                    }
                }
            })
            .map_err(sys_err("starting the network device watcher".to_owned()))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for DeviceWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The watcher's state: one link per device, by ifindex.
struct Devices {
    progs: TcPrograms,
    pins: Option<PinLayout>,
    links: BTreeMap<u32, OwnedFd>,
}

impl Devices {
    /// Re-opens the pinned tcx links of devices that still exist and gives them this daemon's
    /// programs; removes the pins of links whose device is gone.
    fn adopt(&mut self) -> Result<(), LoaderError> {
        let Some(pins) = self.pins.clone() else {
            return Ok(());
        };
        let present: BTreeMap<u32, u16> = interfaces()
            .map_err(sys_err("listing network devices".to_owned()))?
            .into_iter()
            .map(|(i, name)| (i, link_type(&name).unwrap_or(0)))
            .collect();
        for (path, _) in pinned_tcx(&pins.root().join("links")) {
            let fd = sys::obj_get(&path)
                .map_err(sys_err(format!("opening pinned link {}", path.display())))?;
            let ifindex = tcx_ifindex(fd.as_fd())
                .map_err(sys_err(format!("reading pinned link {}", path.display())))?;
            match present.get(&ifindex) {
                Some(ty) if ifindex != 0 => {
                    let prog = self.progs.for_type(*ty);
                    sys::link_update(fd.as_fd(), prog.as_fd()).map_err(sys_err(format!(
                        "replacing the program of the pinned link {}",
                        path.display()
                    )))?;
                    self.links.insert(ifindex, fd);
                }
                _ => std::fs::remove_file(&path).map_err(sys_err(format!(
                    "removing the stale pin {}",
                    path.display()
                )))?,
            }
        }
        Ok(())
    }

    /// Attaches to devices that have no link yet and lets go of devices that are gone.
    fn sync(&mut self) -> Result<(), LoaderError> {
        let now = interfaces().map_err(sys_err("listing network devices".to_owned()))?;
        let gone: Vec<u32> = self
            .links
            .keys()
            .filter(|i| !now.iter().any(|(n, _)| n == *i))
            .copied()
            .collect();
        for ifindex in gone {
            self.links.remove(&ifindex);
            if let Some(p) = &self.pins {
                let _ = std::fs::remove_file(tcx_pin(p, ifindex));
            }
        }
        for (ifindex, name) in now {
            if self.links.contains_key(&ifindex) {
                continue;
            }
            let Ok(ty) = link_type(&name) else {
                // Gone again between the listing and the look.
                continue;
            };
            let prog = self.progs.for_type(ty);
            let link = match tcx_link_create(prog.as_fd(), ifindex) {
                Ok(l) => l,
                // The device went away in between.
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => continue,
                Err(e) => {
                    return Err(LoaderError::Sys {
                        what: format!("attaching tc egress to {}", name.to_string_lossy()),
                        source: e,
                    });
                }
            };
            if let Some(p) = &self.pins {
                let path = tcx_pin(p, ifindex);
                let _ = std::fs::remove_file(&path);
                obj_pin(link.as_fd(), &path)
                    .map_err(sys_err(format!("pinning the link {}", path.display())))?;
            }
            tracing::debug!(ifindex, device = %name.to_string_lossy(), "tc egress attached");
            self.links.insert(ifindex, link);
        }
        Ok(())
    }
}

/// The pinned tcx links under `links_dir`, with their ifindex from the name.
fn pinned_tcx(links_dir: &Path) -> Vec<(PathBuf, u32)> {
    let Ok(entries) = std::fs::read_dir(links_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let idx = name.to_str()?.strip_prefix(TCX_PIN_PREFIX)?.parse().ok()?;
            Some((e.path(), idx))
        })
        .collect()
}

/// Detaches every device link pinned in `links_dir` (tcx links and the cgroup device link)
/// and removes its pin; returns how many were detached. Called by
/// [`PinLayout::detach_and_remove`].
pub(super) fn detach_pinned(links_dir: &Path) -> Result<usize, PinError> {
    let mut paths: Vec<PathBuf> = pinned_tcx(links_dir).into_iter().map(|(p, _)| p).collect();
    let tun = links_dir.join(TUN_PROGRAM);
    if tun.exists() {
        paths.push(tun);
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

/// Every network device of the calling thread's namespace: (ifindex, name).
fn interfaces() -> io::Result<Vec<(u32, CString)>> {
    // SAFETY: returns a malloc'd array terminated by a zero entry, or null with errno set.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut p = list;
    // SAFETY: walks the array up to its terminating entry, then frees it once.
    unsafe {
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            out.push(((*p).if_index, CStr::from_ptr((*p).if_name).to_owned()));
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    Ok(out)
}

/// The link type (`ARPHRD_*`) of a device, asked in the calling thread's namespace.
fn link_type(name: &CStr) -> io::Result<u16> {
    // SAFETY: plain socket(2); the descriptor is owned below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: zeroed ifreq is valid; the name is copied with its terminator within IFNAMSIZ.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.to_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills `ifr_hwaddr` of the ifreq passed.
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut ifr) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the union member the ioctl wrote.
    Ok(unsafe { ifr.ifr_ifru.ifru_hwaddr.sa_family })
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

/// Attaches `prog` first in the tcx egress chain of device `ifindex`; returns the link.
fn tcx_link_create(prog: BorrowedFd<'_>, ifindex: u32) -> io::Result<OwnedFd> {
    link_create(prog, ifindex, BPF_TCX_EGRESS, BPF_F_BEFORE)
}

/// `BPF_LINK_CREATE` of `prog` at `target` (a descriptor or an ifindex) and `attach_type`.
fn link_create(
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
fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut attr = ObjPinAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        ..ObjPinAttr::default()
    };
    sys::bpf(BPF_OBJ_PIN, &mut attr).map(drop)
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The device a tcx link is attached to (0 once the device is gone).
fn tcx_ifindex(link: BorrowedFd<'_>) -> io::Result<u32> {
    // struct bpf_link_info: type, id, prog_id, then a union aligned to 8 whose tcx member is
    // { u32 ifindex; u32 attach_type; }.
    let mut buf = [0u32; 64];
    let mut attr = InfoAttr {
        bpf_fd: link.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&buf) as u32,
        info: buf.as_mut_ptr() as u64,
    };
    sys::bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(buf[4])
}
