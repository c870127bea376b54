//! Start-up: everything that can be wrong with the input is checked before anything is
//! attached; then the programs are loaded (re-opening pinned maps and links when enforcement is
//! already in place), the policy is written, and the programs are attached and verified.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use time::OffsetDateTime;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{
    DaemonError, DaemonState, EventTally, LogSink, PolicySource, RunOptions, io_err,
    missing_capabilities, reload::push_generation, rulebook::RuleBook, running::Daemon,
};
use crate::{
    inputs,
    loader::{
        AttachPoint, Attachment, DirLock, Loaded, LockError, MapSizes, PinLayout, TableError,
        holder_text, lock_dir,
    },
    logstore::{LogWriter, RotateOptions},
    metrics::{self, Metrics},
    model::Mode,
    pipeline::{BootClock, Decoder, forward_kernel_log, run_reader},
    targeting::{self, ProcessWatcher, TargetSpec},
};

/// Checks, loads, attaches; returns the running daemon.
pub(super) async fn start(opts: RunOptions) -> Result<Daemon, DaemonError> {
    let missing = missing_capabilities();
    if !missing.is_empty() {
        return Err(DaemonError::Privileges(missing.join(", ")));
    }
    let mount = targeting::cgroup2_mount()?;

    let (geo_path, asn_path) = inputs::geo_paths(opts.geo_db.as_deref(), opts.asn_db.as_deref());
    let geo = inputs::open_geo(geo_path.as_deref(), asn_path.as_deref())?;
    if geo.is_none() {
        warn!(
            "no geo databases: events carry no country or ASN; run `ollama-egress geo update` or pass --geo-db/--asn-db"
        );
    }
    let policy = inputs::load_daemon_policy(opts.policy.as_deref())?;
    let compiled = inputs::compile_policy(&policy, geo.as_deref())?;
    info!(policy = %compiled.origin, "policy loaded:\n{}", compiled.summary());
    if opts.mode == Mode::Enforce && compiled.origin == crate::policy::Policy::BUILTIN_ORIGIN {
        warn!(
            "enforcing the built-in policy: only loopback and private ranges stay reachable; write {} to choose",
            crate::defaults::POLICY_FILE
        );
    }
    for (family, needed) in [("IPv4", compiled.v4.len()), ("IPv6", compiled.v6.len())] {
        if needed > opts.max_prefixes as usize {
            return Err(TableError::Capacity {
                family,
                needed,
                max: opts.max_prefixes,
            }
            .into());
        }
    }

    let cgroup = match &opts.target {
        TargetSpec::Cgroup(p) => resolve_cgroup(p, &mount)?,
        TargetSpec::Unit(u) => targeting::find_unit_cgroup(&mount, u)?,
        // Processes found by name are judged where they are: the programs go on the cgroup v2
        // root and judge only the tasks the kernel marked (see `targeting::ProcessWatcher`).
        TargetSpec::Process(_) => mount.clone(),
    };
    // One daemon per target and per pin directory, for the daemon's whole life: a second one
    // would write into the slot in force or detach what the first attached.
    let target_lock = lock_target(&cgroup)?;
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
    // Pins this start creates are removed again if it fails before enforcement is attached.
    let mut new_pins = NewPins {
        pins: pins.clone(),
        armed: pinned && !had_links,
    };

    let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION"))?);
    let listener = metrics::bind(opts.metrics_addr, opts.metrics_allow_remote).await?;
    let writer = LogWriter::open(&opts.log_dir, RotateOptions::default())?;
    raise_memlock();

    let mut loaded = Loaded::load_for(
        MapSizes {
            max_prefixes: opts.max_prefixes,
            event_buffer_bytes: opts.event_buffer_bytes,
        },
        pinned.then_some(&pins),
        opts.mode == Mode::Enforce,
    )?;
    let mut tables = loaded.policy_tables()?;
    let rulebook = pinned
        .then(|| {
            RuleBook::new(
                &opts.log_dir,
                &opts.pin_dir,
                &pins.map(ollama_egress_common::SLOT_CONFIG_MAP),
            )
        })
        .flatten();
    if let Some(book) = &rulebook {
        book.record(
            tables.generation().wrapping_add(1).max(1),
            &compiled,
            opts.mode,
        );
    }
    let decoder = Arc::new(Mutex::new(Decoder::new(BootClock::now(), geo.clone())));
    let generation = super::dns::write_first_policy(&opts, &mut tables, &compiled, &decoder)?;
    let ring = loaded.take_events()?;
    let counters = Arc::new(loaded.take_counters()?);
    let kernel_log = loaded.take_logger()?;
    if let Some(book) = &rulebook {
        // Events the pinned programs decided while no daemon ran are named by the
        // generation that decided them.
        let mut d = decoder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for g in book.generations() {
            if g.generation != generation {
                d.push_generation(g);
            }
        }
    }
    push_generation(&decoder, generation, &compiled, opts.mode);

    if let TargetSpec::Process(name) = &opts.target {
        targeting::ensure_tracefs()?;
        loaded.configure_marking(targeting::comm_bytes(name), targeting::mark_offsets())?;
        loaded.attach_marking(&cgroup)?;
    }
    let attachment = loaded.attach(&cgroup)?;
    new_pins.armed = false;
    let resolver = super::dns::Resolver::start(&opts.dns, &mount, &cgroup, &mut loaded)?;
    if attachment == Attachment::Adopted {
        info!(pin_dir = %opts.pin_dir.display(), "adopted the pinned enforcement: its links now run this daemon's programs, with no gap");
    }
    info!(
        cgroup = %cgroup.display(),
        target = %opts.target,
        mode = opts.mode.as_str(),
        "attached egress, ingress, connect4, connect6, sendmsg4, sendmsg6; the kernel lists all six on the cgroup"
    );
    let summary = compiled.summary();
    metrics.set_policy(&summary);
    metrics.set_enforcing(opts.mode == Mode::Enforce);

    let watcher = match &opts.target {
        TargetSpec::Process(name) => {
            let mut w =
                ProcessWatcher::new(name, loaded.take_marks()?, loaded.take_target_socks()?);
            let marked = w.scan()?;
            if marked.is_empty() {
                info!("no process named {name} yet; the kernel marks one as it starts");
            } else {
                info!(
                    ?marked,
                    "marked running processes named {name} and their descendants as targets"
                );
            }
            Some(w)
        }
        _ => None,
    };

    let state = DaemonState {
        pid: std::process::id(),
        mode: opts.mode.as_str().to_owned(),
        target: opts.target.to_string(),
        cgroup: cgroup.clone(),
        policy: compiled.origin.clone(),
        generation,
        programs: AttachPoint::ALL
            .iter()
            .filter_map(|p| Some((p.program_name().to_owned(), loaded.program_id(*p).ok()?)))
            .collect(),
        started: OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        geo_db: geo_path,
        asn_db: asn_path,
        rules: compiled.rules.len(),
        prefixes: summary.prefixes,
        metrics_addr: listener.local_addr().ok().map(|a| a.to_string()),
        counters: Default::default(),
    };
    state
        .write(&opts.log_dir)
        .map_err(io_err("writing the state file"))?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let tally = Arc::new(EventTally::default());
    let reader = {
        let decoder = Arc::clone(&decoder);
        let mut sink = LogSink::new(writer, Arc::clone(&metrics), Arc::clone(&tally));
        let stop = stop_rx.clone();
        tokio::spawn(async move { run_reader(ring, decoder, &mut sink, stop).await })
    };
    let server = {
        let metrics_for_refresh = Arc::clone(&metrics);
        let counters = Arc::clone(&counters);
        let refresh = move || match counters.snapshot() {
            Ok(snap) => metrics_for_refresh.set_kernel(&snap),
            Err(e) => warn!("reading the kernel counters failed: {e}"),
        };
        tokio::spawn(metrics::serve(
            listener,
            Arc::clone(&metrics),
            refresh,
            stop_rx.clone(),
        ))
    };
    tokio::spawn({
        let stop = stop_rx;
        async move {
            if let Err(e) = forward_kernel_log(kernel_log, stop).await {
                warn!("forwarding the kernel programs' log failed: {e}");
            }
        }
    });
    let source = PolicySource::new(
        opts.mode,
        opts.policy.clone(),
        opts.geo_db.clone(),
        opts.asn_db.clone(),
        geo,
        rulebook,
    );
    let follow = targeting::CgroupWatch::new(&cgroup);
    info!(metrics = ?state.metrics_addr, "ollama-egress ready");
    Ok(Daemon {
        opts,
        cgroup,
        loaded,
        tables,
        counters,
        decoder,
        source,
        state,
        watcher,
        follow,
        metrics,
        tally,
        reader,
        server,
        stop_tx,
        names: Default::default(),
        resolver,
        _locks: (pin_lock, target_lock),
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

/// Locks the target cgroup directory for this daemon's life.
/// Locks the target cgroup directory for this daemon (one daemon per target).
pub(super) fn lock_target(cgroup: &Path) -> Result<DirLock, DaemonError> {
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
struct NewPins {
    pins: PinLayout,
    armed: bool,
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
fn raise_memlock() {
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
mod tests {
    use super::*;

    #[test]
    fn relative_cgroups_are_taken_from_the_root_and_missing_ones_named() {
        let mount = tempfile::tempdir().expect("tempdir");
        let cg = mount.path().join("ollama");
        std::fs::create_dir(&cg).expect("mkdir");
        std::fs::write(cg.join("cgroup.procs"), "").expect("cgroup.procs");
        let got = resolve_cgroup(Path::new("ollama"), mount.path()).expect("relative");
        assert_eq!(got, cg.canonicalize().expect("canon"));
        let err = resolve_cgroup(Path::new("gone"), mount.path()).expect_err("missing");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "cgroup {} does not exist",
                mount.path().join("gone").display()
            )),
            "{text}"
        );
        let err = resolve_cgroup(mount.path(), Path::new("/nonexistent-mount")).expect_err("x");
        assert!(
            err.to_string().contains("not a cgroup v2 directory"),
            "{err}"
        );
    }
}
