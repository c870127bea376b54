//! The capabilities the daemon needs, checked before anything is touched.

use std::fs;

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The missing capabilities, by name, for loading and attaching the programs and moving
/// processes between cgroups. Empty when everything needed is there.
pub fn missing_capabilities() -> Vec<&'static str> {
    let eff = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_cap_eff(&s))
        .unwrap_or(0);
    missing_from(eff)
}

/// Missing capabilities in an effective set.
pub fn missing_from(eff: u64) -> Vec<&'static str> {
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) && has(CAP_NET_ADMIN) {
        // CAP_SYS_ADMIN covers BPF and PERFMON on every kernel that has them.
        return Vec::new();
    }
    let mut missing = Vec::new();
    for (cap, name) in [
        (CAP_BPF, "CAP_BPF"),
        (CAP_PERFMON, "CAP_PERFMON"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
    ] {
        // CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON, not for CAP_NET_ADMIN.
        let covered = has(cap) || (cap != CAP_NET_ADMIN && has(CAP_SYS_ADMIN));
        if !covered {
            missing.push(name);
        }
    }
    missing
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

#[cfg(test)]
mod tests;
