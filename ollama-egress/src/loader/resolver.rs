//! The resolver's programs: `dns_egress` / `dns_ingress` (cgroup_skb, learn only, never drop)
//! on the cgroup of a local resolver daemon (systemd-resolved: with nss-resolve, Ollama asks
//! it over a socket and sends no DNS packet itself). Pinned like the other links in enforce
//! mode (`<pin-dir>/links/dns_egress`, `dns_ingress`), re-adopted by a restarted daemon,
//! removed by `detach`.

use std::{
    fs::File,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType},
};

use super::{
    AttachPoint, Loaded, LoaderError, PinError, cgroup_id,
    links::{fd_link, keep_link, open_pinned, remove_stale_pin},
    sys,
};

/// The resolver programs ([`super::RESOLVER_PROGRAMS`]), their hooks, and the hook of the
/// target's programs whose kernel query lists them.
const RESOLVER_HOOKS: [(&str, CgroupSkbAttachType, AttachPoint); 2] = [
    (
        super::RESOLVER_PROGRAMS[0],
        CgroupSkbAttachType::Egress,
        AttachPoint::Egress,
    ),
    (
        super::RESOLVER_PROGRAMS[1],
        CgroupSkbAttachType::Ingress,
        AttachPoint::Ingress,
    ),
];

/// Loads the resolver programs when the object has them (called from [`Loaded::load_for`]).
pub(super) fn load_programs(ebpf: &mut Ebpf) -> Result<(), LoaderError> {
    for (name, _, _) in RESOLVER_HOOKS {
        let Some(prog) = ebpf.program_mut(name) else {
            continue;
        };
        <&mut CgroupSkb>::try_from(prog)
            .and_then(|p| p.load())
            .map_err(|source| LoaderError::Program {
                what: format!("loading program {name}"),
                source,
            })?;
    }
    Ok(())
}

fn pin_path(links_dir: &Path, name: &str) -> PathBuf {
    links_dir.join(name)
}

impl Loaded {
    /// Attaches `dns_egress` and `dns_ingress` to the resolver's `cgroup` and checks with the
    /// kernel that they are listed there. Pinned links on that cgroup get the new programs in
    /// one update each; pinned links on another cgroup (the resolver moved, or another
    /// `--dns-cgroup`) are detached and replaced. Returns the cgroup's id.
    pub fn attach_resolver(&mut self, cgroup: &Path) -> Result<u64, LoaderError> {
        let cg_err = |source| LoaderError::Cgroup {
            path: cgroup.display().to_string(),
            source,
        };
        let dir = File::open(cgroup).map_err(cg_err)?;
        let target = cgroup_id(cgroup).map_err(cg_err)?;
        let links_dir = self.pins.as_ref().map(|p| p.root().join("links"));
        for (name, ty, _) in RESOLVER_HOOKS {
            if self.ebpf.program(name).is_none() {
                return Err(LoaderError::Missing {
                    kind: "program",
                    name: name.to_owned(),
                });
            }
            let pin = links_dir.as_ref().map(|d| pin_path(d, name));
            if let Some(path) = pin.as_deref().filter(|p| p.exists()) {
                let (fd, info) = open_pinned(path)?;
                if info.cgroup_id == target {
                    self.adopt_link(name, fd)?;
                    continue;
                }
                if info.cgroup_id != 0 {
                    tracing::info!(
                        program = name,
                        "the pinned resolver link is on another cgroup; moving it to {}",
                        cgroup.display()
                    );
                    match sys::link_detach(fd.as_fd()) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::ENOLINK) => {}
                        Err(source) => {
                            return Err(LoaderError::Sys {
                                what: format!("detaching the pinned {name} link"),
                                source,
                            });
                        }
                    }
                }
                remove_stale_pin(path)?;
            }
            let what = format!("attaching {name} to {}", cgroup.display());
            let prog = self.program_mut_named(name)?;
            let link = fd_link(&what, || {
                let p = <&mut CgroupSkb>::try_from(prog)?;
                let id = p.attach(&dir, ty, CgroupAttachMode::Single)?;
                p.take_link(id)
            })?;
            self.links.push(keep_link(link, pin.as_deref(), name)?);
        }
        self.verify_resolver(cgroup)?;
        Ok(target)
    }

    /// Checks with the kernel that the resolver programs are attached to `cgroup`.
    pub fn verify_resolver(&self, cgroup: &Path) -> Result<(), LoaderError> {
        for (name, _, point) in RESOLVER_HOOKS {
            super::links::check_attached(cgroup, point, self.program_id_of(name)?, name)?;
        }
        Ok(())
    }
}

/// Detaches and removes the pinned resolver links under `links_dir` (for `detach`).
pub(super) fn detach_pinned(links_dir: &Path) -> Result<usize, PinError> {
    let mut detached = 0;
    for (name, _, _) in RESOLVER_HOOKS {
        let path = pin_path(links_dir, name);
        if std::fs::symlink_metadata(&path).is_err() {
            continue;
        }
        let err = |what: &'static str| {
            let path = path.clone();
            move |source| PinError::Io { what, path, source }
        };
        let fd = sys::obj_get(&path).map_err(err("opening pinned link"))?;
        match sys::link_detach(fd.as_fd()) {
            Ok(()) => detached += 1,
            Err(e) if e.raw_os_error() == Some(libc::ENOLINK) => {}
            Err(e) => return Err(err("detaching link")(e)),
        }
        std::fs::remove_file(&path).map_err(err("removing"))?;
    }
    Ok(detached)
}
