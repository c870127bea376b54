//! Hardening of the daemon against its own environment: planted pin and log directories,
//! FIFOs and devices where files belong, a second daemon on the same pins, a policy file caught
//! half-written, enforcement without a valid policy slot, rule names across restarts, and a
//! closed stderr.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::unix::{
        fs::{MetadataExt as _, PermissionsExt as _},
        process::CommandExt as _,
    },
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use ollama_egress_tests::{
    Scenario, ScenarioSpec, TestCgroup, daemon_bin, probe, require_root, unique, with,
};

const ADDRS: &[&str] = &["203.0.113.7/32", "192.0.2.1/32"];
const LISTEN: &[&str] = &["203.0.113.7:8080", "192.0.2.1:8080"];
const POLICY: &str = "default = \"allow\"\n[deny]\ncidrs = [\"203.0.113.0/24\"]\n";
const NOBODY: u32 = 65534;

/// A daemon started by a test that expects it to fail (or wants to control its pipes); killed
/// on drop.
struct Spawned {
    child: Option<Child>,
    stderr: PathBuf,
}

impl Spawned {
    fn start(args: &[&str], log_dir: &Path, pin_dir: &Path, stderr: &Path) -> Self {
        Self::start_cmd(command(args, log_dir, pin_dir, stderr), stderr)
    }

