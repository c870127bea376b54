//! `ollama-egress run`: load, attach, verify, then record events until told to stop.

pub mod inputs;
mod privileges;
mod reload;
mod sink;
pub mod state;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use ollama_egress_common::{MODE_ENFORCE, MODE_MONITOR};
use ollama_egress_geo::GeoError;
use time::OffsetDateTime;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};
use tracing::{error, info, warn};

pub use privileges::missing_capabilities;
pub use reload::PolicySource;
use reload::push_generation;
pub use sink::LogSink;
pub use state::DaemonState;

use crate::{
    loader::{
        AttachPoint, Attachment, Loaded, LoaderError, MapSizes, PinLayout, TableError, TablePolicy,
    },
    logstore::{LogError, LogWriter, Mode, RotateOptions},
    pipeline::{BootClock, Decoder, run_reader},
    policy::{CompiledPolicy, PolicyError},
    targeting::{self, ProcessWatcher, TargetError, TargetSpec},
};

/// How often `--process` looks for new processes.
const PROCESS_SCAN_INTERVAL: Duration = Duration::from_millis(250);
/// How often the policy file and the geo databases are checked for changes.
const INPUT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Everything `run` needs, as resolved from the command line.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Monitor or enforce.
    pub mode: Mode,
    /// What to attach to.
    pub target: TargetSpec,
    /// Policy file; `None` for the default file or the built-in policy.
    pub policy: Option<PathBuf>,
    /// Country database.
    pub geo_db: Option<PathBuf>,
    /// ASN database.
    pub asn_db: Option<PathBuf>,
    /// Where events and state are written.
    pub log_dir: PathBuf,
    /// Capacity of each policy table.
    pub max_prefixes: u32,
    /// Size of the event ring buffer in bytes.
    pub event_buffer_bytes: u32,
    /// Name of the managed cgroup for `--process`.
    pub managed_cgroup: String,
    /// bpffs directory for pinned programs, links and maps.
    pub pin_dir: PathBuf,
}

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The process lacks capabilities.
    #[error("ollama-egress run needs {0} (run it as root or grant these capabilities)")]
    Privileges(String),
    /// The target could not be found or prepared.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The policy is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The geo databases could not be opened.
    #[error(transparent)]
    Geo(#[from] GeoError),
    /// Loading or attaching failed.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// Writing the policy into the kernel failed.
    #[error(transparent)]
    Table(#[from] TableError),
    /// The log could not be opened.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Another I/O failure (signals, state file, event reader).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> DaemonError {
    move |source| DaemonError::Io { what, source }
}

/// The policy in the form the kernel tables take.
pub fn table_policy(compiled: &CompiledPolicy, mode: Mode) -> TablePolicy<'_> {
    TablePolicy {
        v4: &compiled.v4,
        v6: &compiled.v6,
        default_action: compiled.default_action.to_kernel(),
        mode: match mode {
            Mode::Enforce => MODE_ENFORCE,
            Mode::Monitor => MODE_MONITOR,
        },
    }
}

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn run(opts: RunOptions) -> Result<(), DaemonError> {
    let missing = missing_capabilities();
    if !missing.is_empty() {
        return Err(DaemonError::Privileges(missing.join(", ")));
    }
    let mount = targeting::cgroup2_mount()?;

    // Everything that can be wrong with the input is checked before anything is attached.
    let (geo_path, asn_path) = inputs::geo_paths(opts.geo_db.as_deref(), opts.asn_db.as_deref());
    let geo = inputs::open_geo(geo_path.as_deref(), asn_path.as_deref())?;
    if geo.is_none() {
        warn!(
            "no geo databases: events carry no country or ASN; run `ollama-egress geo update` or pass --geo-db/--asn-db"
        );
    }
    let policy = inputs::load_policy(opts.policy.as_deref())?;
    let compiled = inputs::compile_policy(&policy, geo.as_deref())?;
    info!(policy = %compiled.origin, "policy loaded:\n{}", compiled.summary());
    if opts.mode == Mode::Enforce && compiled.origin == "built-in" {
        warn!(
            "enforcing the built-in policy: only loopback and private ranges stay reachable; write {} to choose",
            inputs::DEFAULT_POLICY
        );
    }

    let cgroup = match &opts.target {
        TargetSpec::Cgroup(p) => targeting::check_cgroup_dir(p, &mount)?,
        TargetSpec::Unit(u) => targeting::find_unit_cgroup(&mount, u)?,
        TargetSpec::Process(_) => targeting::ensure_managed_cgroup(&mount, &opts.managed_cgroup)?,
    };
    let mut writer = LogWriter::open(&opts.log_dir, RotateOptions::default())?;
    raise_memlock();

    // Enforcement is pinned so that it outlives the daemon. Monitor mode pins nothing, but
    // takes over (and at exit removes) enforcement it finds pinned: the user switched modes.
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
    let pins = PinLayout::new(&opts.pin_dir);
    let had_links = pins.has_links();
    let pinned = opts.mode == Mode::Enforce || had_links;
    // Pins this start creates are removed again if it fails before enforcement is attached.
    let mut new_pins = NewPins::arm(&pins, pinned && !had_links);
    let mut loaded = Loaded::load(
        MapSizes {
            max_prefixes: opts.max_prefixes,
            event_buffer_bytes: opts.event_buffer_bytes,
        },
        pinned.then_some(&pins),
    )?;
    let mut tables = loaded.policy_tables()?;
    let generation = tables.apply(table_policy(&compiled, opts.mode))?;
    let ring = loaded.take_events()?;
    let _counters = loaded.take_counters()?;
    let decoder = Arc::new(Mutex::new(Decoder::new(BootClock::now(), geo.clone())));
    push_generation(&decoder, generation, &compiled, opts.mode);

    let attachment = loaded.attach(&cgroup)?;
    new_pins.disarm();
    if attachment == Attachment::Adopted {
        info!(pin_dir = %opts.pin_dir.display(), "adopted the pinned enforcement: its links now run this daemon's programs, with no gap");
    }
    info!(
        cgroup = %cgroup.display(),
        target = %opts.target,
        mode = opts.mode.as_str(),
        "attached egress, ingress, connect4, connect6, sendmsg4, sendmsg6; the kernel lists all six on the cgroup"
    );

    let mut watcher = match &opts.target {
        TargetSpec::Process(name) => {
            let mut w = ProcessWatcher::new(name, &cgroup);
            let moved = w.scan()?;
            if moved.is_empty() {
                info!("no process named {name} yet; waiting for one to start");
            } else {
                info!(
                    ?moved,
                    "moved processes named {name} into {}",
                    cgroup.display()
                );
            }
            Some(w)
        }
        _ => None,
    };

    let mut state = DaemonState {
        pid: std::process::id(),
        mode: opts.mode.as_str().to_owned(),
        target: opts.target.to_string(),
        cgroup: cgroup.clone(),
        policy: compiled.origin.clone(),
        generation,
        programs: program_ids(&loaded),
        started: OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        geo_db: geo_path.clone(),
        asn_db: asn_path.clone(),
    };
    state
        .write(&opts.log_dir)
        .map_err(io_err("writing the state file"))?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let reader_decoder = Arc::clone(&decoder);
    let reader = tokio::spawn(async move {
        let mut sink = LogSink::new(&mut writer);
        run_reader(ring, reader_decoder, &mut sink, stop_rx).await
    });

    let mut sigint =
        signal(SignalKind::interrupt()).map_err(io_err("installing SIGINT handler"))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(io_err("installing SIGTERM handler"))?;
    let mut sighup = signal(SignalKind::hangup()).map_err(io_err("installing SIGHUP handler"))?;
    let mut source = PolicySource::new(
        opts.mode,
        opts.policy.clone(),
        opts.geo_db.clone(),
        opts.asn_db.clone(),
        geo.clone(),
    );
    let mut scan = tokio::time::interval(PROCESS_SCAN_INTERVAL);
    let mut watch_inputs = tokio::time::interval(INPUT_POLL_INTERVAL);
    info!("ollama-egress ready");
    loop {
        tokio::select! {
            _ = sigint.recv() => { info!("SIGINT: stopping"); break; }
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
            _ = sighup.recv() => {
                info!("SIGHUP: reloading the policy and the geo databases");
                source.changed_files();
                do_reload(&mut source, &mut tables, &decoder, &mut state, &opts.log_dir);
            }
            _ = watch_inputs.tick() => {
                let changed = source.changed_files();
                if !changed.is_empty() {
                    info!(?changed, "inputs changed: reloading");
                    do_reload(&mut source, &mut tables, &decoder, &mut state, &opts.log_dir);
                }
            }
            _ = scan.tick(), if watcher.is_some() => {
                if let Some(w) = watcher.as_mut() {
                    match w.scan() {
                        Ok(moved) if !moved.is_empty() => info!(?moved, "moved new processes into {}", cgroup.display()),
                        Ok(_) => {}
                        Err(e) => warn!("moving processes failed: {e}"),
                    }
                }
            }
        }
    }

    // In enforce mode the pinned links stay: enforcement goes on without the daemon, and what
    // the kernel records meanwhile waits in the pinned ring buffer for the next daemon. In
    // monitor mode everything is detached first, so the final drain misses nothing.
    drop(tables);
    drop(loaded);
    if opts.mode == Mode::Monitor && pinned {
        match pins.detach_and_remove() {
            Ok(n) => info!(
                links = n,
                "monitor mode: removed the pinned enforcement it had taken over"
            ),
            Err(e) => error!(
                "could not remove the pins in {}: {e}",
                opts.pin_dir.display()
            ),
        }
    }
    let _ = stop_tx.send(true);
    match reader.await {
        Ok(Ok(stats)) => info!(events = stats.decoded, "event log flushed"),
        Ok(Err(e)) => error!("event reader failed: {e}"),
        Err(e) => error!("event reader panicked: {e}"),
    }
    if let Err(e) = DaemonState::remove(&opts.log_dir) {
        warn!(error = %e, "could not remove the state file");
    }
    if opts.mode == Mode::Enforce {
        info!(
            "enforcement stays attached to {} (pinned in {}); `ollama-egress detach` stops it",
            cgroup.display(),
            opts.pin_dir.display()
        );
    } else {
        info!("detached from {}", cgroup.display());
    }
    Ok(())
}

