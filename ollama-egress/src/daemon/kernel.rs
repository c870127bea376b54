//! The kernel handles a running daemon holds: the target cgroup, the loaded programs and
//! their links, the kernel counters, and the locks (one daemon per target and per pin
//! directory, for the daemon's whole life). Also the start-up steps that claim them.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use tracing::{error, info, warn};

use super::{DaemonError, RunOptions};
use crate::{
    loader::{
        AttachPoint, DirLock, Follow, KernelCounters, Loaded, LockError, PinLayout, holder_text,
        lock_dir,
    },
    model::Mode,
    targeting::{
        self, TargetError, TargetSpec, auto,
        containers::{self, ContainerTarget},
        kube::PodTarget,
        unit::{self, Restarts},
    },
};

/// The locks a daemon holds, released when it ends.
pub(super) struct Locks {
    /// The pin directory's (none in monitor mode without pins).
    _pins: Option<DirLock>,
    /// The target cgroup's.
    target: DirLock,
}

/// The kernel objects of a running daemon.
pub(super) struct KernelHandles {
    cgroup: PathBuf,
    loaded: Loaded,
    counters: Arc<KernelCounters>,
    locks: Locks,
    /// The resolver's cgroup, when names are learned there too.
    resolver: Option<super::dns::Resolver>,
    /// For `--unit`: the cgroup v2 mount and the unit, looked up again at each follow (the unit
    /// may have moved into its slice, or run outside it).
    unit: Option<(PathBuf, String)>,
}

impl KernelHandles {
    /// The handles of an attached daemon.
    pub(super) fn new(
        cgroup: PathBuf,
        loaded: Loaded,
        counters: Arc<KernelCounters>,
        locks: Locks,
    ) -> Self {
        Self {
            cgroup,
            loaded,
            counters,
            locks,
            resolver: None,
            unit: None,
        }
    }

    /// The handles of a unit's target, looked up again under `mount` at each follow.
    pub(super) fn with_unit(mut self, mount: &Path, unit: Option<&str>) -> Self {
        self.unit = unit.map(|u| (mount.to_owned(), u.to_owned()));
        self
    }

    /// The handles, with the resolver programs attached to `resolver`'s cgroup.
    pub(super) fn with_resolver(mut self, resolver: Option<super::dns::Resolver>) -> Self {
        self.resolver = resolver;
        self
    }

    /// Attaches the resolver programs again when the resolver's cgroup was made again.
    pub(super) fn check_resolver(&mut self) {
        if let Some(r) = &mut self.resolver {
            r.check(&mut self.loaded);
        }
    }

    /// The kernel's packet counters and lost events.
    pub(super) fn counters(&self) -> &KernelCounters {
        &self.counters
    }

    /// Whether all programs are still attached to the target.
    pub(super) fn verify(&self) -> Result<(), crate::loader::LoaderError> {
        self.loaded.verify_attached(&self.cgroup)
    }

    /// The target cgroup the programs are on.
    pub(super) fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// Re-attaches when the target cgroup was replaced (removed and made again at its path).
    /// What was found; `None` when attaching failed (logged).
    pub(super) fn follow_target(&mut self) -> Option<Follow> {
        match self.loaded.follow(&self.cgroup) {
            Ok(found @ Follow::Reattached { old, new }) => {
                warn!(
                    old_cgroup_id = old,
                    new_cgroup_id = new,
                    "the target cgroup {} was made again: attached to the new one",
                    self.cgroup.display()
                );
                self.relock();
                Some(found)
            }
            Ok(found) => Some(found),
            Err(e) => {
                error!(
                    "the target cgroup {} was made again, but attaching to it failed: {e}",
                    self.cgroup.display()
                );
                None
            }
        }
    }

    /// For `--unit`: moves the programs to where the unit's target is now, when that is another
    /// cgroup (the unit moved into its slice, or runs outside it); returns the new target and
    /// how restarts are handled there.
    pub(super) fn follow_unit(&mut self) -> Option<(PathBuf, Restarts)> {
        let (mount, name) = self.unit.as_ref()?;
        // Neither the unit nor its slice: keep following the path.
        let mut found = unit::resolve_unit(mount, name).ok()?;
        found.cgroup = found.cgroup.canonicalize().ok()?;
        if found.cgroup == self.cgroup {
            return None;
        }
        if let Err(e) = self.switch_target(&found.cgroup) {
            error!(
                "{} is now at {}, but attaching there failed: {e}",
                found.unit,
                found.cgroup.display()
            );
            return None;
        }
        warn!(
            to = %found.cgroup.display(),
            "{} moved: the programs are attached to its target now",
            found.unit
        );
        if found.restarts == Restarts::Followed {
            warn!("{}", unit::outside_slice_warning(&found));
        }
        Some((found.cgroup, found.restarts))
    }

