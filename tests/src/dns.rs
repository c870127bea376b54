//! Names: a real DNS server (dnsmasq) inside a test's network namespace, the namespace's
//! `resolv.conf`, and the probe runs and daemon queries the name tests share.
//!
//! The namespace of a [`DnsScenario`] has the resolver on [`RESOLVER`] (all of
//! 198.51.100.0/24 is local there), the names' hosts anywhere in 203.0.113.0/24 and
//! 2001:db8::/64 (local too), and a probe listener on port [`PORT`] of all of them.

use std::{
    ffi::CString,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{Daemon, NetNs, Probe, Scenario, ScenarioSpec, metric_value, probe_bin};

/// The namespace's DNS server.
pub const RESOLVER: &str = "198.51.100.53";
/// Where the probe's fake DNS server answers (a second one answers on 198.51.100.55:53).
pub const FAKE_SERVER: &str = "198.51.100.54:53";
/// The port of [`Dnsmasq::forwarder`].
pub const FORWARDER_PORT: u16 = 5353;
/// The port the names' hosts listen on.
pub const PORT: u16 = 8080;
/// The port of a held connection's listener.
pub const HELD_PORT: u16 = 8081;
/// Addresses of a DNS scenario's namespace (whole prefixes: every address in them is local).
pub const NS_ADDRS: &[&str] = &["198.51.100.53/24", "203.0.113.1/24", "2001:db8::53/64"];

/// A policy with `default`, domain rules, and allowed CIDRs; the resolvers (198.51.100.0/24)
/// are always allowed.
pub fn names_policy(default: &str, allow: &[&str], deny: &[&str], cidrs: &[&str]) -> String {
    let list = |v: &[&str]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut cidrs = cidrs.to_vec();
    cidrs.push("198.51.100.0/24");
    let mut p = format!(
        "default = {default:?}\n\n[allow]\ncidrs = [{}]\n",
        list(&cidrs)
    );
    if !allow.is_empty() {
        p.push_str(&format!("domains = [{}]\n", list(allow)));
    }
    if !deny.is_empty() {
        p.push_str(&format!("\n[deny]\ndomains = [{}]\n", list(deny)));
    }
    p
}

/// The dnsmasq binary; panics with how to install it when it is missing.
pub fn dnsmasq_bin() -> PathBuf {
    ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/sbin/dnsmasq"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "dnsmasq not found (looked in /usr/sbin, /usr/bin, /sbin): the name tests run a \
                 real DNS server; install it with `cargo xtask setup` (Debian package \
                 dnsmasq-base)"
            )
        })
}

/// The records a dnsmasq serves, as its command-line options.
#[derive(Clone, Default)]
pub struct Zone {
    args: Vec<String>,
}

impl Zone {
    /// An empty zone.
    pub fn new() -> Self {
        Self::default()
    }

    /// `name` → each of `addrs` (IPv4 or IPv6), with TTL `ttl` seconds.
    pub fn host(mut self, name: &str, addrs: &[&str], ttl: u32) -> Self {
        for a in addrs {
            self.args.push(format!("--host-record={name},{a},{ttl}"));
        }
        self
    }

    /// `alias` is a CNAME for `target` (a name of this zone, possibly a CNAME itself).
    pub fn cname(mut self, alias: &str, target: &str, ttl: u32) -> Self {
        self.args.push(format!("--cname={alias},{target},{ttl}"));
        self
    }
}

/// A running dnsmasq, killed (by its pid) on drop.
pub struct Dnsmasq {
    child: Child,
    log: PathBuf,
    _tmp: tempfile::TempDir,
}

/// Where and how a [`Dnsmasq`] runs.
pub struct DnsmasqSpec<'a> {
    /// The namespace it runs in.
    pub ns: &'a NetNs,
    /// The address it listens on.
    pub listen: &'a str,
    /// Its port.
    pub port: u16,
    /// What it answers with itself.
    pub zone: &'a Zone,
    /// Forward everything else to this server (`ADDR` or `ADDR#PORT`).
    pub upstream: Option<&'a str>,
    /// Start it inside this cgroup.
    pub cgroup: Option<&'a Path>,
}

