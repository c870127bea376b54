//! `cargo xtask bench`: ollama-egress against no filter, nftables and iptables + ipset, in one
//! run, as ratios to a baseline (see BENCHMARKS.md for the method and the latest numbers).
//!
//! `cargo xtask` builds xtask in debug and without the daemon's library (whose build needs
//! bpf-linker, which `cargo xtask setup` installs). So `bench` first sets up, installs the
//! firewalls, builds `ollama-egress` and xtask itself in release with the `bench` feature, and
//! then runs that binary, which orchestrates and is also the load generator (the
//! `worker-*` subcommands, run as separate processes inside the bench's cgroups).
//!
//! | module | what |
//! |---|---|
//! | `sys` | guards (cgroups, namespace, daemon, children), Ctrl-C, leftovers of killed runs |
//! | `load` | the load-generator workers and the server |
//! | `prefixes` | the CN and 500k sets and the policy / nft / ipset files |
//! | `configs` | the stage and the configurations of the client cgroup |
//! | `pairs` | throughput and latency in adjacent pairs, denied connect() |
//! | `policy_load` | compile + load times |
//! | `events` | event pipeline, daemon RSS and CPU |
//! | `dns` | the DNS responder and client, name learning per answer |
//! | `history` | `policy suggest` and `policy replay` over a generated 1 GiB log |
//! | `kstats` | kernel ns per program call from `bpf_stats` |
//! | `report` | goals and tables, BENCHMARKS.md |

mod bulk;
mod configs;
mod daemon;
mod dns;
mod events;
mod history;
mod kstats;
mod load;
mod pairs;
mod policy_load;
mod prefixes;
mod report;
mod server;
mod sys;

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::Args as ClapArgs;

pub use configs::Config;
use configs::Stage;
use pairs::Workload;
use prefixes::PrefixSet;
use report::{NOTES_MARKER, Results};
use sys::progress;

/// The country code of the 500k set in its synthetic database (user-assigned in ISO 3166).
const SYNTHETIC_COUNTRY: &str = "ZZ";

/// Debian packages of the comparison (and bpftool, which reads the lost-event counter).
const PACKAGES: &[&str] = &["nftables", "iptables", "ipset", "bpftool"];

/// Options of `cargo xtask bench`.
#[derive(ClapArgs, Debug)]
pub struct Args {
    /// A smoke run: 3 pairs of 0.5 s, one load repetition, fewer event rates. Writes
    /// target/bench/BENCHMARKS-quick.md unless --out is given.
    #[arg(long)]
    quick: bool,
    /// Adjacent pairs per configuration and workload [default: 10, --quick 3].
    #[arg(long)]
    reps: Option<usize>,
    /// Seconds per run [default: 1, --quick 0.5].
    #[arg(long)]
    secs: Option<f64>,
    /// Run the TCP connection-rate workload (without any workload flag: all of them).
    #[arg(long)]
    tcp: bool,
    /// Run the UDP 64-byte packet-rate workload.
    #[arg(long)]
    udp: bool,
    /// Run the TCP bulk-throughput workload (one stream received, a model download).
    #[arg(long)]
    bulk: bool,
    /// Run the TCP request/response latency workload.
    #[arg(long)]
    latency: bool,
    /// Time a connect() to a denied destination.
    #[arg(long)]
    denied: bool,
    /// Time policy compile + load (ollama-egress, nft, ipset).
    #[arg(long)]
    load: bool,
    /// Run the event-pipeline bursts and measure the daemon's RSS and CPU.
    #[arg(long)]
    events: bool,
    /// Run the DNS answer-rate workload, and measure name learning (answers learned per
    /// second, kernel and daemon CPU per answer) under the domain configuration.
    #[arg(long)]
    dns: bool,
    /// Time `policy suggest` and `policy replay` over a generated event log of 1 GiB (64 MiB
    /// with --quick): wall time and peak RSS.
    #[arg(long)]
    history: bool,
    /// Configurations to compare, comma-separated [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    config: Vec<Config>,
    /// Directory with country.mmdb and asn.mmdb; downloaded with `ollama-egress geo update`
    /// when missing [default: target/bench/geo].
    #[arg(long)]
    geo_dir: Option<PathBuf>,
    /// Where to write the report [default: BENCHMARKS.md at the workspace root].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Internal: the load-generator workers.
    #[command(subcommand)]
    worker: Option<load::Worker>,
}

/// The workspace root (xtask's parent directory).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

