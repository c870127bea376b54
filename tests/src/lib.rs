//! Harness of the root integration tests: cgroups, network namespaces, the daemon and the probe
//! client, each removed again when dropped (also when a test fails).
//!
//! These tests load programs into the running kernel. They need root and panic with a message
//! saying so otherwise: a root test that cannot run fails, it never passes silently.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod debian;
pub mod dns;
pub mod docker;
pub mod engine;
pub mod listener;
pub mod prometheus;
pub mod systemd;

/// Panics unless the tests run as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the integration tests load eBPF programs and need root: run `sudo cargo xtask test`"
    );
}

/// A name unique to this process and call, for cgroups and namespaces.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The `ollama-egress` binary under test: `$OLLAMA_EGRESS_BIN`, else the one built next to this
/// test binary (`cargo xtask test` builds it first).
pub fn daemon_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("OLLAMA_EGRESS_BIN") {
        return PathBuf::from(p);
    }
    built_binary("ollama-egress", "cargo build -p ollama-egress")
}

/// Runs `ollama-egress detach --pin-dir <pin_dir>`; panics with its stderr unless it succeeds.
pub fn detach(pin_dir: &Path) {
    let out = Command::new(daemon_bin())
        .args(["detach", "--pin-dir"])
        .arg(pin_dir)
        .output()
        .expect("detach");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Empties both policy slots of the programs pinned under `pin_dir` (`maps/SLOT_CONFIG`): the
/// programs then find no valid policy in force.
pub fn clear_pinned_slots(pin_dir: &Path) {
    let data =
        aya::maps::MapData::from_pin(pin_dir.join("maps/SLOT_CONFIG")).expect("pinned SLOT_CONFIG");
    let mut slots: aya::maps::Array<_, ollama_egress_common::SlotConfig> =
        aya::maps::Array::try_from(aya::maps::Map::Array(data)).expect("array");
    for i in 0..2 {
        slots
            .set(i, ollama_egress_common::SlotConfig::default(), 0)
            .expect("clear slot");
    }
}

/// The probe client, built by cargo with these tests.
pub fn probe_bin() -> PathBuf {
    built_binary("egress-probe", "cargo test -p ollama-egress-tests")
}

/// `target/<profile>/<name>`, next to this test binary (`target/<profile>/deps/<test>`).
fn built_binary(name: &str, how: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join(name))
        .expect("target directory");
    assert!(
        bin.is_file(),
        "{} not found: build it first (`{how}`) or run `cargo xtask test`",
        bin.display()
    );
    bin
}

/// A cgroup v2 directory made for one test, removed on drop.
pub struct TestCgroup {
    /// Its path.
    pub path: PathBuf,
}

impl TestCgroup {
    /// Makes a new cgroup directly under the cgroup v2 root.
    pub fn new(prefix: &str) -> Self {
        let mount = ollama_egress::targeting::cgroup2_mount().expect("cgroup v2 mount");
        let path = mount.join(unique(prefix));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self { path }
    }

