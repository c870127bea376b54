//! Start-up: everything that can be wrong with the input is checked before anything is
//! attached; then the programs are loaded (re-opening pinned maps and links when enforcement is
//! already in place), the policy is written, and the programs are attached and verified.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use ollama_egress_geo::GeoDb;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tracing::{info, warn};

use super::{
    DaemonError, DaemonState, EventTally, LogSink, PolicySource, RunOptions, io_err,
    kernel::{self, Claim, KernelHandles},
    missing_capabilities,
    report::Report,
    rulebook::RuleBook,
    running::Daemon,
    runtime::PolicyRuntime,
    tasks::{Signals, Tasks, Workers},
};
use crate::{
    inputs,
    loader::{Attachment, Loaded, MapSizes},
    logstore::{LogWriter, RotateOptions},
    metrics::{self, Metrics},
    model::Mode,
    pipeline::{BootClock, Decoder},
    policy::CompiledPolicy,
    targeting::{
        self, CgroupWatch, ProcessWatcher, TargetSpec, follow::ContainerFollow, kube::PodTarget,
    },
};

/// Checks, loads, attaches; returns the running daemon.
/// `None`: stopped by a signal while waiting for the target to appear.
pub(super) async fn start(
    mut opts: RunOptions,
    mut signals: Signals,
) -> Result<Option<Daemon>, DaemonError> {
    check_privileges()?;
    let mount = targeting::cgroup2_mount()?;
    let inputs = read_inputs(&opts)?;
    // Bound before any wait for a pod: a liveness probe on the port passes while the daemon
    // waits; `/metrics` answers (readiness) only once it guards.
    let listener = metrics::bind(opts.metrics_addr, opts.metrics_allow_remote).await?;
    let pod = match super::kube::wait_for_pod(&opts.target, &mount, &mut signals).await? {
        super::kube::Waited::Stopped => return Ok(None),
        super::kube::Waited::Pod(found) => Some(found),
        super::kube::Waited::NotPod => None,
    };
    let pod_target = pod.as_ref().map(|p| &p.target);
    let resolved = kernel::resolve_target(&mut opts, &mount, pod_target)?;
    let container_name = resolved.event_name(pod_target);
    let target_text = pod_target.map(PodTarget::describe);
    let kernel::Resolved {
        cgroup,
        container,
        restarts,
    } = resolved;
    let mut claim = kernel::claim(&opts, &cgroup)?;
    let outputs = open_outputs(&opts, listener)?;
    kernel::raise_memlock();
    let mut loaded = load(&opts, &claim)?;
    let (runtime, generation) = write_policy(&opts, &mut loaded, &claim, &inputs, container_name)?;
    let ring = loaded.take_events()?;
    let counters = Arc::new(loaded.take_counters()?);
    let kernel_log = loaded.take_logger()?;
    attach(&opts, &mut loaded, &cgroup)?;
    let resolver = super::dns::Resolver::start(&opts.dns, &mount, &cgroup, &mut loaded)?;
    claim.new_pins.keep();
    outputs.metrics.set_policy(&inputs.compiled.summary());
    outputs.metrics.set_enforcing(opts.mode == Mode::Enforce);
    let watcher = watch_processes(&opts.target, &mut loaded)?;
    let target_text = target_text.or_else(|| container.as_ref().map(|c| c.info.describe()));
    let mut state = first_state(
        &opts,
        target_text,
        &cgroup,
        inputs,
        generation,
        &loaded,
        &outputs.listener,
    );
    state.restarts = restarts;
    state
        .write(&opts.log_dir)
        .map_err(io_err("writing the state file"))?;

    let Outputs {
        metrics,
        listener,
        writer,
    } = outputs;
    let tally = Arc::new(EventTally::default());
    let workers = Workers {
        ring,
        decoder: runtime.decoder(),
        sink: sink(&opts, writer, &metrics, &tally),
        listener,
        metrics: Arc::clone(&metrics),
        counters: Arc::clone(&counters),
        kernel_log,
    };
    // A container followed by name may come back under a new id beside its old cgroup: every
    // new directory of the parent is looked at.
    let watch = match &container {
        Some(_) => CgroupWatch::any_in_parent(&cgroup),
        None => CgroupWatch::new(&cgroup),
    };
    let tasks = Tasks::spawn(signals, watcher, watch, workers)
        .with_pods(pod.map(super::kube::PodFollow::spawn));
    info!(metrics = ?state.metrics_addr, "ollama-egress ready");
    let unit = match (&opts.target, restarts) {
        (TargetSpec::Unit(u), Some(_)) => Some(u.as_str()),
        _ => None,
    };
    let kernel = KernelHandles::new(cgroup, loaded, counters, claim.locks)
        .with_resolver(resolver)
        .with_unit(&mount, unit);
    let report = Report::new(opts.log_dir.clone(), state, metrics, tally);
    let follow = container.as_ref().map(ContainerFollow::new);
    Ok(Some(
        Daemon::new(opts, report, runtime, tasks, kernel).following(follow),
    ))
}

/// The event sink: the log, and stdout with `--log-stdout`.
fn sink(
    opts: &RunOptions,
    writer: crate::logstore::LogWriter,
    metrics: &Arc<crate::metrics::Metrics>,
    tally: &Arc<EventTally>,
) -> LogSink {
    let sink = LogSink::new(writer, Arc::clone(metrics), Arc::clone(tally));
    if opts.log_stdout {
        sink.with_copy_to(Box::new(std::io::stdout()))
    } else {
        sink
    }
}