/// Entry point of `cargo xtask bench`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(w) = args.worker {
        return load::worker(w);
    }
    if !sys::is_root() {
        bail!(
            "the bench attaches eBPF programs and firewall rules: run it as root (`sudo -E cargo xtask bench`)"
        );
    }
    if cfg!(feature = "bench") {
        return orchestrate(&args);
    }
    crate::setup::run()?;
    sys::install_packages(PACKAGES)?;
    let root = workspace_root();
    crate::setup::sh(Command::new("cargo").current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "ollama-egress",
    ]))?;
    crate::setup::sh(Command::new("cargo").current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "xtask",
        "--features",
        "bench",
    ]))?;
    let exe = target_dir().join("release/xtask");
    let err = Command::new(&exe).args(std::env::args_os().skip(1)).exec();
    Err(anyhow::Error::new(err).context(format!("running {}", exe.display())))
}

/// Settings derived from the flags.
struct Plan {
    reps: usize,
    secs: f64,
    load_reps: usize,
    cidr_lists: Vec<usize>,
    allowed_rates: Vec<u64>,
    denied_rates: Vec<u64>,
    event_secs: f64,
    workloads: Vec<Workload>,
    denied: bool,
    load: bool,
    events: bool,
    /// Log size for `--history`, bytes (0: not run).
    history_bytes: u64,
    configs: Vec<Config>,
}

impl Plan {
    fn new(a: &Args) -> Self {
        let all = !(a.tcp
            || a.udp
            || a.bulk
            || a.latency
            || a.denied
            || a.load
            || a.events
            || a.dns
            || a.history);
        let mut workloads = Vec::new();
        for (on, w) in [
            (a.tcp, Workload::TcpConnect),
            (a.udp, Workload::Udp),
            (a.bulk, Workload::Bulk),
            (a.latency, Workload::Latency),
            (a.dns, Workload::Dns),
        ] {
            if on || all {
                workloads.push(w);
            }
        }
        Self {
            reps: a.reps.unwrap_or(if a.quick { 3 } else { 10 }).max(1),
            secs: a.secs.unwrap_or(if a.quick { 0.5 } else { 1.0 }),
            load_reps: if a.quick { 1 } else { 5 },
            cidr_lists: if a.quick {
                vec![5_000]
            } else {
                vec![5_000, 10_000, 20_000]
            },
            allowed_rates: if a.quick {
                vec![0]
            } else {
                vec![25_000, 50_000, 100_000, 0]
            },
            // Just above 100k: the goal is 100k/s, and a paced run lands a little under its target.
            denied_rates: if a.quick {
                vec![110_000, 0]
            } else {
                vec![50_000, 110_000, 125_000, 150_000, 0]
            },
            event_secs: if a.quick { 1.0 } else { 2.0 },
            workloads,
            denied: a.denied || all,
            load: a.load || all,
            events: a.events || all,
            history_bytes: match (a.history || all, a.quick) {
                (false, _) => 0,
                (true, false) => 1 << 30,
                (true, true) => 64 << 20,
            },
            configs: if a.config.is_empty() {
                Config::ALL.to_vec()
            } else {
                a.config.clone()
            },
        }
    }
}

