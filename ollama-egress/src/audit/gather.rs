//! Filling [`Facts`]: the target as `run` finds it, its processes and sockets from a `/proc`
//! tree, the policy, the geo databases, and what only the running system can say (systemd,
//! the kernel's attachments, the clock) through the [`Host`] seam.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    fs, io,
    path::{Path, PathBuf},
};

use super::{
    AuditError, checks,
    facts::{ENV_VARS, Enforcement, Facts, GeoDbFacts, HOOKS, Listener, ProcessFacts, Systemd},
    procnet,
};
use crate::{
    inputs,
    loader::{AttachPoint, PinLayout, attached_program_ids, cgroup_id},
    targeting::{self, TargetSpec},
};

/// What the audit needs to know from the command line.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    /// The target as given.
    pub target: TargetSpec,
    /// The container engine's API socket.
    pub engine_socket: Option<PathBuf>,
    /// The policy file (`None`: the default file, else the built-in policy).
    pub policy: Option<PathBuf>,
    /// The pin directory.
    pub pin_dir: PathBuf,
    /// Country database.
    pub geo_db: Option<PathBuf>,
    /// ASN database.
    pub asn_db: Option<PathBuf>,
}

/// What the gatherer asks of the running system besides `/proc`.
pub trait Host {
    /// Whether systemd is the init system.
    fn systemd_running(&self) -> bool;
    /// `systemctl show UNIT -p P1,P2,...`'s output, or why it failed.
    fn systemctl_show(&self, unit: &str, props: &[&str]) -> Result<String, String>;
    /// What the kernel has attached to `cgroup` and which pinned links of `pin_dir` are on it.
    fn enforcement(&self, cgroup: &Path, pin_dir: &Path) -> Enforcement;
    /// Now, seconds since the Unix epoch.
    fn now(&self) -> u64;
}

/// The real system.
pub struct SystemHost;

impl Host for SystemHost {
    fn systemd_running(&self) -> bool {
        // What sd_booted(3) checks.
        Path::new("/run/systemd/system").is_dir()
    }