impl Dnsmasq {
    /// A forwarding resolver in `cgroup`, on 127.0.0.1:[`FORWARDER_PORT`], asking the
    /// namespace's authoritative server: its clients' answers come from that port, only its own
    /// come from port 53.
    pub fn forwarder(ns: &NetNs, cgroup: &Path) -> Self {
        Self::start(&DnsmasqSpec {
            ns,
            listen: "127.0.0.1",
            port: FORWARDER_PORT,
            zone: &Zone::new(),
            upstream: Some(RESOLVER),
            cgroup: Some(cgroup),
        })
    }

    /// Starts dnsmasq in the namespace (and cgroup) and waits until it answers.
    pub fn start(spec: &DnsmasqSpec<'_>) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let log = tmp.path().join("dnsmasq.log");
        let mut cmd = Command::new(dnsmasq_bin());
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--pid-file=",
            "--user=root",
            "--log-queries",
        ])
        .arg(format!("--log-facility={}", log.display()))
        .arg(format!("--listen-address={}", spec.listen))
        .arg(format!("--port={}", spec.port))
        .args(&spec.zone.args)
        .args(spec.upstream.map(|u| format!("--server={u}")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let netns = fs::File::open(format!("/run/netns/{}", spec.ns.name))
            .unwrap_or_else(|e| panic!("netns {}: {e}", spec.ns.name));
        let procs = spec.cgroup.map(|cg| {
            CString::new(cg.join("cgroup.procs").display().to_string()).expect("cgroup path")
        });
        let ns_fd = netns.as_raw_fd();
        // SAFETY: between fork and exec the closure only makes raw system calls on memory
        // prepared before the fork (no allocation, no locks).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(p) = &procs {
                    let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 || libc::write(fd, b"0\n".as_ptr().cast(), 2) != 2 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(fd);
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting dnsmasq: {e}"));
        let mut d = Self {
            child,
            log,
            _tmp: tmp,
        };
        d.wait_ready(spec.listen, spec.port);
        d
    }

    fn wait_ready(&mut self, listen: &str, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().ok().flatten() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!("dnsmasq exited with {status}: {err}{}", self.log_text());
            }
            if self.log_text().contains("started, version") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "dnsmasq on {listen}#{port} not ready after 10 s:\n{}",
            self.log_text()
        );
    }

    /// What dnsmasq logged so far (queries included).
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        // `Child::kill` signals exactly this child's pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/etc/netns/NAME/resolv.conf` naming `server`, removed (with its directory) on drop.
pub struct NetnsResolv {
    dir: PathBuf,
}

impl NetnsResolv {
    /// Writes the file with `nameserver server` and `options` lines.
    pub fn new(ns: &NetNs, server: &str, options: &[&str]) -> Self {
        let dir = PathBuf::from("/etc/netns").join(&ns.name);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let me = Self { dir };
        me.set(server, options);
        me
    }

    /// Rewrites the file: `nameserver server` and `options` lines.
    pub fn set(&self, server: &str, options: &[&str]) {
        let mut text = format!("nameserver {server}\n");
        if !options.is_empty() {
            text.push_str(&format!("options {}\n", options.join(" ")));
        }
        fs::write(self.dir.join("resolv.conf"), text).expect("write resolv.conf");
    }
}

impl Drop for NetnsResolv {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A [`Scenario`] whose namespace runs dnsmasq on [`RESOLVER`]:53 serving `zone`. Dropped in
/// field order: dnsmasq, the resolv.conf, then the daemon, cgroup and namespace.
pub struct DnsScenario {
    /// The DNS server.
    pub dns: Dnsmasq,
    /// The namespace's resolv.conf.
    pub resolv: NetnsResolv,
    /// Daemon, cgroup, namespace.
    pub s: Scenario,
}

impl DnsScenario {
    /// Starts the daemon (`mode`, `policy`, `extra` arguments), then dnsmasq with `zone`;
    /// `resolv_options` go to the namespace's resolv.conf (`edns0`, ...).
    pub fn start(
        name: &str,
        mode: &str,
        policy: &str,
        extra: &[&str],
        zone: &Zone,
        resolv_options: &[&str],
    ) -> Self {
        dnsmasq_bin();
        let s = Scenario::start(ScenarioSpec {
            extra,
            ..ScenarioSpec::new(name, NS_ADDRS, mode, policy)
        });
        local_route6(&s.ns, "2001:db8::/64");
        let resolv = NetnsResolv::new(&s.ns, RESOLVER, resolv_options);
        let dns = Dnsmasq::start(&DnsmasqSpec {
            ns: &s.ns,
            listen: RESOLVER,
            port: 53,
            zone,
            upstream: None,
            cgroup: None,
        });
        Self { dns, resolv, s }
    }