fn orchestrate(args: &Args) -> anyhow::Result<()> {
    sys::install_signal_handlers();
    let plan = Plan::new(args);
    let target = target_dir();
    let bin = target.join("release/ollama-egress");
    if !bin.is_file() {
        bail!("{} is missing: run `cargo xtask bench`", bin.display());
    }
    sys::remove_leftovers(&bin);
    let mut results = Results {
        machine: machine(&plan),
        ..Results::default()
    };
    if plan.history_bytes > 0 {
        progress("bench: policy suggest and replay over a generated log… ");
        results.history =
            history::measure(&bin, &target.join("bench/history"), plan.history_bytes)?;
        eprintln!("done");
    }
    if plan.workloads.is_empty() && !plan.denied && !plan.load && !plan.events {
        return finish(args, results, &target);
    }
    let geo = geo_databases(
        &bin,
        args.geo_dir
            .clone()
            .unwrap_or_else(|| target.join("bench/geo")),
    )?;
    progress("bench: preparing the CN and 500k sets… ");
    let cn = PrefixSet::country("CN", &geo.0)?;
    let mut big = PrefixSet::synthetic("500k", 400_000, 100_000);
    big.country = Some(SYNTHETIC_COUNTRY.to_owned());
    let big_geo = geo.0.with_file_name("synthetic-500k-v1.mmdb");
    big.write_country_db(SYNTHETIC_COUNTRY, &big_geo)?;
    eprintln!("CN {} + {} prefixes", cn.v4.len(), cn.v6.len());
    let stage = Stage::new(bin, geo, cn, (big, big_geo))?;

    if !plan.workloads.is_empty() || plan.denied {
        for &config in &plan.configs {
            sys::check_interrupted()?;
            progress(&format!("bench: {:<30}", config.label()));
            let applied = stage.apply(config)?;
            let daemon = match &applied {
                configs::Applied::Daemon(d) => Some(d),
                configs::Applied::Firewall(_) => None,
            };
            for &w in &plan.workloads {
                // The pairs run with `bpf_stats` off, as a deployment runs: the statistics
                // read the clock twice around every program call, a cost nftables and the
                // baseline do not pay. The kernel cost is then read over one more run of the
                // configuration with the statistics on.
                results
                    .pairs
                    .extend(pairs::measure(&stage, config, w, plan.reps, plan.secs)?);
                if let Some(d) = daemon {
                    results.kernel.push((
                        config,
                        w,
                        kstats::over(&d.log_dir, || pairs::configured(&stage, w, plan.secs))?,
                    ));
                }
            }
            if let Some(d) = daemon
                && config == Config::EnforceCnDomains
                && plan.workloads.contains(&Workload::Dns)
            {
                let _stats = kstats::StatsOn::enable()?;
                results.learning = Some(dns::measure(&stage, d, plan.secs * 3.0)?);
            }
            if plan.denied {
                results.denied.push(pairs::denied(&stage, config, 1000)?);
            }
            if let configs::Applied::Daemon(d) = &applied
                && let Some((_, hwm)) = sys::rss_kib(d.pid())
            {
                results.daemon_rss.push((config, hwm));
            }
            drop(applied);
            eprintln!(" done");
        }
    }
    if plan.load {
        progress("bench: policy compile + load… ");
        results.loads = policy_load::measure(&stage, plan.load_reps, &plan.cidr_lists)?;
        eprintln!("done");
    }
    if plan.events {
        progress("bench: event pipeline ");
        results.events = Some(events::measure(
            &stage,
            &plan.allowed_rates,
            &plan.denied_rates,
            plan.event_secs,
        )?);
        eprintln!(" done");
    }
    drop(stage);
    finish(args, results, &target)
}

/// Prints the report and writes it.
fn finish(args: &Args, mut results: Results, target: &Path) -> anyhow::Result<()> {
    results
        .machine
        .push(("load average at the end".to_owned(), loadavg()));

    let md = results.markdown();
    println!("{md}");
    let out = args.out.clone().unwrap_or_else(|| {
        if args.quick {
            target.join("bench/BENCHMARKS-quick.md")
        } else {
            workspace_root().join("BENCHMARKS.md")
        }
    });
    write_report(&out, &md)?;
    eprintln!("bench: wrote {}", out.display());
    Ok(())
}

/// Writes the report, keeping the hand-written analysis of an existing file.
fn write_report(out: &Path, md: &str) -> anyhow::Result<()> {
    let kept = std::fs::read_to_string(out)
        .ok()
        .and_then(|old| old.find(NOTES_MARKER).map(|i| old[i..].to_owned()))
        .unwrap_or_else(|| format!("{NOTES_MARKER}\n"));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, format!("{md}\n{kept}"))
        .with_context(|| format!("writing {}", out.display()))
}

/// The country and ASN databases in `dir`, downloaded (npm registry) when missing.
fn geo_databases(bin: &Path, dir: PathBuf) -> anyhow::Result<(PathBuf, PathBuf)> {
    let country = dir.join(ollama_egress_geo::COUNTRY_FILE);
    let asn = dir.join(ollama_egress_geo::ASN_FILE);
    if !country.is_file() || !asn.is_file() {
        eprintln!(
            "bench: downloading the geo databases into {}",
            dir.display()
        );
        crate::setup::sh(Command::new(bin).args(["geo", "update", "--dir"]).arg(&dir))?;
    }
    Ok((country, asn))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Machine, kernel, date and the bench's settings.
fn machine(plan: &Plan) -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let kb: u64 = m.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0))
        })
        .unwrap_or_default();
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_default();
    let out = sys::output_or_empty;
    let commit = out(
        "git",
        &[
            "-C",
            &workspace_root().display().to_string(),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    );
    vec![
        ("date".into(), out("date", &["-u", "+%Y-%m-%d %H:%M UTC"])),
        ("machine".into(), format!("{cpu}, {cores} cores, {mem}")),
        ("kernel".into(), out("uname", &["-r"])),
        ("OS".into(), os),
        ("commit".into(), commit),
        (
            "peers".into(),
            format!(
                "{}; {}; {}",
                out("nft", &["--version"]),
                out("iptables", &["--version"]),
                out("ipset", &["--version"])
            ),
        ),
        (
            "method".into(),
            format!(
                "{} adjacent pairs × {} s per configuration and workload; compile + load: median of {}",
                plan.reps, plan.secs, plan.load_reps
            ),
        ),
        ("load average at the start".into(), loadavg()),
    ]
}
