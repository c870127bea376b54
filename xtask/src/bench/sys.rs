//! What the bench makes on the machine, each behind a guard that removes it again on drop (also
//! on an error, a panic or Ctrl-C): cgroups, the network namespace, the server process, a
//! running daemon with its pins. Plus the SIGINT/SIGTERM flag and small process helpers.

use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::daemon::detach;

/// Prefix of every name the bench gives a cgroup, namespace or pin directory; followed by the
/// pid of the bench, so a later run can tell leftovers of a killed run from a live one.
pub const NAME_PREFIX: &str = "oe-bench-";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns SIGINT and SIGTERM into a flag the bench checks between runs, so the guards get to
/// clean up instead of the process dying on the spot.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Whether Ctrl-C (or SIGTERM) arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails when Ctrl-C arrived, so `?` unwinds through the guards.
pub fn check_interrupted() -> anyhow::Result<()> {
    if interrupted() {
        bail!("interrupted: cleaning up");
    }
    Ok(())
}

/// Sleeps, waking early on Ctrl-C.
pub fn sleep(d: Duration) {
    let end = Instant::now() + d;
    while !interrupted() {
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Runs `cmd`, failing with its stderr when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The command's output, or an empty string when it cannot run (for the report's details).
pub fn output_or_empty(prog: &str, args: &[&str]) -> String {
    Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// `true` when the process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The cgroup v2 mount point, from /proc/self/mountinfo (`/sys/fs/cgroup/unified` in hybrid
/// mode).
pub fn cgroup2_mount() -> anyhow::Result<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo")?;
    text.lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            if right.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            Some(PathBuf::from(left.split_whitespace().nth(4)?))
        })
        .context("no cgroup v2 mount in /proc/self/mountinfo")
}

/// A cgroup v2 directory directly under the root, removed on drop.
pub struct Cgroup {
    /// Its path.
    pub path: PathBuf,
    /// Its name (the path relative to the cgroup v2 root).
    pub name: String,
}

impl Cgroup {
    /// Makes `<cgroup2 root>/<name>`.
    pub fn new(name: String) -> anyhow::Result<Self> {
        let path = cgroup2_mount()?.join(&name);
        fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        Ok(Self { path, name })
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        remove_cgroup(&self.path);
    }
}

fn remove_cgroup(path: &Path) {
    // The bench's workers in it are bounded and have exited or are exiting.
    for _ in 0..100 {
        match fs::remove_dir(path) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    eprintln!("warning: could not remove cgroup {}", path.display());
}

/// A network namespace with only `lo` (up, with `addrs`), deleted on drop. Deleting it also
/// removes every nftables table, iptables rule and ipset made inside it.
pub struct NetNs {
    /// Its `ip netns` name.
    pub name: String,
}

impl NetNs {
    /// Creates the namespace.
    pub fn new(name: String, addrs: &[&str]) -> anyhow::Result<Self> {
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self { name };
        run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]))?;
        for a in addrs {
            run(Command::new("ip").args(["-n", &ns.name, "addr", "add", a, "dev", "lo"]))?;
        }
        Ok(ns)
    }

    /// `ip netns exec <ns> sh -c SCRIPT`, with cgroup v2 mounted at /sys/fs/cgroup inside (its
    /// own mount namespace), where nftables' `socket cgroupv2` looks; timed.
    pub fn sh(&self, script: &str) -> anyhow::Result<Duration> {
        let full = format!(
            "mountpoint -q /sys/fs/cgroup || mount -t cgroup2 none /sys/fs/cgroup || exit 1\n{script}"
        );
        let t = Instant::now();
        run(Command::new("ip").args(["netns", "exec", &self.name, "sh", "-c", &full]))?;
        Ok(t.elapsed())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A child process that is killed (SIGTERM, then SIGKILL) and reaped on drop. Its stdin is a
/// pipe: the bench's servers exit by themselves when it closes, so they never outlive the
/// bench, even one killed with SIGKILL.
pub struct ChildGuard {
    child: Child,
    _stdin: Option<ChildStdin>,
}

impl ChildGuard {
    /// Spawns `cmd` with a stdin pipe.
    pub fn spawn(cmd: &mut Command) -> anyhow::Result<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {cmd:?}"))?;
        let stdin = child.stdin.take();
        Ok(Self {
            child,
            _stdin: stdin,
        })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; returns whether it exited successfully.
    pub fn stop(&mut self, grace: Duration) -> bool {
        if let Ok(Some(st)) = self.child.try_wait() {
            return st.success();
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signalling our own child, which has not been reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(15));
    }
}

/// Removes what a bench that was killed (SIGKILL, power loss) left behind: namespaces, cgroups,
/// scratch and pin directories named `oe-bench-<pid>-…` whose pid no longer runs.
pub fn remove_leftovers(bin: &Path) {
    let dead = |name: &str| {
        name.strip_prefix(NAME_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    };
    let names = |dir: &Path| -> Vec<String> {
        fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| dead(n))
                    .collect()
            })
            .unwrap_or_default()
    };
    for pin in names(Path::new("/sys/fs/bpf")) {
        eprintln!("bench: removing leftover pins /sys/fs/bpf/{pin}");
        detach(bin, &Path::new("/sys/fs/bpf").join(pin));
    }
    for ns in names(Path::new("/run/netns")) {
        eprintln!("bench: removing leftover network namespace {ns}");
        drop(NetNs { name: ns });
    }
    let tmp = std::env::temp_dir();
    for dir in names(&tmp) {
        let _ = fs::remove_dir_all(tmp.join(dir));
    }
    if let Ok(root) = cgroup2_mount() {
        for cg in names(&root) {
            eprintln!("bench: removing leftover cgroup {cg}");
            remove_cgroup(&root.join(cg));
        }
    }
}

