//! A real systemd for the tests: PID 1 of a new PID, mount, UTS, IPC and cgroup namespace,
//! chrooted into an [`Overlay`] of the Debian root, in a cgroup of its own under the host's
//! cgroup v2 hierarchy. Inside: a fresh read-only sysfs (so udev and sysctl stay off the host),
//! the namespace's own cgroup2 mount, a private bpffs (pins die with the namespace), a tmpfs
//! `/run`. Units that would touch the host (gettys on its consoles, TRIM, timers that fetch) are
//! masked. Dropped: PID 1 is killed (the kernel kills the rest of the namespace), the cgroups
//! systemd made are removed, deepest first.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::{TestCgroup, debian::Overlay};

/// Units masked before boot: they would act on the host (consoles, file systems, kernel
/// settings, modules) or reach the network on a timer.
const MASKED: &[&str] = &[
    "getty@.service",
    "serial-getty@.service",
    "console-getty.service",
    "systemd-udevd.service",
    "systemd-udev-trigger.service",
    "systemd-udev-settle.service",
    "systemd-udevd-control.socket",
    "systemd-udevd-kernel.socket",
    "systemd-sysctl.service",
    "systemd-modules-load.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "fstrim.timer",
    "e2scrub_all.timer",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
];

/// A booted systemd; killed and its cgroups removed on drop.
pub struct Systemd {
    /// The `unshare` process (its child is PID 1 of the namespace).
    unshare: Option<Child>,
    /// Host pid of the namespace's PID 1.
    pub pid1: u32,
    /// The host cgroup the namespace's hierarchy lives in.
    cgroup: Option<TestCgroup>,
    /// The root it runs in.
    root: PathBuf,
}

impl Systemd {
    /// Masks the units of [`MASKED`] in `ov` and boots systemd there; returns once
    /// `systemctl is-system-running` says `running` or `degraded`.
    pub fn boot(ov: &Overlay) -> Self {
        let root = ov.root();
        let etc = root.join("etc/systemd/system");
        fs::create_dir_all(&etc).expect("mkdir /etc/systemd/system");
        for unit in MASKED {
            let link = etc.join(unit);
            let _ = fs::remove_file(&link);
            symlink("/dev/null", &link).unwrap_or_else(|e| panic!("masking {unit}: {e}"));
        }
        let cgroup = TestCgroup::new("oe-systemd");
        let r = root.display();
        // Inside the new namespaces (sh is their PID 1 until it execs systemd).
        let inside = format!(
            "set -e; mount --make-rprivate /; \
             mount -t proc proc {r}/proc; \
             mount -t sysfs -o ro sysfs {r}/sys; \
             mount -t cgroup2 cgroup2 {r}/sys/fs/cgroup; \
             mount -t bpf bpf {r}/sys/fs/bpf; \
             mount -t tmpfs -o mode=0755 tmpfs {r}/run; \
             mount -t tmpfs -o mode=1777 tmpfs {r}/tmp; \
             mount --bind {r}/dev/null {r}/dev/console; \
             exec chroot {r} /usr/bin/env -i container=other /lib/systemd/systemd --system"
        );
        let outer = format!(
            "echo $$ > {}/cgroup.procs && exec unshare --pid --fork --mount --uts --ipc --cgroup sh -c '{inside}'",
            cgroup.path.display()
        );
        let unshare = Command::new("sh")
            .args(["-c", &outer])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn unshare (util-linux)");
        let mut sd = Self {
            pid1: 0,
            unshare: Some(unshare),
            cgroup: Some(cgroup),
            root,
        };
        sd.pid1 = sd.wait_pid1();
        sd.wait_running();
        sd
    }

    /// The child of `unshare`: PID 1 of the namespace, once it runs systemd.
    fn wait_pid1(&mut self) -> u32 {
        let unshare = self.unshare.as_mut().expect("unshare").id();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let children = fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
                .unwrap_or_default();
            if let Some(pid) = children
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
                && fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e.ends_with("systemd"))
            {
                return pid;
            }
            if let Some(Ok(Some(st))) = self.unshare.as_mut().map(Child::try_wait) {
                panic!("unshare/chroot of systemd exited ({st}) before booting");
            }
            assert!(Instant::now() < deadline, "systemd did not start in 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_running(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = self.sh("systemctl is-system-running");
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if state == "running" || state == "degraded" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "systemd not up after 90 s (state {state:?}); jobs:\n{}",
                String::from_utf8_lossy(&self.sh("systemctl list-jobs --no-pager").stdout)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `sh -c SCRIPT` inside the namespaces and root of systemd.
    pub fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .args(["--target", &self.pid1.to_string()])
            .args([
                "--mount", "--pid", "--uts", "--ipc", "--cgroup", "--root", "--wd",
            ])
            .args(["/bin/sh", "-c", script])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .output()
            .expect("nsenter (util-linux)")
    }

    /// Like [`Systemd::sh`], panicking with the output (and the journal) unless it succeeds;
    /// returns stdout.
    pub fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        if !out.status.success() {
            panic!(
                "`{script}` failed under systemd ({}):\nstdout: {}\nstderr: {}\njournal:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.journal()
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The last lines of the journal of ollama-egress and ollama.
    pub fn journal(&self) -> String {
        let out = self.sh(
            "journalctl --no-pager -n 80 -o short-monotonic -u ollama-egress -u ollama -u ollama.slice",
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The host's pid of the process `ns_pid` of the namespace (the kernel's events carry the
    /// host's pids).
    pub fn host_pid(&self, ns_pid: u32) -> Option<u32> {
        let ns = fs::read_link(format!("/proc/{}/ns/pid", self.pid1)).ok()?;
        fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let status = fs::read_to_string(e.path().join("status")).ok()?;
            let nspid = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
            let inner: u32 = nspid.split_whitespace().last()?.parse().ok()?;
            (inner == ns_pid && fs::read_link(e.path().join("ns/pid")).ok()? == ns).then_some(pid)
        })
    }

    /// A path of the root systemd runs in, as the host sees it.
    pub fn path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        if self.pid1 != 0 {
            // PID 1 ignores SIGTERM; SIGKILL of it kills the whole namespace.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid1 as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(mut child) = self.unshare.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(cg) = self.cgroup.take() {
            remove_below(&cg.path);
            drop(cg);
        }
    }
}

/// Removes every cgroup below `dir`, deepest first, waiting for their processes to be gone.
fn remove_below(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let sub = e.path();
            remove_below(&sub);
            let deadline = Instant::now() + Duration::from_secs(5);
            while fs::remove_dir(&sub).is_err() && sub.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if sub.exists() {
                eprintln!("warning: could not remove cgroup {}", sub.display());
            }
        }
    }
}