    fn systemctl_show(&self, unit: &str, props: &[&str]) -> Result<String, String> {
        let out = std::process::Command::new("systemctl")
            .args(["show", unit, "-p", &props.join(",")])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("running systemctl: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn enforcement(&self, cgroup: &Path, pin_dir: &Path) -> Enforcement {
        let mut e = Enforcement {
            pin_dir: pin_dir.to_owned(),
            ..Enforcement::default()
        };
        let id = match cgroup_id(cgroup) {
            Ok(id) => id,
            Err(err) => {
                e.error = Some(format!("{}: {err}", cgroup.display()));
                return e;
            }
        };
        for point in AttachPoint::ALL {
            match attached_program_ids(cgroup, point) {
                Ok(ids) if !ids.is_empty() => e.attached.push(point.program_name()),
                Ok(_) => {}
                Err(err) => {
                    e.error = Some(format!("querying {}: {err}", cgroup.display()));
                    return e;
                }
            }
        }
        for (point, info) in PinLayout::new(pin_dir).links() {
            if info.is_ok_and(|i| i.cgroup_id == id) {
                e.pinned.push(point.program_name());
            }
        }
        e.attached.retain(|h| HOOKS.contains(h));
        e
    }

    fn now(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// Gathers the facts on this system.
pub fn gather(opts: &AuditOptions, host: &dyn Host) -> Result<Facts, AuditError> {
    let target_err = |e: &dyn std::fmt::Display| AuditError::Target(e.to_string());
    let mount = targeting::cgroup2_mount().map_err(|e| target_err(&e))?;
    let mut spec = opts.target.clone();
    let resolved =
        crate::daemon::resolve_target(&mut spec, opts.engine_socket.as_deref(), &mount, None)
            .map_err(|e| target_err(&e))?;
    let cgroup = resolved.cgroup;
    let target = resolved
        .container
        .as_ref()
        .map_or_else(|| spec.to_string(), |c| c.info.describe());
    let gatherer = Gatherer::new("/proc");
    let pids = match &spec {
        TargetSpec::Process(name) => gatherer.named(name),
        _ => cgroup_pids(&cgroup)?,
    };
    if pids.is_empty() {
        return Err(AuditError::NoProcess { target, cgroup });
    }
    let processes = gatherer.processes(&pids)?;
    let listeners = gatherer.listeners(&pids)?;
    let unit = unit_of(&spec, &cgroup);
    let systemd = systemd_facts(host, unit.as_deref());
    let policy = super::policy::read(opts.policy.as_deref())?;
    let geo = geo_facts(opts.geo_db.as_deref(), opts.asn_db.as_deref())?;
    Ok(Facts {
        target,
        enforcement: host.enforcement(&cgroup, &opts.pin_dir),
        cgroup,
        unit,
        processes,
        listeners,
        policy,
        systemd,
        geo,
        now: host.now(),
    })
}

/// The systemd unit a target is: `--unit`, or a cgroup named `*.service`.
pub fn unit_of(spec: &TargetSpec, cgroup: &Path) -> Option<String> {
    match spec {
        TargetSpec::Unit(u) if u.contains('.') => Some(u.clone()),
        TargetSpec::Unit(u) => Some(format!("{u}.service")),
        TargetSpec::Cgroup(_) => cgroup
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.ends_with(".service"))
            .map(str::to_owned),
        _ => None,
    }
}

fn systemd_facts(host: &dyn Host, unit: Option<&str>) -> Systemd {
    if !host.systemd_running() {
        return Systemd::NotRunning;
    }
    let Some(unit) = unit else {
        return Systemd::NotAUnit;
    };
    match host.systemctl_show(unit, &checks::sandbox_properties()) {
        Ok(text) => Systemd::Unit {
            unit: unit.to_owned(),
            props: parse_show(&text),
        },
        Err(detail) => Systemd::Failed {
            unit: unit.to_owned(),
            detail,
        },
    }
}

/// `systemctl show`'s `Key=Value` lines.
pub fn parse_show(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn geo_facts(country: Option<&Path>, asn: Option<&Path>) -> Result<Vec<GeoDbFacts>, AuditError> {
    let (country, asn) = inputs::geo_paths(country, asn);
    let Some(db) = inputs::open_geo(country.as_deref(), asn.as_deref())? else {
        return Ok(Vec::new());
    };
    let infos = [("country", db.country_info()), ("asn", db.asn_info())];
    Ok(infos
        .into_iter()
        .filter_map(|(kind, info)| {
            info.map(|i| GeoDbFacts {
                kind,
                path: i.path,
                built: i.build_epoch,
            })
        })
        .collect())
}

/// The processes of a cgroup and of the cgroups below it.
fn cgroup_pids(cgroup: &Path) -> Result<Vec<u32>, AuditError> {
    let mut pids = BTreeSet::new();
    let mut stack = vec![cgroup.to_owned()];
    while let Some(dir) = stack.pop() {
        let found = targeting::processes_in(&dir).map_err(|e| AuditError::Target(e.to_string()))?;
        pids.extend(found);
        if let Ok(entries) = fs::read_dir(&dir) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    Ok(pids.into_iter().collect())
}

/// Reads processes and their sockets from a `/proc` tree (the real one, or a fixture).
pub struct Gatherer {
    proc_root: PathBuf,
}

/// Whether an error means the process is gone (it exited while being read).
fn gone(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound) || e.raw_os_error() == Some(libc::ESRCH)
}

impl Gatherer {
    /// A gatherer over the `/proc` tree at `proc_root`.
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        Self {
            proc_root: proc_root.into(),
        }
    }

    fn path(&self, pid: u32, rel: &str) -> PathBuf {
        self.proc_root.join(pid.to_string()).join(rel)
    }

    /// Processes named `name` and their descendants.
    pub fn named(&self, name: &str) -> Vec<u32> {
        targeting::targets(
            &targeting::all_processes(&self.proc_root),
            name,
            &HashSet::new(),
        )
    }

    /// Reads a file of a process; `None` when the process is gone.
    fn read(&self, pid: u32, rel: &str) -> Result<Option<Vec<u8>>, AuditError> {
        let path = self.path(pid, rel);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if gone(&e) => Ok(None),
            Err(source) => Err(AuditError::Proc { path, source }),
        }
    }

    /// Name, effective uid and the audited environment variables of each process still
    /// running.
    pub fn processes(&self, pids: &[u32]) -> Result<Vec<ProcessFacts>, AuditError> {
        let mut out = Vec::new();
        for &pid in pids {
            let (Some(status), Some(environ)) =
                (self.read(pid, "status")?, self.read(pid, "environ")?)
            else {
                continue;
            };
            let status = String::from_utf8_lossy(&status);
            let Some(uid) = procnet::effective_uid(&status) else {
                continue;
            };
            let comm = self.read(pid, "comm")?.unwrap_or_default();
            out.push(ProcessFacts {
                pid,
                comm: String::from_utf8_lossy(&comm).trim_end().to_owned(),
                uid,
                env: procnet::environ(&environ, &ENV_VARS),
            });
        }
        Ok(out)
    }

    /// Socket inodes of a process (from its `fd/` links); `None` when it is gone.
    pub fn socket_inodes(&self, pid: u32) -> Result<Option<Vec<u64>>, AuditError> {
        let dir = self.path(pid, "fd");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if gone(&e) => return Ok(None),
            Err(source) => return Err(AuditError::Proc { path: dir, source }),
        };
        Ok(Some(
            entries
                .flatten()
                .filter_map(|e| fs::read_link(e.path()).ok())
                .filter_map(|t| procnet::socket_inode(&t.to_string_lossy()))
                .collect(),
        ))
    }

    /// The listening TCP sockets the processes hold: their socket inodes joined with
    /// `net/tcp` and `net/tcp6` of each network namespace they are in (read through one
    /// process of it).
    pub fn listeners(&self, pids: &[u32]) -> Result<Vec<Listener>, AuditError> {
        // Network namespace → a pid in it; socket inode → the pids holding it.
        let mut namespaces: BTreeMap<String, u32> = BTreeMap::new();
        let mut sockets: HashMap<u64, Vec<u32>> = HashMap::new();
        for &pid in pids {
            let path = self.path(pid, "ns/net");
            let ns = match fs::read_link(&path) {
                Ok(l) => l.to_string_lossy().into_owned(),
                Err(e) if gone(&e) => continue,
                Err(source) => return Err(AuditError::Proc { path, source }),
            };
            let Some(inodes) = self.socket_inodes(pid)? else {
                continue;
            };
            namespaces.entry(ns).or_insert(pid);
            for inode in inodes {
                sockets.entry(inode).or_default().push(pid);
            }
        }
        let mut out = Vec::new();
        for via in namespaces.values() {
            for table in ["net/tcp", "net/tcp6"] {
                let Some(text) = self.read(*via, table)? else {
                    continue;
                };
                for row in procnet::parse_tcp(&String::from_utf8_lossy(&text)) {
                    if let (true, Some(holders)) = (row.listening(), sockets.get(&row.inode)) {
                        out.push(Listener {
                            addr: row.local,
                            inode: row.inode,
                            pids: holders.clone(),
                        });
                    }
                }
            }
        }
        out.sort_by_key(|l| (l.inode, l.addr));
        out.dedup_by_key(|l| l.inode);
        out.sort_by_key(|l| (l.addr, l.inode));
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
