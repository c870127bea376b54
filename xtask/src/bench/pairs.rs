//! Throughput and latency as adjacent pairs: a run in the baseline cgroup, then one in the
//! client cgroup (the order alternates), each pair a ratio; the report gives the median ratio.
//! Two identical configurations measured this way agree to 1.00 ± 0.03 here, while separate
//! medians drift by ±15 % on these shared machines.

use std::net::SocketAddrV4;

use anyhow::bail;

use super::{
    configs::{ACCEPT_PORT, Config, ECHO_PORT, Stage, UDP_PORT},
    load::{run_worker, worker_args},
    prefixes::DENIED_ADDR,
    sys::{check_interrupted, progress},
};

/// A workload measured in pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// connect/accept/close per second.
    TcpConnect,
    /// 64-byte UDP datagrams sent per second.
    Udp,
    /// 64-byte TCP request/response round trip, p50 and p99.
    Latency,
    /// DNS answers per second (a query for a fresh name each, 16 in flight).
    Dns,
    /// One TCP stream received on loopback (a model download), MB/s.
    Bulk,
}

impl Workload {
    /// The program that runs once per operation, and what the operation is called, for the
    /// kernel cost per operation: `None` where no program counts operations one to one.
    pub fn operation(self) -> Option<(&'static str, &'static str)> {
        match self {
            Workload::TcpConnect => Some(("connect4", "connection")),
            Workload::Udp => Some(("sendmsg4", "datagram")),
            Workload::Latency | Workload::Dns | Workload::Bulk => None,
        }
    }

    /// The metrics it yields, with whether higher is better.
    pub fn metrics(self) -> &'static [(&'static str, bool)] {
        match self {
            Workload::TcpConnect => &[("TCP connections/s", true)],
            Workload::Udp => &[("UDP 64 B datagrams/s", true)],
            Workload::Latency => &[("TCP RR p50 µs", false), ("TCP RR p99 µs", false)],
            Workload::Dns => &[("DNS answers/s", true)],
            Workload::Bulk => &[("TCP bulk MB/s", true)],
        }
    }
}

/// Median and spread of one metric of one configuration.
#[derive(Clone, Debug)]
pub struct PairStat {
    /// The configuration.
    pub config: Config,
    /// The metric's name.
    pub metric: &'static str,
    /// Whether a higher value is better.
    pub higher_better: bool,
    /// Median of the baseline runs.
    pub base: f64,
    /// Median of the configuration's runs.
    pub value: f64,
    /// Median of the pair ratios (configuration / baseline).
    pub ratio: f64,
    /// Smallest and largest pair ratio.
    pub spread: (f64, f64),
    /// Number of pairs.
    pub pairs: usize,
}

/// Median of `v` (0 when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return 0.0;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// One run of `w` in the client cgroup, under the configuration applied; its values are not
/// kept (a run for the kernel's statistics).
pub fn configured(stage: &Stage, w: Workload, secs: f64) -> anyhow::Result<()> {
    check_interrupted()?;
    once(stage, w, &stage.client.path, secs).map(drop)
}

/// One run of `w` in `cgroup`; the values of its metrics.
fn once(
    stage: &Stage,
    w: Workload,
    cgroup: &std::path::Path,
    secs: f64,
) -> anyhow::Result<Vec<f64>> {
    let lo = std::net::Ipv4Addr::LOCALHOST;
    let (name, flag, addr) = match w {
        Workload::TcpConnect => (
            "worker-tcp-connect",
            "--addr",
            SocketAddrV4::new(lo, ACCEPT_PORT),
        ),
        Workload::Udp => ("worker-udp", "--addr", SocketAddrV4::new(lo, UDP_PORT)),
        Workload::Latency => ("worker-rr", "--addr", SocketAddrV4::new(lo, ECHO_PORT)),
        Workload::Dns => ("worker-dns", "--server", super::dns::DNS_ADDR),
        Workload::Bulk => (
            "worker-bulk",
            "--addr",
            SocketAddrV4::new(lo, super::bulk::BULK_PORT),
        ),
    };
    let mut args = worker_args(name, &stage.ns.name, Some(cgroup));
    args.extend([
        flag.to_owned(),
        addr.to_string(),
        "--secs".to_owned(),
        secs.to_string(),
    ]);
    let out = run_worker(&args)?;
    let f = |k: &str| out[k].as_f64().unwrap_or(f64::NAN);
    Ok(match w {
        Workload::TcpConnect => {
            if out["ok"] != out["attempts"] {
                bail!("TCP connects failed in {}: {out}", cgroup.display());
            }
            vec![f("rate")]
        }
        Workload::Udp => {
            if f("failed") > 0.0 {
                bail!("UDP sends failed in {}: {out}", cgroup.display());
            }
            vec![f("rate")]
        }
        Workload::Latency => vec![f("p50_ns") / 1000.0, f("p99_ns") / 1000.0],
        Workload::Dns => vec![f("rate")],
        Workload::Bulk => vec![f("rate") / 1e6],
    })
}