    fn start_cmd(mut cmd: Command, stderr: &Path) -> Self {
        let child = cmd.spawn().expect("spawn ollama-egress");
        Self {
            child: Some(child),
            stderr: stderr.to_owned(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits up to `timeout` for the exit.
    fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                self.child = None;
                return Some(st);
            }
            thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Waits until the daemon's state file names it.
    fn wait_ready(&mut self, log_dir: &Path) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = ollama_egress::daemon::DaemonState::read(log_dir)
                && st.pid == self.pid()
            {
                return;
            }
            if let Some(st) = self.wait(Duration::from_millis(1)) {
                panic!("exited with {st} before ready:\n{}", self.stderr_text());
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("not ready after 30 s:\n{}", self.stderr_text());
    }

    /// Expects a refusal within 20 s: a failed exit whose stderr contains every `needles`.
    fn expect_refusal(&mut self, what: &str, needles: &[&str]) -> String {
        let status = self.wait(Duration::from_secs(20));
        let text = self.stderr_text();
        let Some(status) = status else {
            panic!("{what}: still running after 20 s (not refused):\n{text}");
        };
        assert!(
            !status.success(),
            "{what}: exited successfully, expected a refusal:\n{text}"
        );
        for n in needles {
            assert!(text.contains(n), "{what}: stderr lacks {n:?}:\n{text}");
        }
        text
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(c) = &self.child {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(c.id()).expect("pid"));
            let _ = nix::sys::signal::kill(pid, sig);
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn command(args: &[&str], log_dir: &Path, pin_dir: &Path, stderr: &Path) -> Command {
    let mut cmd = Command::new(daemon_bin());
    cmd.arg("run")
        .args(args)
        .arg("--log-dir")
        .arg(log_dir)
        .arg("--pin-dir")
        .arg(pin_dir)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env("OLLAMA_EGRESS_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(stderr).expect("stderr file"));
    cmd
}

/// Removes a pin directory (detaching its links) on drop.
struct PinsGuard(PathBuf);

impl Drop for PinsGuard {
    fn drop(&mut self) {
        if fs::symlink_metadata(&self.0).is_ok() {
            let _ = ollama_egress::loader::PinLayout::new(&self.0).detach_and_remove();
            let _ = fs::remove_file(&self.0);
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// Mounts bpffs at /sys/fs/bpf when nothing is mounted there.
// `f_type`'s integer type differs between architectures; the cast is a no-op on x86_64 only.
#[allow(clippy::unnecessary_cast)]
fn ensure_bpffs() {
    let bpf = Path::new("/sys/fs/bpf");
    let is_bpffs = nix::sys::statfs::statfs(bpf)
        .map(|s| s.filesystem_type().0 as i64 == 0xcafe_4a11)
        .unwrap_or(false);
    if !is_bpffs {
        let st = Command::new("mount")
            .args(["-t", "bpf", "-o", "mode=0700", "bpf", "/sys/fs/bpf"])
            .status()
            .expect("mount");
        assert!(st.success(), "mounting bpffs failed");
    }
}

/// A bpffs instance of the test's own, mounted on a temporary directory anyone may traverse;
/// unmounted on drop.
struct PrivateBpffs(tempfile::TempDir);

impl PrivateBpffs {
    fn mount() -> Self {
        let dir = tempfile::tempdir().expect("tempdir for a bpffs");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod 755");
        let st = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(
            st.success(),
            "mounting a bpffs at {} failed",
            dir.path().display()
        );
        Self(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for PrivateBpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Runs `argv` as uid/gid 65534 (nobody).
fn as_nobody(argv: &[&str]) {
    let st = Command::new("setpriv")
        .args([
            "--reuid",
            &NOBODY.to_string(),
            "--regid",
            &NOBODY.to_string(),
            "--clear-groups",
        ])
        .args(argv)
        .status()
        .expect("setpriv");
    assert!(st.success(), "{argv:?} as nobody failed");
}

fn mkfifo(p: &Path) {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
}

/// `run` arguments: `mode` on `cgroup` with the policy file `policy`.
fn run_args<'a>(mode: &'a str, cgroup: &'a str, policy: &'a Path) -> [&'a str; 5] {
    [
        mode,
        "--cgroup",
        cgroup,
        "--policy",
        policy.to_str().expect("utf-8"),
    ]
}

#[test]
fn planted_pin_directories_and_symlinks_are_refused() {
    require_root();
    ensure_bpffs();
    let cg = TestCgroup::new("oe-plant");
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = ollama_egress_tests::write_policy(tmp.path(), POLICY);
    // A root-owned sticky, world-writable directory: what /sys/fs/bpf is when bpffs is mounted
    // without `mode=`. On a bpffs of its own: the host's /sys/fs/bpf may be closed to nobody
    // (mounted with mode=0700), and the test must not depend on how it was mounted.
    let fs_root = PrivateBpffs::mount();
    let parent = fs_root.path().join(unique("oe-plant"));
    fs::create_dir(&parent).expect("mkdir parent");
    let _parent_guard = PinsGuard(parent.clone());
    fs::set_permissions(&parent, fs::Permissions::from_mode(0o1777)).expect("chmod 1777");
    let planted = parent.join("pins");
    let link = parent.join("link");
    as_nobody(&["mkdir", planted.to_str().expect("utf-8")]);
    as_nobody(&["ln", "-s", "/sys/fs/bpf", link.to_str().expect("utf-8")]);
    let _g1 = PinsGuard(planted.clone());
    let _g2 = PinsGuard(link.clone());
    let args = run_args("--enforce", cg.path.to_str().expect("utf-8"), &policy);

    let mut d = Spawned::start(
        &args,
        &tmp.path().join("log1"),
        &planted,
        &tmp.path().join("e1"),
    );
    d.expect_refusal("a pin directory planted by nobody", &["owned by uid 65534"]);
    assert!(
        fs::read_dir(&planted)
            .expect("read planted")
            .next()
            .is_none(),
        "nothing was pinned into the planted directory"
    );

    let mut d = Spawned::start(
        &args,
        &tmp.path().join("log2"),
        &link,
        &tmp.path().join("e2"),
    );
    d.expect_refusal("a pin directory that is a symlink", &["symlink"]);

    // A pin directory the daemon makes itself is root's and closed to everyone else.
    let fresh = parent.join("fresh");
    let _g3 = PinsGuard(fresh.clone());
    let log = tmp.path().join("log3");
    let mut d = Spawned::start(&args, &log, &fresh, &tmp.path().join("e3"));
    d.wait_ready(&log);
    for dir in [
        fresh.clone(),
        fresh.join("maps"),
        fresh.join("progs"),
        fresh.join("links"),
    ] {
        let m = fs::symlink_metadata(&dir).expect("stat");
        assert_eq!(m.uid(), 0, "{} owned by root", dir.display());
        assert_eq!(m.mode() & 0o7777, 0o700, "{} has mode 0700", dir.display());
    }
}

#[test]
fn log_dir_symlinks_fifos_and_foreign_owners_are_refused() {
    require_root();
    let cg = TestCgroup::new("oe-logdir");
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = ollama_egress_tests::write_policy(tmp.path(), POLICY);
    let args = run_args("--monitor", cg.path.to_str().expect("utf-8"), &policy);
    let pin = PathBuf::from("/sys/fs/bpf").join(unique("oe-logdir"));
    let _pins = PinsGuard(pin.clone());

    // The temporary state file as a symlink to a file root cares about.
    let victim = tmp.path().join("victim");
    fs::write(&victim, "precious\n").expect("victim");
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).expect("chmod");
    let log = tmp.path().join("log-symlink");
    fs::create_dir(&log).expect("mkdir");
    std::os::unix::fs::symlink(&victim, log.join(".state.json.tmp")).expect("symlink");
    let mut d = Spawned::start(&args, &log, &pin, &tmp.path().join("e1"));
    d.wait_ready(&log);
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait(Duration::from_secs(15));
    assert_eq!(
        fs::read_to_string(&victim).expect("victim"),
        "precious\n",
        "the symlink's target was overwritten"
    );
    assert_eq!(
        fs::metadata(&victim).expect("victim").mode() & 0o777,
        0o600,
        "the symlink's target was chmod-ed"
    );

    // A FIFO where the event log belongs.
    let log = tmp.path().join("log-fifo");
    fs::create_dir(&log).expect("mkdir");
    mkfifo(&log.join("events.jsonl"));
    let mut d = Spawned::start(&args, &log, &pin, &tmp.path().join("e2"));
    d.expect_refusal("a FIFO as events.jsonl", &["not a regular file"]);

    // A log directory owned by someone else, and one anyone may write to.
    let log = tmp.path().join("log-foreign");
    fs::create_dir(&log).expect("mkdir");
    nix::unistd::chown(&log, Some(NOBODY.into()), Some(NOBODY.into())).expect("chown");
    let mut d = Spawned::start(&args, &log, &pin, &tmp.path().join("e3"));
    d.expect_refusal("a log directory owned by nobody", &["owned by uid 65534"]);
    let log = tmp.path().join("log-open");
    fs::create_dir(&log).expect("mkdir");
    fs::set_permissions(&log, fs::Permissions::from_mode(0o777)).expect("chmod");
    let mut d = Spawned::start(&args, &log, &pin, &tmp.path().join("e4"));
    d.expect_refusal("a world-writable log directory", &["writable by"]);
}

#[test]
fn a_second_daemon_on_the_same_pins_is_refused() {
    let s = Scenario::start(ScenarioSpec::new("oe-lock", ADDRS, "--enforce", POLICY));
    let first = s.daemon.pid();
    let allow_all = ollama_egress_tests::write_policy(
        &s.tmp.path().join("second").tap_mkdir(),
        "default = \"allow\"\n",
    );
    let cg = s.cg.path.to_str().expect("utf-8");
    for mode in ["--enforce", "--monitor"] {
        let args = run_args(mode, cg, &allow_all);
        let log = s.tmp.path().join(format!("log{mode}"));
        let mut d = Spawned::start(
            &args,
            &log,
            &s.daemon.pin_dir,
            &s.tmp.path().join(format!("e{mode}")),
        );
        d.expect_refusal(
            &format!("a second daemon ({mode})"),
            &[&format!("pid {first}")],
        );
    }
    // Another pin directory, the same target.
    let other_pins = PathBuf::from("/sys/fs/bpf").join(unique("oe-lock-other"));
    let _other = PinsGuard(other_pins.clone());
    let args = run_args("--enforce", cg, &allow_all);
    let mut d = Spawned::start(
        &args,
        &s.tmp.path().join("log-other"),
        &other_pins,
        &s.tmp.path().join("e-other"),
    );
    d.expect_refusal(
        "a second daemon on the same target",
        &["already the target of another", &format!("pid {first}")],
    );
    assert!(
        !other_pins.exists(),
        "a refused daemon leaves no pin directory behind"
    );
    let inside = s.inside(LISTEN);
    probe(&with(&inside, &["tcp", "203.0.113.7:8080"])).assert_eperm("denied stays denied");
    probe(&with(&inside, &["tcp", "192.0.2.1:8080"])).assert_ok("allowed stays allowed");
    assert!(
        !s.daemon.stderr_text().contains("ERROR"),
        "the first daemon is unaffected:\n{}",
        s.daemon.stderr_text()
    );
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        fs::create_dir_all(&self).expect("mkdir");
        self
    }
}

#[test]
fn monitor_refuses_to_take_over_pinned_enforcement() {
    let mut s = Scenario::start(ScenarioSpec::new("oe-montake", ADDRS, "--enforce", POLICY));
    s.daemon.kill9();
    let cg = s.cg.path.to_str().expect("utf-8");
    let policy = s.policy.to_str().expect("utf-8");
    let log = s.tmp.path().join("log-monitor");
    let mut d = Spawned::start(
        &["--monitor", "--cgroup", cg, "--policy", policy],
        &log,
        &s.daemon.pin_dir,
        &s.tmp.path().join("e-monitor"),
    );
    d.expect_refusal("monitor over pinned enforcement", &["detach"]);
    let inside = s.inside(LISTEN);
    probe(&with(&inside, &["tcp", "203.0.113.7:8080"])).assert_eperm("still enforced");
}

#[test]
fn enforcement_without_a_valid_slot_denies() {
    let mut s = Scenario::start(ScenarioSpec::new("oe-noslot", ADDRS, "--enforce", POLICY));
    s.daemon.kill9();
    ollama_egress_tests::clear_pinned_slots(&s.daemon.pin_dir);
    let inside = s.inside(LISTEN);
    probe(&with(&inside, &["tcp", "192.0.2.1:8080"]))
        .assert_eperm("an allowed host, with no valid policy slot in enforce mode");
    probe(&with(&inside, &["tcp", "203.0.113.7:8080"]))
        .assert_eperm("a denied host, with no valid policy slot");
}

#[test]
fn an_empty_policy_file_is_not_reloaded() {
    let policy = "default = \"deny\"\n[allow]\ncidrs = [\"192.0.2.0/24\"]\n";
    let s = Scenario::start(ScenarioSpec::new("oe-trunc", ADDRS, "--enforce", policy));
    let inside = s.inside(LISTEN);
    probe(&with(&inside, &["tcp", "192.0.2.1:8080"])).assert_ok("allowed before");
    // As an editor saving in place: truncate first (and here, stay empty).
    fs::File::create(&s.policy).expect("truncate");
    thread::sleep(Duration::from_secs(4));
    probe(&with(&inside, &["tcp", "192.0.2.1:8080"])).assert_ok("the running policy stays");
    assert!(
        s.daemon.stderr_text().contains("is empty"),
        "the refusal is logged:\n{}",
        s.daemon.stderr_text()
    );
    // The complete file, once written, is loaded.
    fs::write(&s.policy, "default = \"deny\"\n").expect("rewrite");
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let p = probe(&with(&inside, &["tcp", "192.0.2.1:8080"]));
        if p.errno() == Some(libc::EPERM) {
            break;
        }
        assert!(Instant::now() < deadline, "the new policy was not loaded");
        thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn rule_names_survive_a_daemon_restart() {
    let mut s = Scenario::start(ScenarioSpec::new(
        "oe-rulenames",
        ADDRS,
        "--enforce",
        POLICY,
    ));
    let args = s.args.clone();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    s.daemon.kill9();
    let inside = s.inside(LISTEN);
    for _ in 0..3 {
        probe(&with(&inside, &["tcp", "203.0.113.7:8080"])).assert_eperm("while no daemon runs");
    }
    let second = s.daemon.restart(&args);
    let blocked = second.wait_events(3, |e| e["verdict"] == "blocked");
    assert!(blocked.len() >= 3, "blocked events: {blocked:?}");
    for e in &blocked {
        assert_eq!(e["rule"], "deny.cidrs:203.0.113.0/24", "{e}");
    }
}

#[test]
fn policy_and_geo_paths_must_be_regular_files() {
    require_root();
    let cg = TestCgroup::new("oe-fifo");
    let tmp = tempfile::tempdir().expect("tempdir");
    let cgs = cg.path.to_str().expect("utf-8");
    let pin = PathBuf::from("/sys/fs/bpf").join(unique("oe-fifo"));
    let _pins = PinsGuard(pin.clone());
    let fifo = tmp.path().join("fifo");
    mkfifo(&fifo);
    let big = tmp.path().join("big.toml");
    fs::write(&big, "#".repeat(17 << 20)).expect("big file");
    let good = ollama_egress_tests::write_policy(tmp.path(), POLICY);
    let fifo_s = fifo.to_str().expect("utf-8");
    let cases: [(&str, Vec<&str>, &str); 5] = [
        (
            "a FIFO policy",
            vec!["--policy", fifo_s],
            "not a regular file",
        ),
        (
            "/dev/zero as the policy",
            vec!["--policy", "/dev/zero"],
            "not a regular file",
        ),
        (
            "a 17 MiB policy",
            vec!["--policy", big.to_str().expect("utf-8")],
            "larger than",
        ),
        (
            "a FIFO country database",
            vec![
                "--policy",
                good.to_str().expect("utf-8"),
                "--geo-db",
                fifo_s,
            ],
            "not a regular file",
        ),
        (
            "a FIFO ASN database",
            vec![
                "--policy",
                good.to_str().expect("utf-8"),
                "--asn-db",
                fifo_s,
            ],
            "not a regular file",
        ),
    ];
    for (i, (what, extra, needle)) in cases.iter().enumerate() {
        let mut args = vec!["--monitor", "--cgroup", cgs];
        args.extend(extra.iter().copied());
        let stderr = tmp.path().join(format!("e{i}"));
        let mut cmd = command(&args, &tmp.path().join(format!("log{i}")), &pin, &stderr);
        // Bound what a daemon reading /dev/zero could take from the machine.
        // SAFETY: setrlimit is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 2 << 30,
                    rlim_max: 2 << 30,
                };
                libc::setrlimit(libc::RLIMIT_AS, &lim);
                Ok(())
            });
        }
        let mut d = Spawned::start_cmd(cmd, &stderr);
        d.expect_refusal(what, &[needle]);
    }

    // A FIFO put in place of the policy of a running daemon neither freezes it nor is loaded.
    let log = tmp.path().join("log-reload");
    let mut d = Spawned::start(
        &run_args("--monitor", cgs, &good),
        &log,
        &pin,
        &tmp.path().join("e-reload"),
    );
    d.wait_ready(&log);
    fs::remove_file(&good).expect("rm policy");
    mkfifo(&good);
    thread::sleep(Duration::from_secs(4));
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let st = d.wait(Duration::from_secs(10));
    let text = d.stderr_text();
    assert!(
        st.is_some_and(|s| s.success()),
        "SIGTERM after a FIFO reload: {st:?}\n{text}"
    );
    assert!(text.contains("not a regular file"), "{text}");
}

#[test]
fn a_closed_stderr_does_not_stop_enforcement() {
    let s = Scenario::start(ScenarioSpec::new("oe-epipe", ADDRS, "--enforce", POLICY));
    // A second daemon needs its own target: the scenario's daemon holds the first.
    let cg = TestCgroup::new("oe-epipe2");
    let log = s.tmp.path().join("log-epipe");
    let pin = PathBuf::from("/sys/fs/bpf").join(unique("oe-epipe"));
    let _pins = PinsGuard(pin.clone());
    let mut cmd = command(
        &run_args("--enforce", cg.path.to_str().expect("utf-8"), &s.policy),
        &log,
        &pin,
        &s.tmp.path().join("unused"),
    );
    cmd.stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut err = BufReader::new(child.stderr.take().expect("stderr pipe"));
    let mut line = String::new();
    err.read_line(&mut line).expect("first line");
    // As `… 2>&1 | head -1`: the reader goes away after one line.
    drop(err);
    let mut d = Spawned {
        child: Some(child),
        stderr: s.tmp.path().join("unused"),
    };
    d.wait_ready(&log);
    for _ in 0..3 {
        d.signal(nix::sys::signal::Signal::SIGHUP);
        thread::sleep(Duration::from_millis(500));
    }
    assert!(
        d.wait(Duration::from_secs(1)).is_none(),
        "the daemon died when its stderr closed"
    );
    let inside = ollama_egress_tests::probe_args(&s.ns, Some(&cg.path), LISTEN);
    probe(&with(&inside, &["tcp", "203.0.113.7:8080"])).assert_eperm("still enforcing");
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let st = d.wait(Duration::from_secs(15));
    assert!(
        st.is_some_and(|s| s.success()),
        "exit after SIGTERM with a closed stderr: {st:?}"
    );
}

#[test]
fn bpffs_mounted_by_the_daemon_is_closed_to_other_users() {
    require_root();
    let cg = TestCgroup::new("oe-mount");
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = ollama_egress_tests::write_policy(tmp.path(), POLICY);
    let log = tmp.path().join("log");
    let stderr = tmp.path().join("stderr");
    // In a mount namespace of its own with nothing at /sys/fs/bpf, the daemon mounts a fresh
    // bpffs there. The namespace, that bpffs and its pins end with the daemon.
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("umount -R /sys/fs/bpf 2>/dev/null; exec \"$0\" \"$@\"")
        .arg(daemon_bin())
        .args([
            "run",
            "--enforce",
            "--cgroup",
            cg.path.to_str().expect("utf-8"),
            "--policy",
            policy.to_str().expect("utf-8"),
            "--pin-dir",
            "/sys/fs/bpf/ollama-egress-test",
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-dir",
        ])
        .arg(&log)
        .env("OLLAMA_EGRESS_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr).expect("stderr file"));
    let mut d = Spawned::start_cmd(cmd, &stderr);
    d.wait_ready(&log);
    let out = Command::new("nsenter")
        .args([
            "-t",
            &d.pid().to_string(),
            "-m",
            "stat",
            "-c",
            "%a %u",
            "/sys/fs/bpf",
        ])
        .output()
        .expect("nsenter stat");
    let text = String::from_utf8_lossy(&out.stdout);
    let (mode, uid) = text.trim().split_once(' ').expect("mode and uid");
    let mode = u32::from_str_radix(mode, 8).expect("octal mode");
    // bpffs always adds the sticky bit to its root.
    assert_eq!(
        (mode & 0o777, uid),
        (0o700, "0"),
        "mode and owner of the bpffs the daemon mounted: {text}"
    );
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait(Duration::from_secs(15));
}

#[test]
fn an_editor_saving_in_place_is_never_caught_half_way() {
    let policy = "default = \"deny\"\n[allow]\ncidrs = [\"192.0.2.0/24\"]\n";
    let s = Scenario::start(ScenarioSpec::new("oe-editor", ADDRS, "--enforce", policy));
    let inside = s.inside(LISTEN);
    let looping = with(
        &inside,
        &["tcp-loop", "192.0.2.1:8080", "--duration-ms", "5000"],
    );
    let client = thread::spawn(move || probe(&looping));
    thread::sleep(Duration::from_millis(200));
    // Four saves, each as an editor writing in place: truncate, write the first line, write the
    // rest. Each intermediate state lasts well under the daemon's poll interval.
    for _ in 0..4 {
        fs::File::create(&s.policy).expect("truncate");
        thread::sleep(Duration::from_millis(250));
        fs::write(&s.policy, "default = \"deny\"\n").expect("first line");
        thread::sleep(Duration::from_millis(250));
        fs::write(&s.policy, policy).expect("whole file");
        thread::sleep(Duration::from_millis(700));
    }
    let result = client.join().expect("client thread");
    let attempts = result.json["attempts"].as_u64().unwrap_or(0);
    let successes = result.json["successes"].as_u64().unwrap_or(0);
    assert!(attempts > 50, "the client kept connecting: {}", result.json);
    assert_eq!(
        successes,
        attempts,
        "an allowed connection was refused while the policy was being saved: {}\n{}",
        result.json,
        s.daemon.stderr_text()
    );
    // Once the file stays put, it is loaded.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.daemon.stderr_text().contains("policy reloaded") {
        assert!(
            Instant::now() < deadline,
            "the saved policy was not loaded:\n{}",
            s.daemon.stderr_text()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sigterm_as_soon_as_the_daemon_is_ready_is_a_clean_stop() {
    require_root();
    let cg = TestCgroup::new("oe-earlyterm");
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = ollama_egress_tests::write_policy(tmp.path(), POLICY);
    let pin = PathBuf::from("/sys/fs/bpf").join(unique("oe-earlyterm"));
    let _pins = PinsGuard(pin.clone());
    let args = run_args("--monitor", cg.path.to_str().expect("utf-8"), &policy);
    for i in 0..10 {
        let log = tmp.path().join(format!("log{i}"));
        let mut d = Spawned::start(&args, &log, &pin, &tmp.path().join(format!("e{i}")));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(ollama_egress::daemon::DaemonState::read(&log), Ok(Some(ref st)) if st.pid == d.pid())
        {
            assert!(Instant::now() < deadline, "not ready:\n{}", d.stderr_text());
            thread::sleep(Duration::from_micros(200));
        }
        d.signal(nix::sys::signal::Signal::SIGTERM);
        let st = d.wait(Duration::from_secs(15));
        assert!(
            st.is_some_and(|s| s.success()),
            "run {i}: SIGTERM right after ready ended with {st:?}:\n{}",
            d.stderr_text()
        );
    }
}