fn do_reload(
    source: &mut PolicySource,
    tables: &mut crate::loader::PolicyTables,
    decoder: &Mutex<Decoder>,
    state: &mut DaemonState,
    log_dir: &std::path::Path,
) {
    match source.reload(tables, decoder) {
        Ok((generation, compiled)) => {
            info!(generation, policy = %compiled.origin, "policy reloaded:\n{}", compiled.summary());
            state.generation = generation;
            state.policy = compiled.origin;
            if let Err(e) = state.write(log_dir) {
                warn!(error = %e, "could not update the state file");
            }
        }
        Err(e) => error!("policy reload failed, the previous policy stays in force: {e}"),
    }
}

fn program_ids(loaded: &Loaded) -> Vec<(String, u32)> {
    AttachPoint::ALL
        .iter()
        .filter_map(|p| Some((p.program_name().to_owned(), loaded.program_id(*p).ok()?)))
        .collect()
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

/// Removes pins created by a start that then failed, so a later start does not mistake them
/// for enforcement in place.
struct NewPins<'a> {
    pins: &'a PinLayout,
    armed: bool,
}

impl<'a> NewPins<'a> {
    fn arm(pins: &'a PinLayout, armed: bool) -> Self {
        Self { pins, armed }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for NewPins<'_> {
    fn drop(&mut self) {
        if self.armed && self.pins.root().exists() {
            if let Err(e) = self.pins.detach_and_remove() {
                warn!("could not remove the pins of the failed start: {e}");
            }
        }
    }
}
