//! The checks: pure functions of [`Facts`], each returning its findings.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use super::{
    Finding, Severity,
    facts::{Facts, HOOKS, ProcessFacts, Systemd},
};
use crate::model::Action;

/// Geo databases older than this are stale, seconds (30 days).
pub const GEO_MAX_AGE_S: u64 = 30 * 24 * 3600;

/// Every check, in the order of the checklist.
pub fn all(f: &Facts) -> Vec<Finding> {
    let checks: [fn(&Facts) -> Vec<Finding>; 10] = [
        listeners,
        inbound,
        ollama_host,
        ollama_origins,
        cloud,
        root,
        systemd,
        outbound_default,
        enforcement,
        geo,
    ];
    checks.iter().flat_map(|c| c(f)).collect()
}

/// Whether `ip` (IPv4-mapped IPv6 as IPv4) is a loopback address.
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
    }
}

fn is_unspecified(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_unspecified(),
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_unspecified(), |v4| v4.is_unspecified()),
    }
}

fn pids(pids: &[u32]) -> String {
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    format!(
        "pid{} {}",
        if pids.len() == 1 { "" } else { "s" },
        list.join(", ")
    )
}

const BIND_LOOPBACK: &str = "bind Ollama to loopback: OLLAMA_HOST=127.0.0.1:11434 (for a unit, `Environment=OLLAMA_HOST=127.0.0.1:11434` in a drop-in); if others must reach it, add an [inbound] policy allowing only their networks";

/// Listening on all addresses (high) or on another non-loopback address (medium).
pub fn listeners(f: &Facts) -> Vec<Finding> {
    if f.listeners.is_empty() {
        return vec![Finding::new(
            "listen.none",
            Severity::Info,
            "the target's processes have no listening TCP socket",
            "nothing to do; audit again while Ollama serves",
        )];
    }
    let mut out = Vec::new();
    for l in &f.listeners {
        let ip = l.addr.ip();
        if is_unspecified(ip) {
            out.push(Finding::new(
                "listen.all-addresses",
                Severity::High,
                format!(
                    "listening on {} ({}): every network this host is on can reach it",
                    l.addr,
                    pids(&l.pids)
                ),
                BIND_LOOPBACK,
            ));
        } else if !is_loopback(ip) {
            out.push(Finding::new(
                "listen.non-loopback",
                Severity::Medium,
                format!("listening on {} ({})", l.addr, pids(&l.pids)),
                "make sure only the intended network reaches this address: bind to 127.0.0.1, or add an [inbound] policy",
            ));
        }
    }
    out
}

fn exposed(listeners: &[super::facts::Listener]) -> Vec<SocketAddr> {
    listeners
        .iter()
        .map(|l| l.addr)
        .filter(|a| !is_loopback(a.ip()))
        .collect()
}

/// No `[inbound]` section: medium when a listener is reachable from outside, low otherwise.
pub fn inbound(f: &Facts) -> Vec<Finding> {
    if f.policy.inbound {
        return Vec::new();
    }
    let open = exposed(&f.listeners);
    let fix = "add an [inbound] section to the policy (default = \"deny\", [inbound.allow] cidrs = [\"127.0.0.0/8\", \"::1/128\", your LAN]) so that the kernel drops other sources";
    let (severity, seen) = if open.is_empty() {
        (
            Severity::Low,
            format!(
                "the policy ({}) has no [inbound] section: nothing guards Ollama's port if it is ever bound to a public address",
                f.policy.origin
            ),
        )
    } else {
        let list: Vec<String> = open.iter().map(ToString::to_string).collect();
        (
            Severity::Medium,
            format!(
                "the policy ({}) has no [inbound] section: any source can connect to {}",
                f.policy.origin,
                list.join(", ")
            ),
        )
    };
    vec![Finding::new("inbound.none", severity, seen, fix)]
}

/// Processes grouped by the value of an environment variable (unset ones left out).
fn by_value<'a>(procs: &'a [ProcessFacts], var: &str) -> BTreeMap<&'a str, Vec<u32>> {
    let mut m: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for p in procs {
        if let Some(v) = p.env.get(var) {
            m.entry(v.as_str()).or_default().push(p.pid);
        }
    }
    m
}

/// The host part of an `OLLAMA_HOST` value as Ollama reads it (scheme and port dropped); an
/// empty host (`:11434`) listens on all addresses.
pub fn ollama_host_part(value: &str) -> &str {
    let v = value.trim();
    let hostport = v.split_once("://").map_or(v, |(_, rest)| rest);
    let hostport = hostport.split('/').next().unwrap_or("");
    if let Some(rest) = hostport.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match hostport.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address.
        Some((host, _)) if host.contains(':') => hostport,
        Some((host, _)) => host,
        None => hostport,
    }
}

