//! Loading the kernel programs, attaching them to a cgroup, and checking with the kernel that
//! they are attached.

mod attach;
mod pins;
pub mod sys;
mod tables;

use std::{
    fs::File,
    os::fd::{AsFd as _, OwnedFd},
    path::Path,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSockAddr, Program,
        links::{FdLink, PinnedLink},
    },
};
use ollama_egress_common::{
    ALL_MAPS, COUNTER_ENTRIES, Counter, DIRECTION_COUNT, EVENTS_MAP, PACKET_COUNTERS_MAP,
    POLICY_V4_MAPS, POLICY_V6_MAPS, STAT_EVENTS_LOST, STATS_MAP, VERDICT_COUNT, counter_index,
};

pub use attach::{AttachPoint, attached_program_ids};
pub use pins::{PinError, PinLayout, cgroup_id};
pub use tables::{PolicyTables, TableError, TablePolicy};

/// Default bpffs directory of the pins.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/ollama-egress";

/// The kernel object built by `build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ollama-egress"));

/// Errors of loading and attaching.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// The binary was built with `AYA_BUILD_SKIP` and carries no kernel object.
    #[error(
        "this build of ollama-egress carries no eBPF object (built with AYA_BUILD_SKIP=1); rebuild it with bpf-linker installed (`cargo xtask setup`)"
    )]
    NoObject,
    /// The kernel refused the object or a map.
    #[error("loading the eBPF programs failed: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program or map is missing from the object.
    #[error("the eBPF object has no {kind} named {name}")]
    Missing {
        /// "program" or "map".
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A program operation failed (load, attach).
    #[error("{what}: {source}")]
    Program {
        /// What was being done.
        what: String,
        /// The kernel's answer.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map operation failed.
    #[error("{what}: {source}")]
    Map {
        /// What was being done.
        what: String,
        /// The kernel's answer.
        #[source]
        source: aya::maps::MapError,
    },
    /// The target cgroup directory could not be opened.
    #[error("cannot open cgroup {path}: {source}")]
    Cgroup {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Asking the kernel which programs are attached failed.
    #[error("querying the programs attached to {path}: {source}")]
    Query {
        /// The cgroup.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Pinned links belong to another cgroup than the target.
    #[error(
        "enforcement pinned in {pin_dir} is attached to another cgroup (id {pinned}) than {path} (id {target}); run `ollama-egress detach --pin-dir {pin_dir}` first"
    )]
    PinnedElsewhere {
        /// The pin directory.
        pin_dir: String,
        /// The target cgroup.
        path: String,
        /// Its id.
        target: u64,
        /// The cgroup id of the pinned link.
        pinned: u64,
    },
    /// Pinning or re-opening pinned objects failed.
    #[error(transparent)]
    Pin(#[from] PinError),
    /// A raw bpf(2) call on a pinned object failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// After attaching, the kernel does not list a program on the cgroup.
    #[error("program {program} is not attached to {path} although the attach call succeeded")]
    NotAttached {
        /// The program.
        program: &'static str,
        /// The cgroup.
        path: String,
    },
}

/// The kernel programs' log, forwarded to the `log` facade (and from there to `tracing`).
pub type KernelLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

/// Sizes of the maps, chosen before the object is loaded.
#[derive(Clone, Copy, Debug)]
pub struct MapSizes {
    /// Capacity of each policy trie (per family and slot).
    pub max_prefixes: u32,
    /// Size of the event ring buffer in bytes (a power of two, at least one page).
    pub event_buffer_bytes: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        Self {
            max_prefixes: ollama_egress_common::DEFAULT_MAX_PREFIXES,
            event_buffer_bytes: ollama_egress_common::DEFAULT_RINGBUF_BYTES,
        }
    }
}

/// The loaded (not yet attached) programs and their maps.
pub struct Loaded {
    ebpf: Ebpf,
    pins: Option<PinLayout>,
    /// Links this process created and pinned, or re-opened from pins.
    links: Vec<LinkHandle>,
}

/// A link kept open by the daemon. Dropping it closes the descriptor; a pinned link stays
/// attached, an unpinned one is detached.
enum LinkHandle {
    Pinned(#[allow(dead_code)] PinnedLink),
    Adopted(#[allow(dead_code)] OwnedFd),
    Owned(#[allow(dead_code)] FdLink),
}

/// How [`Loaded::attach`] attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// New links were created.
    Created,
    /// Pinned links were found and given the new programs, without a moment unattached.
    Adopted,
}

impl Loaded {
    /// Loads the programs into the kernel and verifies them. With `pins`, every map is
    /// re-opened from its pin when one exists (so a restarted daemon keeps the policy, the
    /// counters and the unread events) and pinned otherwise.
    pub fn load(sizes: MapSizes, pins: Option<&PinLayout>) -> Result<Self, LoaderError> {
        if EBPF_OBJECT.is_empty() {
            return Err(LoaderError::NoObject);
        }
        let mut loader = EbpfLoader::new();
        for name in POLICY_V4_MAPS.iter().chain(POLICY_V6_MAPS.iter()) {
            loader.map_max_entries(name, sizes.max_prefixes.max(1));
        }
        loader.map_max_entries(EVENTS_MAP, sizes.event_buffer_bytes);
        if let Some(p) = pins {
            p.prepare()?;
            for name in ALL_MAPS {
                loader.map_pin_path(name, p.map(name));
            }
        }
        let mut ebpf = loader.load(EBPF_OBJECT)?;
        for point in AttachPoint::ALL {
            let name = point.program_name();
            let prog = ebpf.program_mut(name).ok_or_else(|| LoaderError::Missing {
                kind: "program",
                name: name.to_owned(),
            })?;
            let res = match point.sock_addr_type() {
                Some(_) => <&mut CgroupSockAddr>::try_from(prog).and_then(|p| p.load()),
                None => <&mut CgroupSkb>::try_from(prog).and_then(|p| p.load()),
            };
            res.map_err(|source| LoaderError::Program {
                what: format!("loading program {name}"),
                source,
            })?;
        }
        Ok(Self {
            ebpf,
            pins: pins.cloned(),
            links: Vec::new(),
        })
    }

    /// Takes the policy tables out of the object. Call once, before attaching.
    pub fn policy_tables(&mut self) -> Result<PolicyTables, LoaderError> {
        PolicyTables::from_ebpf(&mut self.ebpf)
    }

    /// Takes the event ring buffer out of the object.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, LoaderError> {
        let map = take_map(&mut self.ebpf, EVENTS_MAP)?;
        RingBuf::try_from(map).map_err(|source| LoaderError::Map {
            what: format!("opening {EVENTS_MAP}"),
            source,
        })
    }

    /// Takes the buffer of the kernel programs' own log messages (aya-log) out of the object.
    pub fn take_logger(&mut self) -> Result<KernelLogger, LoaderError> {
        aya_log::EbpfLogger::init(&mut self.ebpf).map_err(|e| LoaderError::Sys {
            what: "opening the kernel programs' log buffer".to_owned(),
            source: std::io::Error::other(e),
        })
    }

    /// Takes the kernel counters out of the object.
    pub fn take_counters(&mut self) -> Result<KernelCounters, LoaderError> {
        let packets = take_map(&mut self.ebpf, PACKET_COUNTERS_MAP)?;
        let stats = take_map(&mut self.ebpf, STATS_MAP)?;
        Ok(KernelCounters {
            packets: PerCpuArray::try_from(packets).map_err(|source| LoaderError::Map {
                what: format!("opening {PACKET_COUNTERS_MAP}"),
                source,
            })?,
            stats: PerCpuArray::try_from(stats).map_err(|source| LoaderError::Map {
                what: format!("opening {STATS_MAP}"),
                source,
            })?,
        })
    }

    /// Attaches every program to `cgroup` and checks with the kernel that each is listed there.
    ///
    /// With pins: links already pinned are re-used, their programs replaced by this object's
    /// in one `BPF_LINK_UPDATE` each, so the hook is never empty; missing links are created
    /// and pinned. Without pins the links live as long as this object.
    ///
    /// aya attaches with `bpf_link_create`, whose cgroup links always coexist with other
    /// programs on the cgroup (systemd's IP filters, for one) and which takes no attach flags:
    /// `CgroupAttachMode::Single` is the mode that passes none.
    pub fn attach(&mut self, cgroup: &Path) -> Result<Attachment, LoaderError> {
        let dir = File::open(cgroup).map_err(|source| LoaderError::Cgroup {
            path: cgroup.display().to_string(),
            source,
        })?;
        let adopted = self.adopt_pinned_links(cgroup)?;
        for point in AttachPoint::ALL {
            if adopted.contains(&point) {
                continue;
            }
            let link = self.create_link(point, &dir, cgroup)?;
            let handle = match &self.pins {
                Some(p) => {
                    LinkHandle::Pinned(link.pin(p.link(point)).map_err(|e| LoaderError::Sys {
                        what: format!("pinning the {} link", point.program_name()),
                        source: std::io::Error::other(e),
                    })?)
                }
                None => LinkHandle::Owned(link),
            };
            self.links.push(handle);
        }
        if let Some(p) = self.pins.clone() {
            self.pin_programs(&p)?;
        }
        self.verify_attached(cgroup)?;
        Ok(if adopted.is_empty() {
            Attachment::Created
        } else {
            Attachment::Adopted
        })
    }

    fn program(&mut self, point: AttachPoint) -> Result<&mut Program, LoaderError> {
        let name = point.program_name();
        self.ebpf
            .program_mut(name)
            .ok_or_else(|| LoaderError::Missing {
                kind: "program",
                name: name.to_owned(),
            })
    }

    fn create_link(
        &mut self,
        point: AttachPoint,
        dir: &File,
        cgroup: &Path,
    ) -> Result<FdLink, LoaderError> {
        let name = point.program_name();
        let what = format!("attaching {name} to {}", cgroup.display());
        let perr = |source| LoaderError::Program {
            what: what.clone(),
            source,
        };
        let lerr = |e: aya::programs::links::LinkError| LoaderError::Sys {
            what: what.clone(),
            source: std::io::Error::other(e),
        };
        let prog = self.program(point)?;
        match point.skb_type() {
            Some(ty) => {
                let p = <&mut CgroupSkb>::try_from(prog).map_err(perr)?;
                let id = p.attach(dir, ty, CgroupAttachMode::Single).map_err(perr)?;
                FdLink::try_from(p.take_link(id).map_err(perr)?).map_err(lerr)
            }
            None => {
                let p = <&mut CgroupSockAddr>::try_from(prog).map_err(perr)?;
                let id = p.attach(dir, CgroupAttachMode::Single).map_err(perr)?;
                FdLink::try_from(p.take_link(id).map_err(perr)?).map_err(lerr)
            }
        }
    }

    /// Gives every pinned link this object's program; returns the hooks adopted. Checks first
    /// that all pinned links belong to `cgroup`, so nothing is changed on a mismatch.
    fn adopt_pinned_links(&mut self, cgroup: &Path) -> Result<Vec<AttachPoint>, LoaderError> {
        let Some(pins) = self.pins.clone() else {
            return Ok(Vec::new());
        };
        let target = cgroup_id(cgroup).map_err(|source| LoaderError::Cgroup {
            path: cgroup.display().to_string(),
            source,
        })?;
        let mut found = Vec::new();
        for point in AttachPoint::ALL {
            let path = pins.link(point);
            if !path.exists() {
                continue;
            }
            let fd = sys::obj_get(&path).map_err(|source| LoaderError::Sys {
                what: format!("opening pinned link {}", path.display()),
                source,
            })?;
            let info = sys::link_info(fd.as_fd()).map_err(|source| LoaderError::Sys {
                what: format!("reading pinned link {}", path.display()),
                source,
            })?;
            if info.cgroup_id != target {
                return Err(LoaderError::PinnedElsewhere {
                    pin_dir: pins.root().display().to_string(),
                    path: cgroup.display().to_string(),
                    target,
                    pinned: info.cgroup_id,
                });
            }
            found.push((point, fd));
        }
        let mut adopted = Vec::new();
        for (point, link) in found {
            let name = point.program_name();
            let prog = self.program(point)?;
            let prog_fd = prog.fd().map_err(|source| LoaderError::Program {
                what: format!("reading the descriptor of {name}"),
                source,
            })?;
            sys::link_update(link.as_fd(), prog_fd.as_fd()).map_err(|source| LoaderError::Sys {
                what: format!("replacing the program of the pinned {name} link"),
                source,
            })?;
            self.links.push(LinkHandle::Adopted(link));
            adopted.push(point);
        }
        Ok(adopted)
    }

    /// Pins (or re-pins) the programs, for inspection with bpftool.
    fn pin_programs(&mut self, pins: &PinLayout) -> Result<(), LoaderError> {
        for point in AttachPoint::ALL {
            let path = pins.prog(point);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(LoaderError::Sys {
                        what: format!("removing the old pin {}", path.display()),
                        source: e,
                    });
                }
                _ => {}
            }
            let prog = self.program(point)?;
            prog.pin(&path).map_err(|e| LoaderError::Sys {
                what: format!("pinning program {}", path.display()),
                source: std::io::Error::other(e),
            })?;
        }
        Ok(())
    }

    /// Checks with the kernel that every program of this object is attached to `cgroup`.
    pub fn verify_attached(&self, cgroup: &Path) -> Result<(), LoaderError> {
        for point in AttachPoint::ALL {
            let id = self.program_id(point)?;
            let ids = attached_program_ids(cgroup, point).map_err(|source| LoaderError::Query {
                path: cgroup.display().to_string(),
                source,
            })?;
            if !ids.contains(&id) {
                return Err(LoaderError::NotAttached {
                    program: point.program_name(),
                    path: cgroup.display().to_string(),
                });
            }
        }
        Ok(())
    }

    /// The kernel id of the program for `point`.
    pub fn program_id(&self, point: AttachPoint) -> Result<u32, LoaderError> {
        let name = point.program_name();
        let prog = self
            .ebpf
            .program(name)
            .ok_or_else(|| LoaderError::Missing {
                kind: "program",
                name: name.to_owned(),
            })?;
        let info = prog.info().map_err(|source| LoaderError::Program {
            what: format!("reading the id of {name}"),
            source,
        })?;
        Ok(info.id())
    }
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map, LoaderError> {
    ebpf.take_map(name).ok_or_else(|| LoaderError::Missing {
        kind: "map",
        name: name.to_owned(),
    })
}

/// Packet/byte counters and statistics kept by the kernel programs.
pub struct KernelCounters {
    packets: PerCpuArray<MapData, Counter>,
    stats: PerCpuArray<MapData, u64>,
}

/// A snapshot of [`KernelCounters`], summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// `[direction][verdict]`.
    pub packets: [[Counter; VERDICT_COUNT as usize]; DIRECTION_COUNT as usize],
    /// Events the ring buffer could not take.
    pub events_lost: u64,
}

impl KernelCounters {
    /// Reads and sums the per-CPU counters.
    pub fn snapshot(&self) -> Result<CounterSnapshot, LoaderError> {
        let mut snap = CounterSnapshot::default();
        for d in 0..DIRECTION_COUNT {
            for v in 0..VERDICT_COUNT {
                let idx = counter_index(d, v);
                debug_assert!(idx < COUNTER_ENTRIES);
                let values = self
                    .packets
                    .get(&idx, 0)
                    .map_err(|source| LoaderError::Map {
                        what: format!("reading {PACKET_COUNTERS_MAP}[{idx}]"),
                        source,
                    })?;
                let slot = &mut snap.packets[d as usize][v as usize];
                for c in values.iter() {
                    slot.packets += c.packets;
                    slot.bytes += c.bytes;
                }
            }
        }
        let lost = self
            .stats
            .get(&STAT_EVENTS_LOST, 0)
            .map_err(|source| LoaderError::Map {
                what: format!("reading {STATS_MAP}"),
                source,
            })?;
        snap.events_lost = lost.iter().sum();
        Ok(snap)
    }
}
