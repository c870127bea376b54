//! The tc programs' links: one per network device, in the daemon's network namespace and in
//! every network namespace a process of the target lives in (a container's, for one). A watcher
//! thread looks again every [`DEVICE_POLL`]: devices created since, and namespaces the target
//! entered since, get the program then. The thread is the only one that enters other
//! namespaces (`setns` changes the calling thread only) and it always returns to its own.
//!
//! Pins: `<pin-dir>/links/tcx_<framing>_<netns inode>_<ifindex>`, so a restarted daemon knows
//! which program each adopted link needs without entering its namespace.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::{CStr, CString},
    fs::File,
    io,
    os::{
        fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::fs::MetadataExt as _,
    },
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::programs::ProgramFd;

use super::{
    LoaderError, PinLayout,
    device::{DEVICE_POLL, link_create, obj_pin, sys_err},
    links::remove_stale_pin,
    sys,
};

/// `BPF_TCX_EGRESS` of `enum bpf_attach_type`.
const BPF_TCX_EGRESS: u32 = 47;
/// `BPF_F_BEFORE` without a relative program: first in the device's tcx chain, so no program
/// attached earlier can pass a frame on before it is judged.
const BPF_F_BEFORE: u32 = 1 << 3;
/// Pin name prefix of the tcx links.
pub(super) const TCX_PIN_PREFIX: &str = "tcx_";

/// How a device frames its packets: which of the three programs it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Ethernet,
    Ip,
    Other,
}

impl Framing {
    /// The framing of a device of link type `arphrd`.
    fn of(arphrd: u16) -> Self {
        match arphrd {
            // Ethernet, loopback (Ethernet-framed)
            libc::ARPHRD_ETHER | libc::ARPHRD_LOOPBACK => Self::Ethernet,
            // Bare IP: none (TUN), IPIP, IPv6-in-IPv6, SIT, GRE, IP6GRE, raw IP, PPP
            0xfffe | 768 | 769 | 776 | 778 | 823 | 519 | 512 => Self::Ip,
            _ => Self::Other,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Self::Ethernet => "eth",
            Self::Ip => "ip",
            Self::Other => "other",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        [Self::Ethernet, Self::Ip, Self::Other]
            .into_iter()
            .find(|f| f.name() == s)
    }
}

/// Descriptors of the three tc programs.
pub(super) struct TcPrograms {
    pub(super) eth: ProgramFd,
    pub(super) ip: ProgramFd,
    pub(super) other: ProgramFd,
}

impl TcPrograms {
    fn get(&self, framing: Framing) -> &ProgramFd {
        match framing {
            Framing::Ethernet => &self.eth,
            Framing::Ip => &self.ip,
            Framing::Other => &self.other,
        }
    }
}

/// A pinned tcx link, by its pin name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TcxPin {
    pub(super) path: PathBuf,
    framing: Framing,
    netns: u64,
    ifindex: u32,
}

/// The pinned tcx links under `links_dir`.
pub(super) fn pinned_tcx(links_dir: &Path) -> Vec<TcxPin> {
    let Ok(entries) = std::fs::read_dir(links_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let (framing, netns, ifindex) = parse_pin_name(e.file_name().to_str()?)?;
            Some(TcxPin {
                path: e.path(),
                framing,
                netns,
                ifindex,
            })
        })
        .collect()
}

fn pin_name(framing: Framing, netns: u64, ifindex: u32) -> String {
    format!("{TCX_PIN_PREFIX}{}_{netns}_{ifindex}", framing.name())
}

fn parse_pin_name(name: &str) -> Option<(Framing, u64, u32)> {
    let mut parts = name.strip_prefix(TCX_PIN_PREFIX)?.split('_');
    let framing = Framing::from_name(parts.next()?)?;
    let netns = parts.next()?.parse().ok()?;
    let ifindex = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((framing, netns, ifindex))
}