/// `OLLAMA_HOST` set to all addresses (high) or another non-loopback host (medium).
pub fn ollama_host(f: &Facts) -> Vec<Finding> {
    let mut out = Vec::new();
    for (value, ps) in by_value(&f.processes, "OLLAMA_HOST") {
        let host = ollama_host_part(value);
        // Ollama's default when the value is empty is 127.0.0.1.
        if value.trim().is_empty() {
            continue;
        }
        let all = host.is_empty() || host.parse::<IpAddr>().is_ok_and(is_unspecified);
        let local =
            host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(is_loopback);
        if all {
            out.push(Finding::new(
                "env.ollama-host-all",
                Severity::High,
                format!(
                    "OLLAMA_HOST={value:?} ({}): Ollama listens on all addresses",
                    pids(&ps)
                ),
                BIND_LOOPBACK,
            ));
        } else if !local {
            out.push(Finding::new(
                "env.ollama-host-remote",
                Severity::Medium,
                format!(
                    "OLLAMA_HOST={value:?} ({}): Ollama listens on a non-loopback address",
                    pids(&ps)
                ),
                BIND_LOOPBACK,
            ));
        }
    }
    out
}

/// `OLLAMA_ORIGINS` with `*` (high: any web page may call the API) or another wildcard
/// (medium).
pub fn ollama_origins(f: &Facts) -> Vec<Finding> {
    let mut out = Vec::new();
    for (value, ps) in by_value(&f.processes, "OLLAMA_ORIGINS") {
        let origins: Vec<&str> = value.split(',').map(str::trim).collect();
        let fix = "list only the origins that need the API, e.g. OLLAMA_ORIGINS=http://localhost:3000 (or unset it)";
        if origins.contains(&"*") {
            out.push(Finding::new(
                "env.origins-any",
                Severity::High,
                format!(
                    "OLLAMA_ORIGINS={value:?} ({}): any web page a user opens may call Ollama's API",
                    pids(&ps)
                ),
                fix,
            ));
        } else if origins.iter().any(|o| o.contains('*')) {
            out.push(Finding::new(
                "env.origins-wildcard",
                Severity::Medium,
                format!("OLLAMA_ORIGINS={value:?} ({}): wildcard origins", pids(&ps)),
                fix,
            ));
        }
    }
    out
}

/// Whether `OLLAMA_NO_CLOUD`'s value turns cloud features off, as Ollama reads booleans: a
/// value Go's `ParseBool` reads as true, or one it cannot read at all; unset, empty or false
/// leaves them on.
pub fn no_cloud(value: Option<&str>) -> bool {
    match value.map(str::trim) {
        None | Some("") => false,
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => false,
        Some(_) => true,
    }
}

/// Cloud features on (`OLLAMA_NO_CLOUD` unset): ollama.com is contacted.
pub fn cloud(f: &Facts) -> Vec<Finding> {
    let on: Vec<u32> = f
        .processes
        .iter()
        .filter(|p| !no_cloud(p.env.get("OLLAMA_NO_CLOUD").map(String::as_str)))
        .map(|p| p.pid)
        .collect();
    if on.is_empty() {
        return Vec::new();
    }
    vec![Finding::new(
        "env.cloud-on",
        Severity::Medium,
        format!(
            "OLLAMA_NO_CLOUD is not set ({}): cloud features are on and ollama.com is contacted",
            pids(&on)
        ),
        "set OLLAMA_NO_CLOUD=1 unless cloud models are wanted (and deny ollama.com in the policy)",
    )]
}

/// Processes running as root.
pub fn root(f: &Facts) -> Vec<Finding> {
    let roots: Vec<&ProcessFacts> = f.processes.iter().filter(|p| p.uid == 0).collect();
    if roots.is_empty() {
        return Vec::new();
    }
    let ids: Vec<u32> = roots.iter().map(|p| p.pid).collect();
    vec![Finding::new(
        "process.root",
        Severity::High,
        format!(
            "{} run{} as root (uid 0)",
            pids(&ids),
            if ids.len() == 1 { "s" } else { "" }
        ),
        "run Ollama as its own user: `User=ollama` in the unit, `--user` for a container",
    )]
}

/// The unit's sandboxing properties: `(property, values that are good, severity, fix)`.
const SANDBOX: [(&str, &[&str], Severity, &str); 6] = [
    (
        "NoNewPrivileges",
        &["yes"],
        Severity::Medium,
        "NoNewPrivileges=yes",
    ),
    (
        "ProtectSystem",
        &["strict", "full"],
        Severity::Medium,
        "ProtectSystem=strict (with ReadWritePaths= for the models directory)",
    ),
    (
        "ProtectHome",
        &["yes", "read-only", "tmpfs"],
        Severity::Low,
        "ProtectHome=yes (or read-only)",
    ),
    ("PrivateTmp", &["yes"], Severity::Low, "PrivateTmp=yes"),
    (
        "PrivateDevices",
        &["yes"],
        Severity::Low,
        "PrivateDevices=yes (not with GPUs: list them with DeviceAllow= instead)",
    ),
    (
        "ProtectKernelTunables",
        &["yes"],
        Severity::Low,
        "ProtectKernelTunables=yes",
    ),
];

