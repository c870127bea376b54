//! Loading the kernel programs, attaching them to a cgroup, and checking with the kernel that
//! they are attached.

mod attach;
mod connected;
mod counters;
mod device;
mod domains;
mod links;
mod marking;
mod netdev;
mod pins;
mod resolver;
pub mod sys;
mod tables;

use std::os::fd::OwnedFd;

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{
        CgroupSkb, CgroupSockAddr, SockOps,
        links::{FdLink, PinnedLink},
    },
};
use ollama_egress_common::{
    ALL_MAPS, EVENTS_MAP, INBOUND_V4_MAPS, INBOUND_V6_MAPS, PACKET_COUNTERS_MAP, POLICY_V4_MAPS,
    POLICY_V6_MAPS, STATS_MAP,
};

pub use attach::{AttachPoint, attached_program_ids};

pub use counters::{CounterSnapshot, KernelCounters};
pub use domains::DomainKey;
pub use links::Follow;
pub use marking::{MARK_LINKS, MARK_MAPS, MarkOffsets};
pub use pins::{DirLock, LockError, PinError, PinLayout, cgroup_id, holder_text, lock_dir};
pub use tables::{PolicyTables, TableError, TablePolicy};

/// Default bpffs directory of the pins (see [`crate::defaults`]).
pub use crate::defaults::PIN_DIR as DEFAULT_PIN_DIR;

/// The cgroup_skb programs for the resolver's cgroup (`--dns-cgroup`): they learn DNS answers
/// and never drop. Loaded (and so verified) with the others; attached only to that cgroup.
pub const RESOLVER_PROGRAMS: [&str; 2] = ["dns_egress", "dns_ingress"];

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
    /// The cgroup id (directory inode) the links were attached to, once attached.
    attached_cgroup: Option<u64>,
    /// The tc programs' links on the network devices, kept up to date while this lives.
    devices: Option<netdev::DeviceWatch>,
    /// The link of `connected_destroyed` (see `connected`), once attached; apart from `links`,
    /// which follow the target cgroup.
    cleanup: Option<LinkHandle>,
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
        Self::load_for(sizes, pins, false)
    }

    /// [`load`](Self::load), for enforce mode when `enforce`: the programs then deny when they
    /// find no valid policy slot (the kernel knows it is enforcing without a policy).
    pub fn load_for(
        sizes: MapSizes,
        pins: Option<&PinLayout>,
        enforce: bool,
    ) -> Result<Self, LoaderError> {
        if EBPF_OBJECT.is_empty() {
            return Err(LoaderError::NoObject);
        }
        let mut loader = EbpfLoader::new();
        for name in POLICY_V4_MAPS
            .iter()
            .chain(POLICY_V6_MAPS.iter())
            .chain(INBOUND_V4_MAPS.iter())
            .chain(INBOUND_V6_MAPS.iter())
        {
            loader.map_max_entries(name, sizes.max_prefixes.max(1));
        }
        loader.map_max_entries(EVENTS_MAP, sizes.event_buffer_bytes);
        let enforce_flag = u32::from(enforce);
        loader.override_global(
            ollama_egress_common::ENFORCE_WITHOUT_POLICY_GLOBAL,
            &enforce_flag,
            true,
        );
        if let Some(p) = pins {
            p.prepare()?;
            for name in ALL_MAPS.into_iter().chain(MARK_MAPS) {
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
            let res = match (point.sock_addr_type(), point) {
                (Some(_), _) => <&mut CgroupSockAddr>::try_from(prog).and_then(|p| p.load()),
                (None, AttachPoint::SockOps) => {
                    <&mut SockOps>::try_from(prog).and_then(|p| p.load())
                }
                (None, _) => <&mut CgroupSkb>::try_from(prog).and_then(|p| p.load()),
            };
            res.map_err(|source| LoaderError::Program {
                what: format!("loading program {name}"),
                source,
            })?;
        }
        device::load_programs(&mut ebpf)?;
        resolver::load_programs(&mut ebpf)?;
        Ok(Self {
            ebpf,
            pins: pins.cloned(),
            links: Vec::new(),
            attached_cgroup: None,
            devices: None,
            cleanup: None,
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
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map, LoaderError> {
    ebpf.take_map(name).ok_or_else(|| LoaderError::Missing {
        kind: "map",
        name: name.to_owned(),
    })
}