    /// Wraps an existing cgroup directory (e.g. the daemon's managed one) for removal on drop.
    pub fn adopt(path: PathBuf) -> Self {
        Self { path }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // The processes a test put here are its own and have exited; give the kernel a moment
        // to notice before removing the directory.
        for _ in 0..50 {
            match fs::remove_dir(&self.path) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        eprintln!("warning: could not remove cgroup {}", self.path.display());
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip {args:?}: {e} (install iproute2)"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with addresses on its loopback device, deleted on drop.
pub struct NetNs {
    /// Its `ip netns` name.
    pub name: String,
}

impl NetNs {
    /// Creates a namespace whose `lo` is up and carries `addrs` (CIDR notation).
    pub fn new(prefix: &str, addrs: &[&str]) -> Self {
        let name = unique(prefix);
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        for a in addrs {
            if a.contains(':') {
                ip(&["-n", &ns.name, "-6", "addr", "add", a, "dev", "lo", "nodad"]);
            } else {
                ip(&["-n", &ns.name, "addr", "add", a, "dev", "lo"]);
            }
        }
        ns
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Writes a policy file into `dir`.
pub fn write_policy(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("policy.toml");
    fs::write(&p, text).expect("write policy");
    p
}

/// A running `ollama-egress run`, stopped with SIGTERM on drop; its pins are removed then too.
pub struct Daemon {
    child: Option<Child>,
    /// Its log directory.
    pub log_dir: PathBuf,
    /// Its bpffs pin directory (unique to the test).
    pub pin_dir: PathBuf,
    stderr: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Daemon {
    /// Starts `ollama-egress run ARGS --log-dir <tmp> --pin-dir <unique>` and waits until it
    /// reports ready (its state file names its pid).
    pub fn start(args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let log_dir = tmp.path().join("log");
        let pin_dir = PathBuf::from("/sys/fs/bpf").join(unique("oe-test"));
        Self::start_with(args, tmp, log_dir, pin_dir)
    }

    /// Like [`Daemon::start`], with the log and pin directories of an earlier daemon (a
    /// restart).
    pub fn restart(&mut self, args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        // The new daemon owns the pins from now on.
        let pin_dir = std::mem::take(&mut self.pin_dir);
        Self::start_with(args, tmp, self.log_dir.clone(), pin_dir)
    }

    fn start_with(
        args: &[&str],
        tmp: tempfile::TempDir,
        log_dir: PathBuf,
        pin_dir: PathBuf,
    ) -> Self {
        let stderr = tmp.path().join("daemon.stderr");
        let child = Command::new(daemon_bin())
            .arg("run")
            .args(args)
            .arg("--log-dir")
            .arg(&log_dir)
            .arg("--pin-dir")
            .arg(&pin_dir)
            .args(if args.contains(&"--metrics-addr") {
                &[][..]
            } else {
                // Tests run side by side: each daemon serves its metrics on a port of its own.
                &["--metrics-addr", "127.0.0.1:0"][..]
            })
            .env("OLLAMA_EGRESS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(fs::File::create(stderr.with_extension("stdout")).expect("stdout file"))
            .stderr(fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn ollama-egress");
        let mut d = Self {
            child: Some(child),
            log_dir,
            pin_dir,
            stderr,
            _tmp: tmp,
        };
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let pid = self.pid();
        while Instant::now() < deadline {
            if let Ok(Some(st)) = ollama_egress::daemon::DaemonState::read(&self.log_dir)
                && st.pid == pid
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "ollama-egress exited with {status} before it was ready:\n{}",
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "ollama-egress not ready after 30 s:\n{}",
            self.stderr_text()
        );
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What the daemon wrote on stderr so far.
    pub fn stderr_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(&self.stderr) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// What the daemon wrote on stdout so far (events with `--log-stdout`).
    pub fn stdout_text(&self) -> String {
        fs::read_to_string(self.stderr.with_extension("stdout")).unwrap_or_default()
    }

    /// Every event in the log now.
    pub fn events(&self) -> Vec<Value> {
        read_events(&self.log_dir)
    }

    /// Waits up to 5 s until at least `n` events match `pred`; returns the matches.
    pub fn wait_events(&self, n: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found: Vec<Value> = self.events().into_iter().filter(&pred).collect();
            if found.len() >= n || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits for the exit; returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Sends SIGKILL (no clean-up by the daemon) and waits for the exit.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        let pinned = !self.pin_dir.as_os_str().is_empty() && self.pin_dir.exists();
        if pinned
            && let Err(e) = ollama_egress::loader::PinLayout::new(&self.pin_dir).detach_and_remove()
        {
            eprintln!(
                "warning: could not remove pins {}: {e}",
                self.pin_dir.display()
            );
        }
    }
}

/// Every event of a log directory, oldest first.
pub fn read_events(log_dir: &Path) -> Vec<Value> {
    let Ok(text) = fs::read_to_string(log_dir.join("events.jsonl")) else {
        return Vec::new();
    };
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}")))
        .collect()
}

/// Outcome of one probe run.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The probe's JSON line.
    pub json: Value,
}

impl Probe {
    /// Whether the action succeeded.
    pub fn ok(&self) -> bool {
        self.json["ok"].as_bool().unwrap_or(false)
    }
    /// The errno of a failed action.
    pub fn errno(&self) -> Option<i32> {
        self.json["errno"]
            .as_i64()
            .and_then(|e| i32::try_from(e).ok())
    }
    /// How long the action took.
    pub fn elapsed(&self) -> Duration {
        Duration::from_micros(self.json["elapsed_us"].as_u64().unwrap_or(u64::MAX))
    }
    /// The pid that acted.
    pub fn pid(&self) -> u64 {
        self.json["pid"].as_u64().unwrap_or(0)
    }
    /// Asserts the action failed with EPERM in well under 100 ms (no SYN retries).
    pub fn assert_eperm(&self, what: &str) {
        assert_eq!(
            self.errno(),
            Some(libc::EPERM),
            "{what}: expected EPERM, got {}",
            self.json
        );
        assert!(
            self.elapsed() < Duration::from_millis(100),
            "{what}: EPERM took {:?}",
            self.elapsed()
        );
    }
    /// Asserts the action succeeded.
    pub fn assert_ok(&self, what: &str) {
        assert!(self.ok(), "{what}: expected success, got {}", self.json);
    }
}

/// Runs the probe with `args` (see `egress-probe --help`) and returns its outcome.
pub fn probe<S: AsRef<str>>(args: &[S]) -> Probe {
    let out = Command::new(probe_bin())
        .args(args.iter().map(AsRef::as_ref))
        .output()
        .expect("run egress-probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "egress-probe {:?} failed: {}{}",
        args.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let json = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("probe output {stdout:?}: {e}"));
    Probe { json }
}

/// Probe arguments: in `ns`, inside `cgroup` when given, listening on `listen`.
pub fn probe_args(ns: &NetNs, cgroup: Option<&Path>, listen: &[&str]) -> Vec<String> {
    let mut v = vec!["--netns".to_owned(), ns.name.clone()];
    for l in listen {
        v.push("--listen".into());
        v.push((*l).to_owned());
    }
    if let Some(cg) = cgroup {
        v.push("--cgroup".into());
        v.push(cg.display().to_string());
    }
    v
}

/// `base` followed by `more`.
pub fn with(base: &[String], more: &[&str]) -> Vec<String> {
    base.iter()
        .cloned()
        .chain(more.iter().map(|s| (*s).to_owned()))
        .collect()
}

/// `GET path` on `addr` (HTTP/1.0: no chunked bodies, the server closes); returns the status
/// code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {head:?}")))?;
    Ok((code, body.to_owned()))
}

/// The value of one series (`name` or `name{labels}` exactly as exposed) in a text exposition.
pub fn metric_value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        if s == series { v.parse().ok() } else { None }
    })
}

impl Daemon {
    /// The daemon's state file.
    pub fn state(&self) -> ollama_egress::daemon::DaemonState {
        ollama_egress::daemon::DaemonState::read(&self.log_dir)
            .expect("read state")
            .expect("the daemon wrote its state")
    }

    /// The daemon's `/metrics` text.
    pub fn metrics(&self) -> String {
        let addr: SocketAddr = self
            .state()
            .metrics_addr
            .expect("metrics address in the state")
            .parse()
            .expect("socket address");
        let (code, body) = http_get(addr, "/metrics").expect("GET /metrics");
        assert_eq!(code, 200, "{body}");
        body
    }
}

/// The usual setup of a root test: a namespace with hosts, a cgroup, a policy file, and a
/// daemon attached to the cgroup. Dropped in that reverse order: the daemon first.
pub struct Scenario {
    /// The daemon (declared first: dropped first).
    pub daemon: Daemon,
    /// The target cgroup.
    pub cg: TestCgroup,
    /// The namespace with the test hosts.
    pub ns: NetNs,
    /// Holds the policy file (and fixture databases).
    pub tmp: tempfile::TempDir,
    /// The policy file.
    pub policy: PathBuf,
    /// The arguments the daemon was started with (for a restart).
    pub args: Vec<String>,
}

/// What a [`Scenario`] starts with.
#[derive(Clone, Copy)]
pub struct ScenarioSpec<'a> {
    /// Name prefix of the namespace and cgroup.
    pub name: &'a str,
    /// Addresses on the namespace's loopback.
    pub addrs: &'a [&'a str],
    /// `--enforce` or `--monitor`.
    pub mode: &'a str,
    /// Policy file contents.
    pub policy: &'a str,
    /// Write the documentation-range fixture databases and pass them.
    pub geo: bool,
    /// More `run` arguments.
    pub extra: &'a [&'a str],
}

