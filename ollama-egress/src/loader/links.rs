//! Attaching: new links (pinned in enforce mode), or pinned links adopted with the new
//! programs swapped in; checking with the kernel that every program is attached.

use std::{
    fs::File,
    os::fd::{AsFd as _, OwnedFd},
    path::Path,
};

use aya::programs::{
    CgroupAttachMode, CgroupSkb, CgroupSockAddr, Program, ProgramError, SockOps,
    links::{FdLink, LinkError},
};

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
            let pin = self.pins.as_ref().map(|p| p.link(point));
            self.links
                .push(keep_link(link, pin.as_deref(), point.program_name())?);
        }
        self.attach_devices(cgroup, &dir)?;
        if self.cleanup.is_none() {
            self.attach_connected_cleanup()?;
        }
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
            let pin = self.pins.as_ref().map(|p| p.link(point));
            handles.push(keep_link(link, pin.as_deref(), point.program_name())?);
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
        self.program_mut_named(point.program_name())
    }

    /// The program `name` of the object, to load or attach.
    pub(super) fn program_mut_named(&mut self, name: &str) -> Result<&mut Program, LoaderError> {
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
        let what = format!("attaching {} to {}", point.program_name(), cgroup.display());
        let prog = self.program(point)?;
        if point == AttachPoint::SockOps {
            return fd_link(&what, || {
                let p = <&mut SockOps>::try_from(prog)?;
                let id = p.attach(dir, CgroupAttachMode::Single)?;
                p.take_link(id)
            });
        }
        match point.skb_type() {
            Some(ty) => fd_link(&what, || {
                let p = <&mut CgroupSkb>::try_from(prog)?;
                let id = p.attach(dir, ty, CgroupAttachMode::Single)?;
                p.take_link(id)
            }),
            None => fd_link(&what, || {
                let p = <&mut CgroupSockAddr>::try_from(prog)?;
                let id = p.attach(dir, CgroupAttachMode::Single)?;
                p.take_link(id)
            }),
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
            let (fd, info) = open_pinned(&path)?;
            if info.cgroup_id == 0 {
                // Its cgroup is gone (systemd removes a stopped unit's cgroup and makes a new one
                // on the next start): the link enforces nothing any more. Attach afresh.
                tracing::warn!(
                    program = point.program_name(),
                    "the pinned link's cgroup was removed; attaching to {} afresh",
                    cgroup.display()
                );
                remove_stale_pin(&path)?;
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
            self.adopt_link(point.program_name(), link)?;
            adopted.push(point);
        }
        Ok(adopted)
    }

    /// Pins (or re-pins) the programs, for inspection with bpftool.
    fn pin_programs(&mut self, pins: &PinLayout) -> Result<(), LoaderError> {
        for point in AttachPoint::ALL {
            let path = pins.prog(point);
            remove_old_pin(&path)?;
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
            check_attached(cgroup, point, self.program_id(point)?, point.program_name())?;
        }
        self.verify_guards(cgroup)
    }

    /// The kernel id of the program for `point`.
    pub fn program_id(&self, point: AttachPoint) -> Result<u32, LoaderError> {
        self.program_id_of(point.program_name())
    }

    /// The kernel id of the program `name`.
    pub(super) fn program_id_of(&self, name: &str) -> Result<u32, LoaderError> {
        let info = self
            .program_named(name)?
            .info()
            .map_err(|source| LoaderError::Program {
                what: format!("reading the id of {name}"),
                source,
            })?;
        Ok(info.id())
    }

    fn program_named(&self, name: &str) -> Result<&Program, LoaderError> {
        self.ebpf.program(name).ok_or_else(|| LoaderError::Missing {
            kind: "program",
            name: name.to_owned(),
        })
    }

    /// Gives the pinned link `link` this object's program `name` in one `BPF_LINK_UPDATE`
    /// (the hook is never empty) and keeps it.
    pub(super) fn adopt_link(&mut self, name: &str, link: OwnedFd) -> Result<(), LoaderError> {
        let prog_fd = self
            .program_named(name)?
            .fd()
            .map_err(|source| LoaderError::Program {
                what: format!("reading the descriptor of {name}"),
                source,
            })?;
        sys::link_update(link.as_fd(), prog_fd.as_fd()).map_err(|source| LoaderError::Sys {
            what: format!("replacing the program of the pinned {name} link"),
            source,
        })?;
        self.links.push(LinkHandle::Adopted(link));
        Ok(())
    }
}

/// Runs `attach` (which attaches a program and takes its link) and turns the link into an
/// [`FdLink`], to pin; errors say `what` was done.
pub(super) fn fd_link<L>(
    what: &str,
    attach: impl FnOnce() -> Result<L, ProgramError>,
) -> Result<FdLink, LoaderError>
where
    FdLink: TryFrom<L, Error = LinkError>,
{
    let link = attach().map_err(|source| LoaderError::Program {
        what: what.to_owned(),
        source,
    })?;
    FdLink::try_from(link).map_err(|e| LoaderError::Sys {
        what: what.to_owned(),
        source: std::io::Error::other(e),
    })
}

/// Opens the link pinned at `path` and reads what the kernel says about it.
pub(super) fn open_pinned(path: &Path) -> Result<(OwnedFd, sys::CgroupLinkInfo), LoaderError> {
    let fd = sys::obj_get(path).map_err(|source| LoaderError::Sys {
        what: format!("opening pinned link {}", path.display()),
        source,
    })?;
    let info = sys::link_info(fd.as_fd()).map_err(|source| LoaderError::Sys {
        what: format!("reading pinned link {}", path.display()),
        source,
    })?;
    Ok((fd, info))
}

/// Removes the pin of a link that enforces nothing any more (its cgroup or device is gone).
pub(super) fn remove_stale_pin(path: &Path) -> Result<(), LoaderError> {
    std::fs::remove_file(path).map_err(|source| LoaderError::Sys {
        what: format!("removing the stale pin {}", path.display()),
        source,
    })
}

/// Removes the pin at `path` if there is one, to pin a new object in its place.
pub(super) fn remove_old_pin(path: &Path) -> Result<(), LoaderError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LoaderError::Sys {
            what: format!("removing the old pin {}", path.display()),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Keeps a new link: pinned at `pin` in place of any earlier pin there (enforce mode), or
/// owned, so that it lives as long as the daemon.
pub(super) fn keep_link(
    link: FdLink,
    pin: Option<&Path>,
    name: &str,
) -> Result<LinkHandle, LoaderError> {
    let Some(path) = pin else {
        return Ok(LinkHandle::Owned(link));
    };
    remove_old_pin(path)?;
    link.pin(path)
        .map(LinkHandle::Pinned)
        .map_err(|e| LoaderError::Sys {
            what: format!("pinning the {name} link"),
            source: std::io::Error::other(e),
        })
}

/// Checks with the kernel that program `id` (named `program`) is attached to `cgroup` at
/// `point`.
pub(super) fn check_attached(
    cgroup: &Path,
    point: AttachPoint,
    id: u32,
    program: &'static str,
) -> Result<(), LoaderError> {
    let ids = attached_program_ids(cgroup, point).map_err(|source| LoaderError::Query {
        path: cgroup.display().to_string(),
        source,
    })?;
    if !ids.contains(&id) {
        return Err(LoaderError::NotAttached {
            program,
            path: cgroup.display().to_string(),
        });
    }
    Ok(())
}
