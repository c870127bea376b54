//! Attaching: new links (pinned in enforce mode), or pinned links adopted with the new
//! programs swapped in; checking with the kernel that every program is attached.

use std::{fs::File, os::fd::AsFd as _, path::Path};

use aya::programs::{CgroupAttachMode, CgroupSkb, CgroupSockAddr, Program, links::FdLink};

use super::{
    AttachPoint, Attachment, LinkHandle, Loaded, LoaderError, PinLayout, attached_program_ids,
    cgroup_id, sys,
};

/// What [`Loaded::follow`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    /// The links are on the cgroup now at the path.
    Same,
    /// No cgroup is at the path (removed, not yet made again).
    Gone,
    /// The cgroup at the path was replaced; the programs are attached to the new one.
    Reattached {
        /// Id of the cgroup the links were on.
        old: u64,
        /// Id of the cgroup they are on now.
        new: u64,
    },
}

impl Loaded {
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
        self.attach_devices(cgroup, &dir)?;
        if let Some(p) = self.pins.clone() {
            self.pin_programs(&p)?;
        }
        self.verify_attached(cgroup)?;
        self.attached_cgroup = Some(cgroup_id(cgroup).map_err(|source| LoaderError::Cgroup {
            path: cgroup.display().to_string(),
            source,
        })?);
        Ok(if adopted.is_empty() {
            Attachment::Created
        } else {
            Attachment::Adopted
        })
    }

    /// Follows the target cgroup when its directory was replaced: systemd removes a unit's
    /// cgroup and makes a new one at the same path on every restart, and links attached to the
    /// old one enforce nothing for the processes of the new one.
    ///
    /// Compares the inode of `cgroup` (its cgroup id) with the cgroup the links were attached
    /// to; when it differs, attaches every program to the new cgroup, re-pins the new links in
    /// place of the old ones, and drops the old links. A detach by the user (`detach`) leaves
    /// the id unchanged and is not undone here.
    pub fn follow(&mut self, cgroup: &Path) -> Result<Follow, LoaderError> {
        let Some(attached) = self.attached_cgroup else {
            return Ok(Follow::Same);
        };
        let current = match cgroup_id(cgroup) {
            Ok(id) => id,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Follow::Gone),
            Err(source) => {
                return Err(LoaderError::Cgroup {
                    path: cgroup.display().to_string(),
                    source,
                });
            }
        };
        if current == attached {
            return Ok(Follow::Same);
        }
        let dir = match File::open(cgroup) {
            Ok(d) => d,
            // Removed again between the stat and the open: try on the next call.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Follow::Gone),
            Err(source) => {
                return Err(LoaderError::Cgroup {
                    path: cgroup.display().to_string(),
                    source,
                });
            }
        };
        let mut fresh = Vec::with_capacity(AttachPoint::ALL.len());
        for point in AttachPoint::ALL {
            fresh.push((point, self.create_link(point, &dir, cgroup)?));
        }
        let mut handles = Vec::with_capacity(fresh.len());
        for (point, link) in fresh {
            handles.push(match &self.pins {
                Some(p) => {
                    let path = p.link(point);
                    match std::fs::remove_file(&path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(LoaderError::Sys {
                                what: format!("removing the old pin {}", path.display()),
                                source: e,
                            });
                        }
                        _ => {}
                    }
                    LinkHandle::Pinned(link.pin(&path).map_err(|e| LoaderError::Sys {
                        what: format!("pinning the {} link", point.program_name()),
                        source: std::io::Error::other(e),
                    })?)
                }
                None => LinkHandle::Owned(link),
            });
        }
        // The old links belong to the removed cgroup: closing them detaches nothing alive.
        self.links = handles;
        self.attached_cgroup = Some(current);
        // The device programs judge by the target's id and the guards sit on the cgroup: both
        // follow it.
        self.retarget_devices(cgroup, &dir)?;
        self.verify_attached(cgroup)?;
        Ok(Follow::Reattached {
            old: attached,
            new: current,
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
            if info.cgroup_id == 0 {
                // Its cgroup is gone (systemd removes a stopped unit's cgroup and makes a new one
                // on the next start): the link enforces nothing any more. Attach afresh.
                tracing::warn!(
                    program = point.program_name(),
                    "the pinned link's cgroup was removed; attaching to {} afresh",
                    cgroup.display()
                );
                std::fs::remove_file(&path).map_err(|source| LoaderError::Sys {
                    what: format!("removing the stale pin {}", path.display()),
                    source,
                })?;
                continue;
            }
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
        self.verify_guards(cgroup)
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

/// Maps of the `--process` marking (see the kernel's `exec` module), pinned with the others.
pub const MARK_MAPS: [&str; 4] = [
    "TARGET_CONFIG",
    "TARGET_NAME",
    "TARGET_TASKS",
    "TARGET_SOCKS",
];

/// Names of the pinned links of the `--process` marking programs (under `<pin-dir>/links/`).
pub const MARK_LINKS: [&str; 6] = [
    MARK_PROGRAMS[0].0,
    MARK_PROGRAMS[1].0,
    MARK_PROGRAMS[2].0,
    MARK_PROGRAMS[3].0,
    MARK_PROGRAMS[4].0,
    MARK_PROGRAMS[5].0,
];

/// The programs that mark `--process` targets: name, and tracepoint (category, name) or `None`
/// for the cgroup sock programs attached to the cgroup v2 root.
const MARK_PROGRAMS: [(&str, Option<(&str, &str)>); 6] = [
    ("mark_exec", Some(("sched", "sched_process_exec"))),
    ("mark_rename", Some(("task", "task_rename"))),
    ("mark_fork", Some(("sched", "sched_process_fork"))),
    ("mark_exit", Some(("sched", "sched_process_exit"))),
    ("target_sock_create", None),
    ("target_sock_release", None),
];

/// `TARGET_CONFIG` index: judge only marked tasks.
const CONFIG_MARKED_ONLY: u32 = 0;
/// `TARGET_CONFIG` index: offset of `group_dead` in the `sched_process_exit` record.
const CONFIG_EXIT_GROUP_DEAD: u32 = 1;
/// `TARGET_CONFIG` index: the `task_rename` record has the layout the kernel program reads.
const CONFIG_RENAME_LAYOUT: u32 = 2;
/// Offsets of `pid` and `newcomm` in the `task_rename` record the kernel program reads.
const RENAME_LAYOUT: (u32, u32) = (8, 28);

/// Offsets the marking programs read from tracepoint records, from the tracepoints' formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MarkOffsets {
    /// `group_dead` of `sched_process_exit` (a `bool`), if the kernel has it.
    pub exit_group_dead: Option<u32>,
    /// `pid` of `task_rename`.
    pub rename_pid: Option<u32>,
    /// `newcomm` of `task_rename`.
    pub rename_comm: Option<u32>,
}

impl MarkOffsets {
    /// Whether `task_rename` is laid out as the kernel program reads it.
    pub fn rename_layout_known(&self) -> bool {
        (self.rename_pid, self.rename_comm) == (Some(RENAME_LAYOUT.0), Some(RENAME_LAYOUT.1))
    }
}

impl Loaded {
    /// `--process` mode, before [`Loaded::attach`] to the cgroup v2 root: tells the programs to
    /// judge only marked tasks and their sockets, and which name marks a task at exec.
    pub fn configure_marking(
        &mut self,
        comm: [u8; 16],
        offsets: MarkOffsets,
    ) -> Result<(), LoaderError> {
        let merr = |what: &str| {
            let what = what.to_owned();
            move |source| LoaderError::Map { what, source }
        };
        let mut names: aya::maps::Array<_, [u8; 16]> =
            aya::maps::Array::try_from(self.map_mut("TARGET_NAME")?)
                .map_err(merr("opening TARGET_NAME"))?;
        names.set(0, comm, 0).map_err(merr("writing TARGET_NAME"))?;
        let mut cfg: aya::maps::Array<_, u32> =
            aya::maps::Array::try_from(self.map_mut("TARGET_CONFIG")?)
                .map_err(merr("opening TARGET_CONFIG"))?;
        if !offsets.rename_layout_known() {
            tracing::warn!(
                ?offsets,
                "the task_rename tracepoint has another layout on this kernel: a process that takes the target's name after exec is marked by the daemon's scan only"
            );
        }
        for (index, value) in [
            (CONFIG_EXIT_GROUP_DEAD, offsets.exit_group_dead.unwrap_or(0)),
            (
                CONFIG_RENAME_LAYOUT,
                u32::from(offsets.rename_layout_known()),
            ),
        ] {
            cfg.set(index, value, 0)
                .map_err(merr("writing TARGET_CONFIG"))?;
        }
        cfg.set(CONFIG_MARKED_ONLY, 1, 0)
            .map_err(merr("writing TARGET_CONFIG"))?;
        Ok(())
    }

    /// `--process` mode: loads and attaches the marking programs (the exec, fork and exit
    /// tracepoints, and sock_create/sock_release on `root`), pinned in enforce mode so marking
    /// goes on without a daemon. Links pinned by an earlier daemon are replaced.
    pub fn attach_marking(&mut self, root: &Path) -> Result<(), LoaderError> {
        let dir = File::open(root).map_err(|source| LoaderError::Cgroup {
            path: root.display().to_string(),
            source,
        })?;
        for (name, tracepoint) in MARK_PROGRAMS {
            let what = format!("attaching {name}");
            let perr = |source| LoaderError::Program {
                what: what.clone(),
                source,
            };
            let lerr = |e: aya::programs::links::LinkError| LoaderError::Sys {
                what: what.clone(),
                source: std::io::Error::other(e),
            };
            let prog = self
                .ebpf
                .program_mut(name)
                .ok_or_else(|| LoaderError::Missing {
                    kind: "program",
                    name: name.to_owned(),
                })?;
            let link = match tracepoint {
                Some((category, event)) => {
                    let p = <&mut aya::programs::TracePoint>::try_from(prog).map_err(perr)?;
                    p.load().map_err(perr)?;
                    let id = p.attach(category, event).map_err(perr)?;
                    FdLink::try_from(p.take_link(id).map_err(perr)?).map_err(lerr)?
                }
                None => {
                    let p = <&mut aya::programs::CgroupSock>::try_from(prog).map_err(perr)?;
                    p.load().map_err(perr)?;
                    let id = p.attach(&dir, CgroupAttachMode::Single).map_err(perr)?;
                    FdLink::try_from(p.take_link(id).map_err(perr)?).map_err(lerr)?
                }
            };
            let handle = match &self.pins {
                Some(pins) => {
                    let path = pins.root().join("links").join(name);
                    match std::fs::remove_file(&path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(LoaderError::Sys {
                                what: format!("removing the old pin {}", path.display()),
                                source: e,
                            });
                        }
                        _ => {}
                    }
                    LinkHandle::Pinned(link.pin(&path).map_err(|e| LoaderError::Sys {
                        what: format!("pinning the {name} link"),
                        source: std::io::Error::other(e),
                    })?)
                }
                None => LinkHandle::Owned(link),
            };
            self.links.push(handle);
        }
        Ok(())
    }

    /// The map of marked tasks, for marking the processes found by scanning `/proc`.
    pub fn take_marks(
        &mut self,
    ) -> Result<aya::maps::HashMap<aya::maps::MapData, u32, u32>, LoaderError> {
        self.take_hash("TARGET_TASKS")
    }

    /// The map of the marked tasks' sockets, for the sockets they had before they were marked.
    pub fn take_target_socks(
        &mut self,
    ) -> Result<aya::maps::HashMap<aya::maps::MapData, u64, u32>, LoaderError> {
        self.take_hash("TARGET_SOCKS")
    }

    fn take_hash<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &str,
    ) -> Result<aya::maps::HashMap<aya::maps::MapData, K, V>, LoaderError> {
        let map = self
            .ebpf
            .take_map(name)
            .ok_or_else(|| LoaderError::Missing {
                kind: "map",
                name: name.to_owned(),
            })?;
        aya::maps::HashMap::try_from(map).map_err(|source| LoaderError::Map {
            what: format!("opening {name}"),
            source,
        })
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map, LoaderError> {
        self.ebpf.map_mut(name).ok_or_else(|| LoaderError::Missing {
            kind: "map",
            name: name.to_owned(),
        })
    }
}