    /// The lock was on the old directory: take the new one's.
    fn relock(&mut self) {
        match lock_target(&self.cgroup) {
            Ok(lock) => self.locks.target = lock,
            Err(e) => error!("locking the target cgroup {}: {e}", self.cgroup.display()),
        }
    }

    /// Moves the programs to `cgroup`, the target made anew at another path (a container
    /// re-created under a new id, a Kubernetes pod's replacement). Its lock is taken first; on an error the programs stay
    /// where they were.
    pub(super) fn switch_target(&mut self, cgroup: &Path) -> Result<(), DaemonError> {
        let lock = lock_target(cgroup)?;
        if self.loaded.follow(cgroup)? == Follow::Gone {
            return Err(DaemonError::Loader(crate::loader::LoaderError::Cgroup {
                path: cgroup.display().to_string(),
                source: std::io::ErrorKind::NotFound.into(),
            }));
        }
        self.cgroup = cgroup.to_owned();
        self.locks.target = lock;
        Ok(())
    }

    /// Closes the programs (links that are not pinned detach), keeping the locks and the
    /// target's path until the caller is done.
    pub(super) fn close(self) -> (PathBuf, Locks) {
        let Self {
            cgroup,
            loaded,
            locks,
            ..
        } = self;
        drop(loaded);
        (cgroup, locks)
    }
}

/// Kernel ids of the loaded programs, by program name: those of the cgroup attach points, then
/// the device programs (tc, guards).
pub(super) fn program_ids(loaded: &Loaded) -> Vec<(String, u32)> {
    AttachPoint::ALL
        .iter()
        .filter_map(|p| Some((p.program_name().to_owned(), loaded.program_id(*p).ok()?)))
        .chain(loaded.device_program_ids())
        .chain(loaded.cleanup_program_id())
        .collect()
}

/// The target as found: the cgroup the programs go on, and the container when it is one.
pub struct Resolved {
    /// The cgroup v2 directory.
    pub cgroup: PathBuf,
    /// The container, for `--container`.
    pub container: Option<ContainerTarget>,
    /// For `--unit`: whether the unit's restarts are covered (its slice) or followed.
    pub restarts: Option<Restarts>,
}

impl Resolved {
    /// What events name as `container`: the container's name, or the pod's `namespace/name`.
    pub(super) fn event_name(&self, pod: Option<&PodTarget>) -> Option<String> {
        self.container
            .as_ref()
            .map(|c| c.info.name.clone())
            .or_else(|| pod.map(|p| p.pod.key()))
    }
}

/// Picks the target when none was given (logging which and why), then finds its cgroup.
pub(super) fn resolve_target(
    opts: &mut RunOptions,
    mount: &Path,
    pod: Option<&PodTarget>,
) -> Result<Resolved, DaemonError> {
    resolve(&mut opts.target, opts.engine_socket.as_deref(), mount, pod)
}

/// Finds the cgroup of `target` as `run` does (`audit` too): an automatic target is first
/// replaced by the one picked (logged with the reason); a pod target is the pod found (and
/// waited for) before, `pod`.
pub fn resolve(
    target: &mut TargetSpec,
    engine_socket: Option<&Path>,
    mount: &Path,
    pod: Option<&PodTarget>,
) -> Result<Resolved, DaemonError> {
    if *target == TargetSpec::Auto {
        let found = auto::look(mount, engine_socket);
        let choice = auto::choose(&found, crate::defaults::PROCESS);
        info!(target = %choice.spec, "no target given, picked {}: {}", choice.spec, choice.reason);
        *target = choice.spec;
    }
    let mut container = None;
    let mut restarts = None;
    let cgroup = match &*target {
        TargetSpec::Cgroup(p) => resolve_cgroup(p, mount)?,
        TargetSpec::Unit(u) => {
            let found = unit::resolve_unit(mount, u)?;
            match found.restarts {
                Restarts::Covered => info!(
                    unit = %found.unit,
                    cgroup = %found.cgroup.display(),
                    "attaching to the slice of {}: its restarts stay judged from the first connection",
                    found.unit
                ),
                Restarts::Followed => warn!("{}", unit::outside_slice_warning(&found)),
            }
            restarts = Some(found.restarts);
            targeting::check_cgroup_dir(&found.cgroup, mount)?
        }
        TargetSpec::Container(name) => {
            let found = containers::find_container(engine_socket, name, mount)
                .map_err(TargetError::from)?;
            info!(
                container = %found.info.name,
                id = %found.info.short_id(),
                image = %found.info.image,
                pid = found.info.pid,
                socket = %found.socket.display(),
                cgroup = %found.cgroup.display(),
                "found the container"
            );
            let cgroup = targeting::check_cgroup_dir(&found.cgroup, mount)?;
            container = Some(found);
            cgroup
        }
        // Processes found by name are judged where they are: the programs go on the cgroup v2
        // root and judge only the tasks the kernel marked (see `targeting::ProcessWatcher`).
        TargetSpec::Process(_) | TargetSpec::Auto => mount.to_owned(),
        // Found (and waited for) before: `super::kube::wait_for_pod`.
        TargetSpec::Pod(spec) => match pod {
            Some(p) => targeting::check_cgroup_dir(&p.cgroup, mount)?,
            None => {
                return Err(DaemonError::NoCgroup {
                    path: format!("(the cgroup of the pod matching {})", spec.selector),
                    mount: mount.display().to_string(),
                });
            }
        },
    };
    Ok(Resolved {
        cgroup,
        container,
        restarts,
    })
}