/// `reps` adjacent pairs of `w` with `config` applied to the client cgroup.
pub fn measure(
    stage: &Stage,
    config: Config,
    w: Workload,
    reps: usize,
    secs: f64,
) -> anyhow::Result<Vec<PairStat>> {
    let metrics = w.metrics();
    let mut base: Vec<Vec<f64>> = vec![Vec::new(); metrics.len()];
    let mut value = base.clone();
    let mut ratio = base.clone();
    for i in 0..reps {
        check_interrupted()?;
        // Alternate which side goes first, so a drift within a pair cancels out.
        let (b, c) = if i % 2 == 0 {
            let b = once(stage, w, &stage.base.path, secs)?;
            (b, once(stage, w, &stage.client.path, secs)?)
        } else {
            let c = once(stage, w, &stage.client.path, secs)?;
            (once(stage, w, &stage.base.path, secs)?, c)
        };
        for m in 0..metrics.len() {
            base[m].push(b[m]);
            value[m].push(c[m]);
            ratio[m].push(c[m] / b[m]);
        }
        progress(".");
    }
    Ok(metrics
        .iter()
        .enumerate()
        .map(|(m, &(metric, higher_better))| {
            let r = &ratio[m];
            PairStat {
                config,
                metric,
                higher_better,
                base: median(&base[m]),
                value: median(&value[m]),
                ratio: median(r),
                spread: (
                    r.iter().copied().fold(f64::INFINITY, f64::min),
                    r.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                ),
                pairs: r.len(),
            }
        })
        .collect())
}

/// What a connect() to a denied destination does under a configuration.
#[derive(Clone, Debug)]
pub struct DeniedStat {
    /// The configuration.
    pub config: Config,
    /// Attempts made.
    pub count: u64,
    /// Attempts that failed with EPERM.
    pub eperm: u64,
    /// Attempts that succeeded (the configuration does not block).
    pub succeeded: u64,
    /// Attempts still waiting when the timeout hit (SYN dropped).
    pub timed_out: u64,
    /// Median, p99 and maximum time connect() took, µs.
    pub p50_us: f64,
    /// p99, µs.
    pub p99_us: f64,
    /// Maximum, µs.
    pub max_us: f64,
}

/// Timeout of a denied connect() that the firewall leaves hanging.
pub const DENIED_TIMEOUT_MS: u64 = 200;

/// connect() to the denied documentation address from the client cgroup: three tries first;
/// when they fail fast, `count` more for the percentiles.
pub fn denied(stage: &Stage, config: Config, count: u32) -> anyhow::Result<DeniedStat> {
    let run = |n: u32| {
        let mut args = worker_args("worker-denied", &stage.ns.name, Some(&stage.client.path));
        args.extend([
            "--addr".to_owned(),
            SocketAddrV4::new(DENIED_ADDR, ACCEPT_PORT).to_string(),
            "--count".to_owned(),
            n.to_string(),
            "--timeout-ms".to_owned(),
            DENIED_TIMEOUT_MS.to_string(),
        ]);
        run_worker(&args)
    };
    let mut out = run(3)?;
    if out["eperm"].as_u64() == Some(3) {
        out = run(count)?;
    }
    let u = |k: &str| out[k].as_u64().unwrap_or(0);
    Ok(DeniedStat {
        config,
        count: u("count"),
        eperm: u("eperm"),
        succeeded: u("succeeded"),
        timed_out: u("timed_out"),
        p50_us: u("p50_ns") as f64 / 1000.0,
        p99_us: u("p99_ns") as f64 / 1000.0,
        max_us: u("max_ns") as f64 / 1000.0,
    })
}