impl<'a> ScenarioSpec<'a> {
    /// A spec without geo databases or extra arguments.
    pub fn new(name: &'a str, addrs: &'a [&'a str], mode: &'a str, policy: &'a str) -> Self {
        Self {
            name,
            addrs,
            mode,
            policy,
            geo: false,
            extra: &[],
        }
    }
}

impl Scenario {
    /// Sets everything up and starts the daemon.
    pub fn start(spec: ScenarioSpec<'_>) -> Self {
        require_root();
        let ns = NetNs::new(spec.name, spec.addrs);
        let cg = TestCgroup::new(spec.name);
        let tmp = tempfile::tempdir().expect("tempdir");
        let policy = write_policy(tmp.path(), spec.policy);
        let mut args: Vec<String> = vec![
            spec.mode.to_owned(),
            "--cgroup".into(),
            cg.path.display().to_string(),
            "--policy".into(),
            policy.display().to_string(),
        ];
        if spec.geo {
            let (country, asn) = ollama_egress_geo::fixture::documentation_fixture()
                .write_to(tmp.path())
                .expect("fixture databases");
            args.extend([
                "--geo-db".into(),
                country.display().to_string(),
                "--asn-db".into(),
                asn.display().to_string(),
            ]);
        }
        args.extend(spec.extra.iter().map(|s| (*s).to_owned()));
        let daemon = Daemon::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
        Self {
            daemon,
            cg,
            ns,
            tmp,
            policy,
            args,
        }
    }