/// `--cgroup PATH`: a relative path is taken from the cgroup v2 root; a missing directory is
/// named as missing.
fn resolve_cgroup(path: &Path, mount: &Path) -> Result<PathBuf, DaemonError> {
    let path = if path.is_relative() {
        mount.join(path)
    } else {
        path.to_owned()
    };
    if matches!(path.try_exists(), Ok(false)) {
        return Err(DaemonError::NoCgroup {
            path: path.display().to_string(),
            mount: mount.display().to_string(),
        });
    }
    Ok(targeting::check_cgroup_dir(&path, mount)?)
}

/// What a start claimed before loading: the locks, the pin layout, and whether this start
/// pins (enforce mode).
pub(super) struct Claim {
    pub(super) locks: Locks,
    pub(super) pins: PinLayout,
    /// Whether links and maps are pinned (enforcement outlives the daemon).
    pub(super) pinned: bool,
    /// Pins this start creates, removed again if it fails before enforcement is attached.
    pub(super) new_pins: NewPins,
}

/// Takes the target's and the pin directory's locks and checks what is pinned: one daemon per
/// target and per pin directory, and a monitor never takes over pinned enforcement.
pub(super) fn claim(opts: &RunOptions, cgroup: &Path) -> Result<Claim, DaemonError> {
    // A second daemon would write into the slot in force or detach what the first attached.
    let target = lock_target(cgroup)?;
    let pins = PinLayout::new(&opts.pin_dir);
    let pin_lock = match opts.mode {
        Mode::Enforce => Some(pins.lock(pins.prepare()?)?),
        Mode::Monitor => match pins.inspect()? {
            Some(dir) => Some(pins.lock(dir)?),
            None => None,
        },
    };
    let had_links = pins.has_links();
    // Going from enforce to monitor is `detach`, never a side effect of starting.
    if opts.mode == Mode::Monitor && had_links {
        return Err(DaemonError::PinnedEnforcement {
            pin_dir: opts.pin_dir.display().to_string(),
        });
    }
    // Enforcement is pinned so that it outlives the daemon. Monitor mode pins nothing.
    let pinned = opts.mode == Mode::Enforce;
    let new_pins = NewPins {
        pins: pins.clone(),
        armed: pinned && !had_links,
    };
    Ok(Claim {
        locks: Locks {
            _pins: pin_lock,
            target,
        },
        pins,
        pinned,
        new_pins,
    })
}

/// Locks the target cgroup directory for this daemon (one daemon per target).
fn lock_target(cgroup: &Path) -> Result<DirLock, DaemonError> {
    let dir = std::fs::File::open(cgroup).map_err(|source| {
        DaemonError::Loader(crate::loader::LoaderError::Cgroup {
            path: cgroup.display().to_string(),
            source,
        })
    })?;
    lock_dir(dir.into(), cgroup).map_err(|e| match e {
        LockError::Held { pid } => DaemonError::TargetLocked {
            cgroup: cgroup.display().to_string(),
            holder: holder_text(pid),
        },
        LockError::Io(source) => DaemonError::Io {
            what: "locking the target cgroup",
            source,
        },
    })
}

/// Removes pins created by a start that then failed, so a later start does not mistake them
/// for enforcement in place.
pub(super) struct NewPins {
    pins: PinLayout,
    armed: bool,
}

impl NewPins {
    /// Enforcement is attached: the pins stay.
    pub(super) fn keep(&mut self) {
        self.armed = false;
    }
}

impl Drop for NewPins {
    fn drop(&mut self) {
        if self.armed
            && self.pins.root().exists()
            && let Err(e) = self.pins.detach_and_remove()
        {
            warn!("could not remove the pins of the failed start: {e}");
        }
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it (best effort).
pub(super) fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
    if ret != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK");
    }
}

#[cfg(test)]
mod tests;