/// Keeps the tc program attached to every network device the target can send through.
pub(super) struct DeviceWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DeviceWatch {
    /// Starts the watcher and waits for its first round: pinned links adopted, every device
    /// of this namespace and of the target's namespaces attached. An error in that round
    /// fails the start, so nothing is left half-judged.
    pub(super) fn start(
        progs: TcPrograms,
        pins: Option<PinLayout>,
        cgroup: &Path,
    ) -> Result<Self, LoaderError> {
        let own = File::open("/proc/thread-self/ns/net")
            .map_err(sys_err("opening the daemon's network namespace".to_owned()))?;
        let own_ino = own
            .metadata()
            .map_err(sys_err("reading the daemon's network namespace".to_owned()))?
            .ino();
        let mut state = Devices {
            progs,
            pins,
            cgroup: cgroup.to_owned(),
            own,
            own_ino,
            links: BTreeMap::new(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("device-watch".into())
            .spawn(move || {
                let first = state.adopt().and_then(|()| state.sync());
                let ok = first.is_ok();
                let _ = tx.send(first.map(|()| state.links.len()));
                if !ok {
                    return;
                }
                let mut next = Instant::now() + DEVICE_POLL;
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                    if Instant::now() < next {
                        continue;
                    }
                    next = Instant::now() + DEVICE_POLL;
                    if let Err(e) = state.sync() {
                        tracing::warn!("attaching tc egress to network devices failed: {e}");
                    }
                }
            })
            .map_err(sys_err("starting the network device watcher".to_owned()))?;
        let watch = Self {
            stop,
            thread: Some(thread),
        };
        let devices = rx.recv().map_err(|_| LoaderError::Sys {
            what: "the network device watcher".to_owned(),
            source: io::Error::other("it stopped before attaching"),
        })??;
        tracing::info!(
            devices,
            "tc egress attached to every network device of this namespace and of the target's"
        );
        Ok(watch)
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

/// The watcher's state: one link per (network namespace inode, ifindex).
struct Devices {
    progs: TcPrograms,
    pins: Option<PinLayout>,
    cgroup: PathBuf,
    /// The daemon's own namespace, to return to.
    own: File,
    own_ino: u64,
    links: BTreeMap<(u64, u32), (Framing, OwnedFd)>,
}

impl Devices {
    /// Re-opens the pinned tcx links whose device still exists and gives them this daemon's
    /// programs; removes the pins of links whose device (or namespace) is gone.
    fn adopt(&mut self) -> Result<(), LoaderError> {
        let Some(pins) = self.pins.clone() else {
            return Ok(());
        };
        for pin in pinned_tcx(&pins.root().join("links")) {
            let path = &pin.path;
            let fd = sys::obj_get(path)
                .map_err(sys_err(format!("opening pinned link {}", path.display())))?;
            let ifindex = tcx_ifindex(fd.as_fd())
                .map_err(sys_err(format!("reading pinned link {}", path.display())))?;
            if ifindex == 0 || ifindex != pin.ifindex {
                remove_stale_pin(path)?;
                continue;
            }
            let prog = self.progs.get(pin.framing);
            sys::link_update(fd.as_fd(), prog.as_fd()).map_err(sys_err(format!(
                "replacing the program of the pinned link {}",
                path.display()
            )))?;
            self.links
                .insert((pin.netns, pin.ifindex), (pin.framing, fd));
        }
        Ok(())
    }

    /// One round: this namespace, then every namespace of the target's processes; links of
    /// devices that are gone are let go.
    fn sync(&mut self) -> Result<(), LoaderError> {
        self.sync_namespace(self.own_ino)?;
        for (ino, pid) in target_namespaces(&self.cgroup, self.own_ino) {
            let Ok(ns) = File::open(format!("/proc/{pid}/ns/net")) else {
                continue; // the process exited
            };
            if nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
                continue;
            }
            let res = self.sync_namespace(ino);
            nix::sched::setns(self.own.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                |e| LoaderError::Sys {
                    what: "returning to the daemon's network namespace".to_owned(),
                    source: e.into(),
                },
            )?;
            if let Err(e) = res {
                tracing::warn!(
                    netns = ino,
                    "attaching tc egress in the target's namespace: {e}"
                );
            }
        }
        // Links whose device is gone (with its namespace, for one) enforce nothing.
        let defunct: Vec<(u64, u32)> = self
            .links
            .iter()
            .filter(|(_, (_, fd))| tcx_ifindex(fd.as_fd()).is_ok_and(|i| i == 0))
            .map(|(k, _)| *k)
            .collect();
        for key in defunct {
            self.release(key);
        }
        Ok(())
    }

    fn release(&mut self, key: (u64, u32)) {
        if let Some((framing, _)) = self.links.remove(&key)
            && let Some(p) = &self.pins
        {
            let _ =
                std::fs::remove_file(p.root().join("links").join(pin_name(framing, key.0, key.1)));
        }
    }

    /// Attaches to the devices of the calling thread's namespace (inode `ino`) that have no
    /// link yet and lets go of the ones that are gone.
    fn sync_namespace(&mut self, ino: u64) -> Result<(), LoaderError> {
        let now = interfaces().map_err(sys_err("listing network devices".to_owned()))?;
        let present: BTreeSet<u32> = now.iter().map(|(i, _)| *i).collect();
        let gone: Vec<(u64, u32)> = self
            .links
            .keys()
            .filter(|(n, i)| *n == ino && !present.contains(i))
            .copied()
            .collect();
        for key in gone {
            self.release(key);
        }
        for (ifindex, name) in now {
            if self.links.contains_key(&(ino, ifindex)) {
                continue;
            }
            let Ok(ty) = link_type(&name) else {
                continue; // gone again between the listing and the look
            };
            let framing = Framing::of(ty);
            let prog = self.progs.get(framing);
            let link = match link_create(prog.as_fd(), ifindex, BPF_TCX_EGRESS, BPF_F_BEFORE) {
                Ok(l) => l,
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => continue,
                Err(e) => {
                    return Err(LoaderError::Sys {
                        what: format!("attaching tc egress to {}", name.to_string_lossy()),
                        source: e,
                    });
                }
            };
            if let Some(p) = &self.pins {
                let path = p.root().join("links").join(pin_name(framing, ino, ifindex));
                let _ = std::fs::remove_file(&path);
                obj_pin(link.as_fd(), &path)
                    .map_err(sys_err(format!("pinning the link {}", path.display())))?;
            }
            tracing::debug!(netns = ino, ifindex, device = %name.to_string_lossy(), "tc egress attached");
            self.links.insert((ino, ifindex), (framing, link));
        }
        Ok(())
    }
}

/// The network namespaces (inode, a pid in it) of the processes in `cgroup` and below, other
/// than `own`.
fn target_namespaces(cgroup: &Path, own: u64) -> BTreeMap<u64, u32> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![cgroup.to_owned()];
    while let Some(dir) = dirs.pop() {
        if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in text.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                if let Ok(m) = std::fs::metadata(format!("/proc/{pid}/ns/net"))
                    && m.ino() != own
                {
                    out.entry(m.ino()).or_insert(pid);
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            dirs.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    out
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
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR as _, &mut ifr) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the union member the ioctl wrote.
    Ok(unsafe { ifr.ifr_ifru.ifru_hwaddr.sa_family })
}

/// The device a tcx link is attached to (0 once the device is gone).
fn tcx_ifindex(link: BorrowedFd<'_>) -> io::Result<u32> {
    // struct bpf_link_info: type, id, prog_id, then a union aligned to 8 whose tcx member is
    // { u32 ifindex; u32 attach_type; }.
    let mut buf = [0u64; 32];
    sys::obj_info(link, &mut buf)?;
    // `ifindex` is the first 4 bytes of the union, at byte 16.
    let [a, b, c, d, ..] = buf[2].to_ne_bytes();
    Ok(u32::from_ne_bytes([a, b, c, d]))
}

#[cfg(test)]
mod tests;