/// Installs the Debian packages the comparison needs when they are missing.
pub fn install_packages(pkgs: &[&str]) -> anyhow::Result<()> {
    let installed = |p: &str| {
        Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", p])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
    };
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("bench: installing {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(())
}

/// VmRSS and VmHWM of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time a process used so far, as the kernel counts it twice: per thread in nanoseconds
/// (`/proc/PID/task/TID/schedstat`, the time on a CPU) and for the whole process in clock ticks
/// (`/proc/PID/stat` utime + stime, 10 ms each, which also keeps what exited threads used).
#[derive(Clone, Debug, Default)]
pub struct CpuSample {
    ticks: Duration,
    /// Nanoseconds on a CPU by thread id.
    threads: BTreeMap<u32, u64>,
}

impl CpuSample {
    /// The CPU used from `self` to `later`: by the threads' nanoseconds when every thread of
    /// `self` is still there (a thread new in `later` counts from 0), else by the ticks (a
    /// thread that exited took its nanoseconds with it). The ticks alone are too coarse for
    /// bursts of half a second: ±10 ms of 50–150 ms.
    pub fn until(&self, later: &CpuSample) -> Duration {
        if self.threads.is_empty() || self.threads.keys().any(|t| !later.threads.contains_key(t)) {
            return later.ticks.saturating_sub(self.ticks);
        }
        let ns = later
            .threads
            .iter()
            .map(|(tid, &ns)| ns.saturating_sub(self.threads.get(tid).copied().unwrap_or(0)))
            .sum();
        Duration::from_nanos(ns)
    }
}

/// [`CpuSample`] of process `pid` now; `None` when it is gone.
pub fn cpu_time(pid: u32) -> Option<CpuSample> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised comm; utime and stime are fields 14 and 15.
    let rest = text.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|&h| h > 0)?;
    let mut threads = BTreeMap::new();
    for entry in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        // A thread that exits between the listing and the read is left out, and then found
        // missing by `until`, which falls back to the ticks.
        let Some(ns) = fs::read_to_string(entry.path().join("schedstat"))
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse::<u64>().ok())
        else {
            continue;
        };
        threads.insert(tid, ns);
    }
    Some(CpuSample {
        ticks: Duration::from_micros(ticks * 1_000_000 / hz),
        threads,
    })
}

/// Prints progress without a newline (flushed).
pub fn progress(text: &str) {
    eprint!("{text}");
    let _ = std::io::stderr().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ticks_ms: u64, threads: &[(u32, u64)]) -> CpuSample {
        CpuSample {
            ticks: Duration::from_millis(ticks_ms),
            threads: threads.iter().copied().collect(),
        }
    }

    #[test]
    fn cpu_is_counted_by_thread_nanoseconds_and_by_ticks_once_a_thread_exited() {
        let before = sample(100, &[(1, 5_000_000), (2, 7_000_000)]);
        // Both threads still there, one new: the nanoseconds, the new thread from 0.
        let later = sample(120, &[(1, 6_500_000), (2, 7_250_000), (3, 300_000)]);
        assert_eq!(before.until(&later), Duration::from_nanos(2_050_000));
        // Thread 2 exited: its nanoseconds are gone, so the ticks answer.
        let exited = sample(130, &[(1, 6_500_000)]);
        assert_eq!(before.until(&exited), Duration::from_millis(30));
        // No thread could be read before: the ticks.
        assert_eq!(sample(100, &[]).until(&later), Duration::from_millis(20));
    }

    #[test]
    fn this_process_has_a_thread_sample() {
        let now = cpu_time(std::process::id()).expect("own /proc entry");
        assert!(
            now.threads.contains_key(&std::process::id()),
            "the main thread's schedstat was not read: {now:?}"
        );
    }
}
