//! The report: goals met or not, then every table, as Markdown (printed and written to
//! BENCHMARKS.md). A hand-written analysis below [`NOTES_MARKER`] in an existing file is kept.

use std::{fmt::Write as _, time::Duration};

use super::{
    configs::Config,
    dns,
    events::{EventReport, Series},
    kstats,
    pairs::Workload,
    pairs::{DENIED_TIMEOUT_MS, DeniedStat, PairStat},
    policy_load::LoadTimes,
};

/// Everything after this line of BENCHMARKS.md is kept when the bench rewrites the file.
pub const NOTES_MARKER: &str =
    "<!-- analysis: kept when `cargo xtask bench` rewrites this file -->";

/// All results of one run.
#[derive(Default)]
pub struct Results {
    /// Machine, kernel, date, settings: `(name, value)`.
    pub machine: Vec<(String, String)>,
    /// Throughput and latency pairs.
    pub pairs: Vec<PairStat>,
    /// Denied connect() per configuration.
    pub denied: Vec<DeniedStat>,
    /// Compile + load times.
    pub loads: Vec<LoadTimes>,
    /// Event pipeline and memory.
    pub events: Option<EventReport>,
    /// Peak RSS of each daemon configuration during its throughput runs, KiB.
    pub daemon_rss: Vec<(Config, u64)>,
    /// Kernel cost per program call (`bpf_stats`) of each daemon configuration and workload
    /// (the configuration's runs only: nothing is attached to the baseline cgroup).
    pub kernel: Vec<(Config, Workload, Vec<kstats::Cost>)>,
    /// Name learning under the domain configuration.
    pub learning: Option<dns::Learning>,
    /// `policy suggest` and `policy replay` over a generated log.
    pub history: Vec<super::history::HistoryStat>,
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("–".to_owned(), |d| {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    })
}