    /// The daemon.
    pub fn daemon(&self) -> &Daemon {
        &self.s.daemon
    }

    /// Runs the probe inside the cgroup, with the namespace's resolver and a listener on
    /// [`PORT`] of every address: `action` are the action's arguments.
    pub fn inside(&self, action: &[&str]) -> Probe {
        crate::probe(&self.args(true, action))
    }

    /// Like [`DnsScenario::inside`], outside the cgroup.
    pub fn outside(&self, action: &[&str]) -> Probe {
        crate::probe(&self.args(false, action))
    }

    fn args(&self, inside: bool, action: &[&str]) -> Vec<String> {
        let listen = format!("[::]:{PORT}");
        let base = crate::probe_args(
            &self.s.ns,
            inside.then_some(self.s.cg.path.as_path()),
            &[&listen],
        );
        let mut v = crate::with(&base, &["--netns-resolv", "--settle-ms", "0"]);
        v.extend(action.iter().map(|s| (*s).to_owned()));
        v
    }

    /// Resolves `name` inside the cgroup and connects to its first address.
    pub fn resolve(&self, name: &str) -> Probe {
        self.inside(&["resolve", name])
    }

    /// Connects inside the cgroup to `addr` on [`PORT`], without resolving anything.
    pub fn connect(&self, addr: &str) -> Probe {
        let target = if addr.contains(':') {
            format!("[{addr}]:{PORT}")
        } else {
            format!("{addr}:{PORT}")
        };
        self.inside(&["tcp", &target])
    }

    /// Keeps a connection to `name`'s first address open (see [`Held`]), on port
    /// [`HELD_PORT`] (its listener is its own: other probes keep [`PORT`]).
    pub fn hold(&self, name: &str) -> Held {
        let listen = format!("[::]:{HELD_PORT}");
        let base = crate::probe_args(&self.s.ns, Some(self.s.cg.path.as_path()), &[&listen]);
        let port = HELD_PORT.to_string();
        Held::start(&crate::with(
            &base,
            &["--netns-resolv", "resolve-hold", name, "--port", &port],
        ))
    }

    /// `ollama_egress_dns_answers_total{result="RESULT"}` now; panics when it is not exposed.
    pub fn answers(&self, result: &str) -> f64 {
        let series = format!("ollama_egress_dns_answers_total{{result=\"{result}\"}}");
        let text = self.daemon().metrics();
        metric_value(&text, &series).unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
    }

    /// Waits up to 5 s for a connect event to `addr` with `verdict`; returns it.
    pub fn event(&self, verdict: &str, addr: &str) -> Value {
        self.daemon()
            .wait_events(1, |e| e["verdict"] == verdict && e["dst"] == addr)
            .into_iter()
            .next()
            .unwrap_or_else(|| {
                panic!(
                    "no {verdict} event for {addr}: {:#?}",
                    self.daemon().events()
                )
            })
    }
}

/// Makes all of `prefix` local in the namespace (IPv6 does not do that for an address's
/// prefix on `lo` by itself).
pub fn local_route6(ns: &NetNs, prefix: &str) {
    let out = Command::new("ip")
        .args([
            "-n", &ns.name, "-6", "route", "add", "local", prefix, "dev", "lo",
        ])
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip route add local {prefix}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A probe holding a connection open (`resolve-hold`), killed on drop.
pub struct Held {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// The outcome of resolving and connecting.
    pub first: Probe,
}

impl Held {
    fn start(args: &[String]) -> Self {
        let mut child = Command::new(probe_bin())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn egress-probe");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut h = Self {
            child,
            stdin,
            stdout,
            first: Probe { json: Value::Null },
        };
        h.first = h.read();
        h
    }

    fn read(&mut self) -> Probe {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read probe line");
        let json = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("held probe printed {line:?}: {e}"));
        Probe { json }
    }

    /// Sends 1000 more bytes; the outcome says whether the listener got everything so far.
    pub fn send(&mut self) -> Probe {
        let stdin = self.stdin.as_mut().expect("held probe stdin");
        stdin.write_all(b"send\n").expect("write to held probe");
        stdin.flush().expect("flush");
        self.read()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 100 ms until it returns `Some` or `timeout` passes; panics with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