/// The properties `systemctl show` is asked for.
pub fn sandbox_properties() -> Vec<&'static str> {
    let mut v: Vec<&str> = SANDBOX.iter().map(|s| s.0).collect();
    v.extend(["User", "DynamicUser"]);
    v
}

/// The unit's systemd sandboxing; "systemd not running" is an info finding.
pub fn systemd(f: &Facts) -> Vec<Finding> {
    match &f.systemd {
        Systemd::NotRunning => vec![Finding::new(
            "systemd.not-running",
            Severity::Info,
            "systemd is not running here: no unit sandboxing to check",
            "nothing to do; where Ollama runs as a unit, audit there",
        )],
        Systemd::NotAUnit => Vec::new(),
        Systemd::Failed { unit, detail } => vec![Finding::new(
            "systemd.unreadable",
            Severity::Low,
            format!("`systemctl show {unit}` failed: {detail}"),
            format!("check the unit with `systemctl status {unit}`"),
        )],
        Systemd::Unit { unit, props } => SANDBOX
            .iter()
            .filter_map(|(prop, good, severity, fix)| {
                let value = props.get(*prop).map_or("", String::as_str);
                (!good.contains(&value)).then(|| {
                    let seen = if value.is_empty() { "unset" } else { value };
                    Finding::new(
                        "systemd.sandbox",
                        *severity,
                        format!("{unit}: {prop}={seen}"),
                        format!("in a drop-in (`systemctl edit {unit}`): {fix}"),
                    )
                })
            })
            .collect(),
    }
}

/// Outbound `default = "allow"`.
pub fn outbound_default(f: &Facts) -> Vec<Finding> {
    if f.policy.default != Action::Allow {
        return Vec::new();
    }
    vec![Finding::new(
        "policy.default-allow",
        Severity::Medium,
        format!(
            "the policy ({}) has default = \"allow\": every destination not denied is reachable",
            f.policy.origin
        ),
        "set default = \"deny\" and allow what Ollama needs (see what it connects to with `run --monitor` and `logs` first)",
    )]
}

/// Enforcement not pinned on the target's cgroup.
pub fn enforcement(f: &Facts) -> Vec<Finding> {
    let e = &f.enforcement;
    let fix = format!(
        "run `ollama-egress run --enforce` on this target (pins under {}, enforcement outlives the daemon)",
        e.pin_dir.display()
    );
    if let Some(err) = &e.error {
        return vec![Finding::new(
            "enforcement.unknown",
            Severity::Medium,
            format!("could not ask the kernel what is attached to the target: {err}"),
            fix,
        )];
    }
    if e.pinned.len() == HOOKS.len() {
        return Vec::new();
    }
    let seen = if e.attached.is_empty() {
        format!(
            "no egress program is attached to {}: nothing is enforced",
            f.cgroup.display()
        )
    } else if e.pinned.is_empty() {
        format!(
            "programs are attached to {} ({}) but no enforcement is pinned in {}: monitor mode: nothing is blocked",
            f.cgroup.display(),
            e.attached.join(", "),
            e.pin_dir.display()
        )
    } else {
        let missing: Vec<&str> = HOOKS
            .iter()
            .copied()
            .filter(|h| !e.pinned.contains(h))
            .collect();
        format!(
            "enforcement in {} is pinned on {} without {}",
            e.pin_dir.display(),
            f.cgroup.display(),
            missing.join(", ")
        )
    };
    vec![Finding::new(
        "enforcement.not-pinned",
        Severity::Medium,
        seen,
        fix,
    )]
}

/// Geo databases older than [`GEO_MAX_AGE_S`]: medium when the policy has country or ASN
/// rules, low otherwise.
pub fn geo(f: &Facts) -> Vec<Finding> {
    f.geo
        .iter()
        .filter(|db| f.now.saturating_sub(db.built) > GEO_MAX_AGE_S)
        .map(|db| {
            let days = f.now.saturating_sub(db.built) / 86_400;
            let (severity, why) = if f.policy.uses_geo {
                (
                    Severity::Medium,
                    "the policy's country and ASN rules use it",
                )
            } else {
                (Severity::Low, "events' country and ASN tags come from it")
            };
            Finding::new(
                "geo.stale",
                severity,
                format!(
                    "the {} database {} was built {days} days ago; {why}",
                    db.kind,
                    db.path.display()
                ),
                "run `ollama-egress geo update` (e.g. weekly from cron or a timer)",
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
