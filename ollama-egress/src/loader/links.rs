//! Attaching: new links (pinned in enforce mode), or pinned links adopted with the new
//! programs swapped in; checking with the kernel that every program is attached.

use std::{fs::File, os::fd::AsFd as _, path::Path};

use aya::programs::{CgroupAttachMode, CgroupSkb, CgroupSockAddr, Program, links::FdLink};

use super::{
    AttachPoint, Attachment, LinkHandle, Loaded, LoaderError, PinLayout, attached_program_ids,
    cgroup_id, sys,
};

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