    /// Probe arguments for a client inside the cgroup, listening on `listen` first.
    pub fn inside(&self, listen: &[&str]) -> Vec<String> {
        probe_args(&self.ns, Some(&self.cg.path), listen)
    }

    /// Probe arguments for a client outside the cgroup.
    pub fn outside(&self, listen: &[&str]) -> Vec<String> {
        probe_args(&self.ns, None, listen)
    }

    /// The daemon's arguments, as `&str`s.
    pub fn args(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }
}

/// `Command::spawn` that retries while the executable is still open for writing somewhere
/// (ETXTBSY): a test that has just copied a binary races with other test threads' forks, which
/// briefly hold the copy's write descriptor until they exec.
pub trait SpawnRetryingBusy {
    /// Spawns, retrying ETXTBSY for up to two seconds; panics with the error otherwise.
    fn spawn_retrying_busy(&mut self) -> Child;
}

impl SpawnRetryingBusy for Command {
    fn spawn_retrying_busy(&mut self) -> Child {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match self.spawn() {
                Ok(child) => return child,
                Err(e)
                    if e.kind() == std::io::ErrorKind::ExecutableFileBusy
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("spawning {:?}: {e}", self.get_program()),
            }
        }
    }
}

/// `ollama-egress logs --json ARGS` on the daemon's log; panics unless it succeeds.
pub fn logs_json(d: &Daemon, args: &[&str]) -> Vec<Value> {
    let out = Command::new(daemon_bin())
        .arg("logs")
        .arg("--log-dir")
        .arg(&d.log_dir)
        .arg("--json")
        .args(args)
        .output()
        .expect("run logs");
    assert!(
        out.status.success(),
        "logs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// `bin` under another name, so that its processes have that name (`comm`).
///
/// A hard link where the file system allows it: a copy is a file open for writing, and a child
/// that another test thread forks meanwhile inherits that descriptor until its exec, so running
/// the copy can fail with ETXTBSY ("Text file busy"). A link is never open for writing.
pub fn named_copy(bin: &Path, dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    // The file itself, not a symlink to it (`/bin/sh`): a link to a relative symlink dangles.
    let bin = std::fs::canonicalize(bin).expect("resolve the binary");
    if std::fs::hard_link(&bin, &p).is_err() {
        std::fs::copy(&bin, &p).expect("copy binary");
    }
    p
}