/// The state file's first content.
fn first_state(
    opts: &RunOptions,
    target: Option<String>,
    cgroup: &Path,
    inputs: Inputs,
    generation: u32,
    loaded: &Loaded,
    listener: &TcpListener,
) -> DaemonState {
    DaemonState {
        pid: std::process::id(),
        mode: opts.mode.as_str().to_owned(),
        target: target.unwrap_or_else(|| opts.target.to_string()),
        cgroup: cgroup.to_owned(),
        policy: inputs.compiled.origin.clone(),
        generation,
        programs: kernel::program_ids(loaded),
        started: OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        geo_db: inputs.geo_path,
        asn_db: inputs.asn_path,
        rules: inputs.compiled.rules.len(),
        prefixes: inputs.compiled.summary().prefixes,
        metrics_addr: listener.local_addr().ok().map(|a| a.to_string()),
        counters: Default::default(),
        restarts: None,
    }
}

fn check_privileges() -> Result<(), DaemonError> {
    let missing = missing_capabilities();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(DaemonError::Privileges(missing.join(", ")))
    }
}

/// The inputs as read at start-up.
struct Inputs {
    geo_path: Option<PathBuf>,
    asn_path: Option<PathBuf>,
    geo: Option<Arc<GeoDb>>,
    compiled: CompiledPolicy,
}

/// Opens the geo databases, reads and compiles the policy, and checks it fits the tables asked
/// for.
fn read_inputs(opts: &RunOptions) -> Result<Inputs, DaemonError> {
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
    PolicyRuntime::check_fits(&compiled, opts.mode, opts.max_prefixes)?;
    Ok(Inputs {
        geo_path,
        asn_path,
        geo,
        compiled,
    })
}

/// What the daemon writes to: the metrics (registry and endpoint) and the event log.
struct Outputs {
    metrics: Arc<Metrics>,
    listener: TcpListener,
    writer: LogWriter,
}

fn open_outputs(opts: &RunOptions, listener: TcpListener) -> Result<Outputs, DaemonError> {
    let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION"))?);
    let writer = LogWriter::open(&opts.log_dir, RotateOptions::default())?;
    Ok(Outputs {
        metrics,
        listener,
        writer,
    })
}

/// Loads the programs and maps (re-opening pinned ones in enforce mode).
fn load(opts: &RunOptions, claim: &Claim) -> Result<Loaded, DaemonError> {
    Ok(Loaded::load_for(
        MapSizes {
            max_prefixes: opts.max_prefixes,
            event_buffer_bytes: opts.event_buffer_bytes,
        },
        claim.pinned.then_some(&claim.pins),
        opts.mode == Mode::Enforce,
    )?)
}

/// Writes the first policy into the tables; returns the runtime that keeps it current and its
/// generation.
fn write_policy(
    opts: &RunOptions,
    loaded: &mut Loaded,
    claim: &Claim,
    inputs: &Inputs,
    container: Option<String>,
) -> Result<(PolicyRuntime, u32), DaemonError> {
    let mut tables = loaded.policy_tables()?;
    // Before anything is attached.
    tables.set_dns_config(opts.dns.config()?)?;
    let rulebook = claim
        .pinned
        .then(|| {
            RuleBook::new(
                &opts.log_dir,
                &opts.pin_dir,
                &claim.pins.map(ollama_egress_common::SLOT_CONFIG_MAP),
            )
        })
        .flatten();
    let mut decoder = Decoder::new(BootClock::now(), inputs.geo.clone()).with_container(container);
    // The names a previous daemon had bound: the first slot's bindings are rebuilt from them.
    let restored = super::names::restore(&mut decoder, &opts.log_dir);
    if restored > 0 {
        info!(
            bindings = restored,
            "learned back the names a previous daemon had bound"
        );
    }
    let source = PolicySource::new(
        opts.policy.clone(),
        opts.geo_db.clone(),
        opts.asn_db.clone(),
        inputs.geo.clone(),
    );
    PolicyRuntime::start(
        opts.mode,
        tables,
        decoder,
        source,
        rulebook,
        &inputs.compiled,
    )
}

/// Attaches the programs (and, for `--process`, the marking programs) to the target.
fn attach(opts: &RunOptions, loaded: &mut Loaded, cgroup: &Path) -> Result<(), DaemonError> {
    if let TargetSpec::Process(name) = &opts.target {
        targeting::ensure_tracefs()?;
        loaded.configure_marking(targeting::comm_bytes(name), targeting::mark_offsets())?;
        loaded.attach_marking(cgroup)?;
    }
    if loaded.attach(cgroup)? == Attachment::Adopted {
        info!(pin_dir = %opts.pin_dir.display(), "adopted the pinned enforcement: its links now run this daemon's programs, with no gap");
    }
    info!(
        cgroup = %cgroup.display(),
        target = %opts.target,
        mode = opts.mode.as_str(),
        "attached egress, ingress, connect4, connect6, sendmsg4, sendmsg6, accepted (sockops); the kernel lists all seven on the cgroup"
    );
    Ok(())
}

/// `--process`: marks the processes of that name already running.
fn watch_processes(
    target: &TargetSpec,
    loaded: &mut Loaded,
) -> Result<Option<ProcessWatcher>, DaemonError> {
    let TargetSpec::Process(name) = target else {
        return Ok(None);
    };
    let mut w = ProcessWatcher::new(name, loaded.take_marks()?, loaded.take_target_socks()?);
    let marked = w.scan()?;
    if marked.is_empty() {
        info!("no process named {name} yet; the kernel marks one as it starts");
    } else {
        info!(
            ?marked,
            "marked running processes named {name} and their descendants as targets"
        );
    }
    Ok(Some(w))
}
