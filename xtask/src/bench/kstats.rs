//! Kernel cost per program call from `bpf_stats`: the kernel's run-time and run-count of each
//! program the daemon pinned (`<pin-dir>/progs/<name>`), read with `bpftool` before and after
//! a workload, while `kernel.bpf_stats_enabled` is on (only then: the statistics read the clock
//! around every program call, which the throughput pairs must not pay).

use std::{collections::BTreeMap, fs, path::Path, process::Command};

use anyhow::Context as _;

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `kernel.bpf_stats_enabled` switched on; the previous value is restored on drop.
pub struct StatsOn {
    previous: String,
}

impl StatsOn {
    /// Turns the statistics on.
    pub fn enable() -> anyhow::Result<Self> {
        let previous = fs::read_to_string(SYSCTL).with_context(|| format!("reading {SYSCTL}"))?;
        fs::write(SYSCTL, "1").with_context(|| format!("writing {SYSCTL}"))?;
        Ok(Self {
            previous: previous.trim().to_owned(),
        })
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        if let Err(e) = fs::write(SYSCTL, &self.previous) {
            eprintln!("warning: restoring {SYSCTL}: {e}");
        }
    }
}

/// Run time and count of one program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Run {
    /// Nanoseconds spent in the program, in total.
    pub time_ns: u64,
    /// Calls, in total.
    pub count: u64,
}

/// The daemon's programs (from its state file, so in monitor mode too, where nothing is
/// pinned), by name.
pub fn snapshot(log_dir: &Path) -> anyhow::Result<BTreeMap<String, Run>> {
    let path = log_dir.join("state.json");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let state: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let programs = state["programs"]
        .as_array()
        .with_context(|| format!("no programs in {}", path.display()))?;
    let mut out = BTreeMap::new();
    for p in programs {
        let (Some(name), Some(id)) = (p[0].as_str(), p[1].as_u64()) else {
            anyhow::bail!("a program in {} is not [name, id]: {p}", path.display());
        };
        let name = name.to_owned();
        let text = super::sys::run(
            Command::new("bpftool")
                .args(["-j", "prog", "show", "id"])
                .arg(id.to_string()),
        )?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("bpftool output for program {name} ({id}): {text}"))?;
        let run = Run {
            time_ns: v["run_time_ns"].as_u64().unwrap_or(0),
            count: v["run_cnt"].as_u64().unwrap_or(0),
        };
        out.insert(name, run);
    }
    Ok(out)
}

/// One program's cost over a workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Cost {
    /// The program.
    pub program: String,
    /// Calls during the workload.
    pub calls: u64,
    /// Nanoseconds per call.
    pub ns_per_call: f64,
}

/// The cost per call of the programs of the daemon whose state is in `log_dir` over `run`,
/// with the statistics on for that run only.
pub fn over(log_dir: &Path, run: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<Vec<Cost>> {
    let _stats = StatsOn::enable()?;
    let before = snapshot(log_dir)?;
    run()?;
    let after = snapshot(log_dir)?;
    Ok(delta(&before, &after))
}

/// The programs that ran between two snapshots, with their cost per call.
pub fn delta(before: &BTreeMap<String, Run>, after: &BTreeMap<String, Run>) -> Vec<Cost> {
    after
        .iter()
        .filter_map(|(name, a)| {
            let b = before.get(name).copied().unwrap_or_default();
            let calls = a.count.saturating_sub(b.count);
            (calls > 0).then(|| Cost {
                program: name.clone(),
                calls,
                ns_per_call: a.time_ns.saturating_sub(b.time_ns) as f64 / calls as f64,
            })
        })
        .collect()
}

/// All the programs' time over `costs` divided by the calls of `per` (the program that runs
/// once per operation of the workload: `connect4` per connection, `sendmsg4` per datagram):
/// what one operation costs in the kernel, every program it wakes included. `None` when `per`
/// did not run.
pub fn per_operation(costs: &[Cost], per: &str) -> Option<f64> {
    let ops = costs.iter().find(|c| c.program == per)?.calls;
    let total: f64 = costs.iter().map(|c| c.calls as f64 * c.ns_per_call).sum();
    Some(total / ops as f64)
}

#[cfg(test)]
mod tests;
