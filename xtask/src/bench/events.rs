//! The event pipeline: connections at a paced rate from the client cgroup, then a count of the
//! events the daemon logged for that worker and of the kernel's lost-event counter. Every
//! connection is one decision, so `attempts − logged − lost` is loss nobody accounted for.
//! Also the daemon's RSS and CPU with both geo databases loaded.

use std::{
    fs,
    net::SocketAddrV4,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use super::{
    configs::{ACCEPT_PORT, Stage},
    daemon::Daemon,
    load::{run_worker, worker_args},
    prefixes::DENIED_ADDR,
    sys::{self, check_interrupted, cpu_time, progress, rss_kib},
};

/// Which connections a series makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Series {
    /// Monitor mode, connections to loopback that succeed (a full TCP handshake each).
    MonitorAllowed,
    /// Enforce mode, connections to the denied address (EPERM in the connect hook).
    EnforceDenied,
}

impl Series {
    /// Its name in the report.
    pub fn label(self) -> &'static str {
        match self {
            Series::MonitorAllowed => "monitor, allowed TCP connects",
            Series::EnforceDenied => "enforce, denied connects (EPERM)",
        }
    }
}

/// One paced burst.
#[derive(Clone, Debug)]
pub struct Step {
    /// The series.
    pub series: Series,
    /// Rate asked for (0: as fast as the client goes).
    pub target: u64,
    /// Decisions made (connect() calls).
    pub attempts: u64,
    /// Rate achieved, per second.
    pub rate: f64,
    /// Events in the log for the worker.
    pub logged: u64,
    /// The kernel's lost-event counter.
    pub lost: Option<u64>,
    /// Daemon CPU over the burst and the drain, percent of one core.
    pub cpu_pct: f64,
    /// Daemon CPU per logged event, µs.
    pub cpu_us_per_event: f64,
    /// Time from the end of the burst until the last event was in the log.
    pub drain: Duration,
}

impl Step {
    /// Decisions neither logged nor counted as lost (negative: more events than decisions).
    pub fn unaccounted(&self) -> i64 {
        self.attempts as i64 - self.logged as i64 - self.lost.unwrap_or(0) as i64
    }
}

/// The pipeline measurements and the daemon's memory.
#[derive(Clone, Debug, Default)]
pub struct EventReport {
    /// Every burst.
    pub steps: Vec<Step>,
    /// VmRSS of a monitor daemon (CN policy, both databases) after start, idle, KiB.
    pub rss_idle_kib: Option<u64>,
    /// Largest VmHWM of the daemons during the bursts, KiB.
    pub rss_peak_kib: Option<u64>,
    /// Daemon CPU while idle, percent of one core (over 2 s).
    pub idle_cpu_pct: Option<f64>,
}

/// Runs both series at `rates` (0 = unpaced) for `secs` each.
pub fn measure(
    stage: &Stage,
    allowed_rates: &[u64],
    denied_rates: &[u64],
    secs: f64,
) -> anyhow::Result<EventReport> {
    let mut report = EventReport::default();
    for (series, rates) in [
        (Series::MonitorAllowed, allowed_rates),
        (Series::EnforceDenied, denied_rates),
    ] {
        for &rate in rates {
            check_interrupted()?;
            // A fresh daemon per burst: its log holds only this burst.
            let enforce = series == Series::EnforceDenied;
            let daemon = stage.daemon(enforce, "cn.toml", "events")?;
            if report.rss_idle_kib.is_none() && !enforce {
                let pid = daemon.pid();
                sys::sleep(Duration::from_secs(1));
                let c0 = cpu_time(pid);
                sys::sleep(Duration::from_secs(2));
                let c1 = cpu_time(pid);
                report.rss_idle_kib = rss_kib(pid).map(|r| r.0);
                if let (Some(a), Some(b)) = (c0, c1) {
                    report.idle_cpu_pct = Some(a.until(&b).as_secs_f64() / 2.0 * 100.0);
                }
            }
            let step = burst(stage, &daemon, series, rate, secs)?;
            if let Some((_, hwm)) = rss_kib(daemon.pid()) {
                report.rss_peak_kib = Some(report.rss_peak_kib.unwrap_or(0).max(hwm));
            }
            progress(".");
            report.steps.push(step);
        }
    }
    Ok(report)
}