fn num(x: f64) -> String {
    if x >= 100.0 {
        let n = x.round() as u64;
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else {
        format!("{x:.1}")
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn met(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "**met**",
        Some(false) => "**not met**",
        None => "not measured",
    }
}

impl Results {
    fn pair(&self, c: Config, metric: &str) -> Option<&PairStat> {
        self.pairs
            .iter()
            .find(|p| p.config == c && p.metric == metric)
    }

    /// Rows of the goals table: goal, measured, met.
    fn goals(&self) -> Vec<(String, String, &'static str)> {
        let mut g = Vec::new();
        let tcp = "TCP connections/s";
        let cn = self.pair(Config::EnforceCn, tcp);
        let nft = self.pair(Config::Nftables, tcp);
        let ipset = self.pair(Config::Ipset, tcp);
        g.push((
            "TCP connect rate ≥ 97 % of baseline with the CN set".to_owned(),
            cn.map_or("–".into(), |p| format!("{:.3}×", p.ratio)),
            met(cn.map(|p| p.ratio >= 0.97)),
        ));
        let above = match (cn, nft, ipset) {
            (Some(c), Some(n), Some(i)) => Some(c.ratio > n.ratio && c.ratio > i.ratio),
            _ => None,
        };
        g.push((
            "TCP connect rate above nftables and iptables + ipset (same CN set)".to_owned(),
            format!(
                "{} vs nftables {} and ipset {}",
                cn.map_or("–".into(), |p| format!("{:.3}×", p.ratio)),
                nft.map_or("–".into(), |p| format!("{:.3}×", p.ratio)),
                ipset.map_or("–".into(), |p| format!("{:.3}×", p.ratio)),
            ),
            met(above),
        ));
        let udp = self.pair(Config::EnforceCn, "UDP 64 B datagrams/s");
        g.push((
            "UDP 64 B packets/s ≥ 95 % of baseline (CN)".to_owned(),
            udp.map_or("–".into(), |p| format!("{:.3}×", p.ratio)),
            met(udp.map(|p| p.ratio >= 0.95)),
        ));
        let bulk = self.pair(Config::EnforceCn, "TCP bulk MB/s");
        g.push((
            "TCP bulk throughput ≥ 99 % of baseline (CN)".to_owned(),
            bulk.map_or("–".into(), |p| format!("{:.3}×", p.ratio)),
            met(bulk.map(|p| p.ratio >= 0.99)),
        ));
        for (set, limit) in [("CN", 0.1), ("500k", 1.0)] {
            let t = self
                .loads
                .iter()
                .find(|l| l.set == set)
                .and_then(LoadTimes::total);
            g.push((
                format!(
                    "{set} policy compile + load < {}",
                    if limit < 1.0 { "100 ms" } else { "1 s" }
                ),
                ms(t),
                met(t.map(|t| t.as_secs_f64() < limit)),
            ));
        }
        let ev = self.events.as_ref();
        let (best, unaccounted) = ev.map_or((None, None), |e| {
            let best = e
                .steps
                .iter()
                .filter(|s| s.logged == s.attempts && s.lost == Some(0))
                .map(|s| s.rate)
                .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
            let un: i64 = e.steps.iter().map(|s| s.unaccounted().abs()).sum();
            (best, Some(un))
        });
        g.push((
            "≥ 100k events/s with no unaccounted loss".to_owned(),
            format!(
                "{} events/s without any loss; {} unaccounted in all bursts",
                best.map_or("–".into(), num),
                unaccounted.map_or("–".into(), |u| u.to_string())
            ),
            met(ev.map(|_| best.unwrap_or(0.0) >= 100_000.0 && unaccounted == Some(0))),
        ));
        let peak = ev.and_then(|e| e.rss_peak_kib);
        g.push((
            "daemon RSS ≤ 40 MB with both geo databases".to_owned(),
            format!(
                "idle {}, peak {}",
                ev.and_then(|e| e.rss_idle_kib).map_or("–".into(), mib),
                peak.map_or("–".into(), mib)
            ),
            met(peak.map(|p| p as f64 * 1024.0 <= 40e6)),
        ));
        let d = self.denied.iter().find(|d| d.config == Config::EnforceCn);
        g.push((
            "a denied connect() returns in < 1 ms".to_owned(),
            d.map_or("–".into(), |d| {
                format!(
                    "EPERM {}/{}; p99 {:.1} µs, max {:.1} µs",
                    d.eperm, d.count, d.p99_us, d.max_us
                )
            }),
            met(d.map(|d| d.eperm == d.count && d.p99_us < 1000.0)),
        ));
        g
    }

    /// The Markdown report (without the kept analysis).
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# Benchmarks\n");
        let _ = writeln!(
            s,
            "Written by `cargo xtask bench` (see [How to run](#how-to-run)). Throughput and latency are \
             medians of ratios of adjacent pairs: a run in a sibling cgroup with nothing attached \
             (baseline), then one in the client cgroup with the configuration applied, order \
             alternating. All traffic stays on the loopback device of a network namespace the \
             bench creates.\n"
        );
        let _ = writeln!(s, "| | |\n|---|---|");
        for (k, v) in &self.machine {
            let _ = writeln!(s, "| {k} | {v} |");
        }
        let _ = writeln!(s, "\n## Goals\n\n| goal | measured | |\n|---|---|---|");
        for (goal, measured, ok) in self.goals() {
            let _ = writeln!(s, "| {goal} | {measured} | {ok} |");
        }
        self.pairs_md(&mut s);
        self.denied_md(&mut s);
        self.loads_md(&mut s);
        self.events_md(&mut s);
        self.kernel_md(&mut s);
        self.learning_md(&mut s);
        self.history_md(&mut s);
        s
    }

    fn history_md(&self, s: &mut String) {
        let Some(first) = self.history.first() else {
            return;
        };
        let _ = writeln!(
            s,
            "\n## From the log to a policy\n\n`policy suggest` and `policy replay` (a stricter policy) over a generated monitor log of {:.2} GiB, {} lines (names, CDN addresses, private and inbound connections, one malformed line in 10,000): wall time and peak RSS of the command.\n\n| command | wall | lines/s | peak RSS | output |\n|---|--:|--:|--:|---|",
            first.bytes as f64 / f64::from(1u32 << 30),
            num(first.lines as f64)
        );
        for h in &self.history {
            let _ = writeln!(
                s,
                "| `{}` | {:.2} s | {} | {:.1} MiB | {} |",
                h.what,
                h.wall.as_secs_f64(),
                num(h.lines as f64 / h.wall.as_secs_f64().max(1e-9)),
                h.max_rss_kib as f64 / 1024.0,
                h.output
            );
        }
    }

    fn kernel_md(&self, s: &mut String) {
        if self.kernel.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "\n## Kernel cost per call (`bpf_stats`)\n\nThe kernel's run time of each program of the daemon divided by its run count, over one more run of the workload under the configuration after its pairs, with `kernel.bpf_stats_enabled` on for that run only (the statistics read the clock around every program call; the pairs run without them, as a deployment does). The workload's metric names the workload; *every program, per connection* (or datagram) is the time of all of them over the `connect4` (`sendmsg4`) calls: what one operation costs in the kernel.\n\n| configuration | workload | program | calls | ns per call |\n|---|---|---|--:|--:|"
        );
        for (config, w, costs) in &self.kernel {
            for c in costs {
                let _ = writeln!(
                    s,
                    "| {} | {} | `{}` | {} | {:.0} |",
                    config.label(),
                    w.metrics()[0].0,
                    c.program,
                    num(c.calls as f64),
                    c.ns_per_call
                );
            }
            let per = w
                .operation()
                .and_then(|(program, op)| Some((op, kstats::per_operation(costs, program)?)));
            if let Some((op, ns)) = per {
                let _ = writeln!(
                    s,
                    "| {} | {} | every program, per {op} | | {ns:.0} |",
                    config.label(),
                    w.metrics()[0].0,
                );
            }
        }
    }

    fn learning_md(&self, s: &mut String) {
        let Some(l) = &self.learning else {
            return;
        };
        let _ = writeln!(
            s,
            "\n## Name learning\n\nOne run under `{}` ({} deny and 2 allow domain rules): a client in the enforced cgroup asks the bench's responder for a fresh name per query (16 in flight); every answer is matched to its query, parsed, bound and reported to the daemon.\n\n| answers | answers/s | learned by the kernel | daemon CPU per answer |\n|--:|--:|--:|--:|\n| {} | {} | {} | {:.2} µs |\n",
            Config::EnforceCnDomains.label(),
            dns::DENY_RULES,
            num(l.answers as f64),
            num(l.rate),
            num(l.learned as f64),
            l.daemon_us_per_answer
        );
        let _ = writeln!(s, "| program | calls | ns per call |\n|---|--:|--:|");
        for c in &l.kernel {
            let _ = writeln!(
                s,
                "| `{}` | {} | {:.0} |",
                c.program,
                num(c.calls as f64),
                c.ns_per_call
            );
        }
    }

    fn pairs_md(&self, s: &mut String) {
        if self.pairs.is_empty() {
            return;
        }
        let mut metrics: Vec<(&str, bool)> = Vec::new();
        for p in &self.pairs {
            if !metrics.iter().any(|m| m.0 == p.metric) {
                metrics.push((p.metric, p.higher_better));
            }
        }
        let _ = writeln!(s, "\n## Throughput and latency\n");
        for (m, higher) in metrics {
            let better = if higher { "higher" } else { "lower" };
            let _ = writeln!(
                s,
                "### {m} ({better} is better)\n\n| configuration | baseline (median) | configuration (median) | ratio, median of pairs | pair ratios min – max | pairs |\n|---|--:|--:|--:|--:|--:|"
            );
            for p in self.pairs.iter().filter(|p| p.metric == m) {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | **{:.3}×** | {:.3} – {:.3} | {} |",
                    p.config.label(),
                    num(p.base),
                    num(p.value),
                    p.ratio,
                    p.spread.0,
                    p.spread.1,
                    p.pairs
                );
            }
            let _ = writeln!(s);
        }
        if !self.daemon_rss.is_empty() {
            let _ = write!(s, "Daemon peak RSS during these runs:");
            for (c, kib) in &self.daemon_rss {
                let _ = write!(s, " {} {};", c.label(), mib(*kib));
            }
            let _ = writeln!(s);
        }
    }

    fn denied_md(&self, s: &mut String) {
        if self.denied.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "\n## A connect() to a denied destination\n\nBlocking `connect()` to 203.0.113.7 (denied in every set) with a {DENIED_TIMEOUT_MS} ms send timeout.\n\n| configuration | outcome | p50 | p99 | max |\n|---|---|--:|--:|--:|"
        );
        for d in &self.denied {
            let outcome = if d.eperm == d.count {
                format!("EPERM at once ({} of {})", d.eperm, d.count)
            } else if d.succeeded == d.count {
                "connects (not blocked)".to_owned()
            } else if d.timed_out > 0 {
                format!(
                    "hangs: SYN dropped, {} of {} still waiting after {DENIED_TIMEOUT_MS} ms",
                    d.timed_out, d.count
                )
            } else {
                format!(
                    "{} EPERM, {} connected, {} timed out of {}",
                    d.eperm, d.succeeded, d.timed_out, d.count
                )
            };
            let _ = writeln!(
                s,
                "| {} | {outcome} | {:.1} µs | {:.1} µs | {:.1} µs |",
                d.config.label(),
                d.p50_us,
                d.p99_us,
                d.max_us
            );
        }
    }

    fn loads_md(&self, s: &mut String) {
        if self.loads.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "\n## Policy compile + load\n\nollama-egress in-process with its own library: compile = parse the policy, expand the country \
             through the database, merge; load = write the prefixes into the kernel LPM tries \
             (`PolicyTables::apply`). Opening the databases happens once per daemon start. \
             nftables and ipset load the same prefixes with `nft -f` and `ipset restore` \
             (process start included).\n\n| set | prefixes | open geo databases | compile | load into kernel | **compile + load** | `nft -f` | `ipset restore` |\n|---|--:|--:|--:|--:|--:|--:|--:|"
        );
        for l in &self.loads {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | **{}** | {} | {} |",
                l.set,
                num(l.prefixes as f64),
                ms(l.geo_open),
                ms(l.compile),
                ms(l.load),
                ms(l.total()),
                ms(l.nft),
                ms(l.ipset)
            );
        }
        for l in &self.loads {
            for n in &l.notes {
                let _ = writeln!(s, "\n- {}: {n}", l.set);
            }
        }
    }

    fn events_md(&self, s: &mut String) {
        let Some(e) = &self.events else { return };
        let _ = writeln!(
            s,
            "\n## Event pipeline\n\nA fresh daemon (CN policy, both geo databases) per burst; one connect() per \
             decision from the client cgroup, paced at the target rate by two client threads (max = \
             unpaced). *Logged* counts the worker's lines in the event log once it stops \
             growing; *lost* is the kernel's counter of events the ring buffer could not take; \
             *unaccounted* = decisions − logged − lost. *Daemon CPU* is its threads' time on a CPU \
             (`schedstat`, nanoseconds) from the burst's start until its log stops growing.\n\n| series | target/s | achieved/s | decisions | logged | lost (kernel) | unaccounted | daemon CPU | CPU per event | drain after burst |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
        );
        for st in &e.steps {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {:.0} % | {:.1} µs | {:.2} s |",
                st.series.label(),
                if st.target == 0 {
                    "max".to_owned()
                } else {
                    num(st.target as f64)
                },
                num(st.rate),
                num(st.attempts as f64),
                num(st.logged as f64),
                st.lost
                    .map_or("?".to_owned(), |l| num(l as f64).replace(".0", "")),
                st.unaccounted(),
                st.cpu_pct,
                st.cpu_us_per_event,
                st.drain.as_secs_f64()
            );
        }
        let _ = writeln!(
            s,
            "\nDaemon memory ({}): idle RSS {}, peak RSS (VmHWM) over all bursts {}; idle CPU {}.",
            Series::MonitorAllowed
                .label()
                .split(',')
                .next()
                .unwrap_or("monitor"),
            e.rss_idle_kib.map_or("–".into(), mib),
            e.rss_peak_kib.map_or("–".into(), mib),
            e.idle_cpu_pct
                .map_or("–".into(), |c| format!("{c:.1} % of a core"))
        );
    }
}