fn burst(
    stage: &Stage,
    daemon: &Daemon,
    series: Series,
    rate: u64,
    secs: f64,
) -> anyhow::Result<Step> {
    let pid = daemon.pid();
    let dst = match series {
        Series::MonitorAllowed => SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, ACCEPT_PORT),
        Series::EnforceDenied => SocketAddrV4::new(DENIED_ADDR, ACCEPT_PORT),
    };
    let mut args = worker_args(
        "worker-tcp-connect",
        &stage.ns.name,
        Some(&stage.client.path),
    );
    args.extend([
        "--addr".to_owned(),
        dst.to_string(),
        "--secs".to_owned(),
        secs.to_string(),
        "--rate".to_owned(),
        rate.to_string(),
        // Two client threads: one cannot offer much more than 100k connect()s per second.
        "--threads".to_owned(),
        "2".to_owned(),
    ]);
    let cpu0 = cpu_time(pid);
    let t0 = Instant::now();
    let out = run_worker(&args)?;
    let burst_end = Instant::now();
    let attempts = out["attempts"].as_u64().unwrap_or(0);
    let wpid = out["pid"].as_u64().unwrap_or(0);
    // Wait until every decision is in the log, or the count stops growing for a second.
    let mut last = (0u64, Instant::now());
    let mut drained_at = burst_end;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        check_interrupted()?;
        let n = count_lines(&daemon.log_dir);
        if n != last.0 {
            last = (n, Instant::now());
            drained_at = last.1;
        }
        if n >= attempts || last.1.elapsed() > Duration::from_secs(1) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let wall = drained_at.max(burst_end) - t0;
    let cpu = match (cpu0, cpu_time(pid)) {
        (Some(a), Some(b)) => a.until(&b),
        _ => Duration::ZERO,
    };
    let logged = count_pid(&daemon.log_dir, wpid);
    Ok(Step {
        series,
        target: rate,
        attempts,
        rate: out["rate"].as_f64().unwrap_or(0.0),
        logged,
        lost: lost_events(daemon),
        cpu_pct: cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9) * 100.0,
        cpu_us_per_event: cpu.as_secs_f64() * 1e6 / (logged.max(1) as f64),
        drain: drained_at.saturating_duration_since(burst_end),
    })
}

/// The log files of a log directory (`events.jsonl` and its rotations).
fn log_files(dir: &Path) -> Vec<std::path::PathBuf> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("events.jsonl"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn count_lines(dir: &Path) -> u64 {
    log_files(dir)
        .iter()
        .filter_map(|p| fs::read(p).ok())
        .map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64)
        .sum()
}

/// Events of process `pid` (the field order of a log line is fixed: `…"mode":…,"pid":N,`).
fn count_pid(dir: &Path, pid: u64) -> u64 {
    let needle = format!("\"pid\":{pid},");
    log_files(dir)
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .map(|t| t.matches(&needle).count() as u64)
        .sum()
}

/// The kernel's lost-event counter (`STATS[0]`, summed over CPUs), found through the programs
/// the daemon's state file names; read with bpftool.
fn lost_events(daemon: &Daemon) -> Option<u64> {
    let state = daemon.state()?;
    let prog = state["programs"]
        .as_array()?
        .iter()
        .find(|p| p[0] == "connect4")?[1]
        .as_u64()?;
    let json = |args: &[&str]| -> Option<serde_json::Value> {
        let out = Command::new("bpftool").arg("-j").args(args).output().ok()?;
        serde_json::from_slice(&out.stdout).ok()
    };
    let info = json(&["prog", "show", "id", &prog.to_string()])?;
    let stats = info["map_ids"].as_array()?.iter().find_map(|id| {
        let id = id.as_u64()?.to_string();
        (json(&["map", "show", "id", &id])?["name"] == "STATS").then_some(id)
    })?;
    let v = json(&["map", "lookup", "id", &stats, "key", "0", "0", "0", "0"])?;
    Some(
        v["values"]
            .as_array()?
            .iter()
            .map(|c| per_cpu_u64(&c["value"]))
            .sum(),
    )
}

/// A bpftool per-CPU value: a number (with BTF) or little-endian bytes as hex strings.
fn per_cpu_u64(v: &serde_json::Value) -> u64 {
    if let Some(n) = v.as_u64() {
        return n;
    }
    v.as_array()
        .map(|bytes| {
            bytes.iter().rev().fold(0u64, |acc, b| {
                let byte = b
                    .as_str()
                    .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
                    .unwrap_or(0);
                (acc << 8) | byte
            })
        })
        .unwrap_or(0)
}
