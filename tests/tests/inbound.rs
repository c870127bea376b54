//! The inbound guard and the replies of accepted connections, against the running kernel.
//!
//! The target (a TCP server on 0.0.0.0:11434 and a UDP echo on 0.0.0.0:11435, in the target
//! cgroup) runs in a namespace of its own; clients in a second namespace reach it over a veth
//! from 192.0.2.10 and 198.51.100.10. Every address and route exists only inside the two
//! namespaces.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use ollama_egress_tests::{
    Daemon, NetNs, TestCgroup, logs_json, metric_value, require_root, unique, write_policy,
};
use serde_json::Value;

const SERVER: &str = r#"
import socket, sys, threading
def tcp():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 11434)); s.listen(4096)
    while True:
        c, a = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
def serve(c):
    try:
        c.settimeout(10)
        while True:
            data = c.recv(100)
            if not data:
                break
            c.sendall(b"pong " + data)
    except OSError:
        pass
    c.close()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 11435))
    while True:
        data, a = s.recvfrom(100)
        try:
            s.sendto(b"pong " + data, a)
        except OSError as e:
            print("udp reply to", a[0], "failed:", e, file=sys.stderr, flush=True)
threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
tcp()
"#;

const CLIENT: &str = r#"
import socket, sys
src, proto = sys.argv[1], sys.argv[2]
if proto == "tcp":
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0)); s.settimeout(3)
    try:
        s.connect(("192.0.2.1", 11434))
    except socket.timeout:
        print("connect-timeout"); sys.exit(0)
    except OSError as e:
        print("connect-error", e.errno); sys.exit(0)
    s.sendall(b"ping")
    try:
        print("reply", s.recv(100).decode(), flush=True)
    except socket.timeout:
        print("reply-timeout")
    if len(sys.argv) > 3:
        # Hold the connection, then try again.
        sys.stdin.readline()
        s.sendall(b"again")
        try:
            print("reply", s.recv(100).decode())
        except socket.timeout:
            print("reply-timeout")
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0)); s.settimeout(2)
    s.sendto(b"ping", ("192.0.2.1", 11435))
    try:
        print("reply", s.recvfrom(100)[0].decode())
    except socket.timeout:
        print("reply-timeout")
"#;

/// Raw SYNs to 192.0.2.1:11434 from every address of 198.51.100.0/24 and 203.0.113.0/24 but
/// .0, .1 (the server's own: a martian source) and .255, `argv[1]` source ports each; prints
/// how many were sent and how long it took.
const FLOOD: &str = r#"
import socket, struct, sys, time
ports = int(sys.argv[1])
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
dst = socket.inet_aton("192.0.2.1")
n = 0; t0 = time.monotonic()
for net in ("198.51.100.", "203.0.113."):
    for host in range(2, 255):
        src = socket.inet_aton(net + str(host))
        for p in range(ports):
            sport = 20000 + p
            tcp = struct.pack("!HHIIBBHHH", sport, 11434, 1000 + n, 0, 5 << 4, 0x02, 64240, 0, 0)
            c = csum(src + dst + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
            tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), n & 0xffff, 0, 64, 6, 0, src, dst)
            r.sendto(ip + tcp, ("192.0.2.1", 0)); n += 1
print(n, time.monotonic() - t0)
"#;

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e} (install iproute2)"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The server's and the clients' namespaces, joined by a veth.
struct Net {
    srv: NetNs,
    cli: NetNs,
}

impl Net {
    fn new() -> Self {
        let srv = NetNs::new("inb-srv", &[]);
        let cli = NetNs::new("inb-cli", &[]);
        let tag = unique("v");
        let (a, b) = (format!("{tag}a"), format!("{tag}b"));
        assert!(a.len() <= 15, "veth name {a} too long");
        run(&[
            "ip", "-n", &srv.name, "link", "add", &a, "type", "veth", "peer", "name", &b, "netns",
            &cli.name,
        ]);
        for addr in ["192.0.2.1/24", "198.51.100.1/24", "203.0.113.1/24"] {
            run(&["ip", "-n", &srv.name, "addr", "add", addr, "dev", &a]);
        }
        for addr in ["192.0.2.10/24", "198.51.100.10/24"] {
            run(&["ip", "-n", &cli.name, "addr", "add", addr, "dev", &b]);
        }
        run(&["ip", "-n", &srv.name, "link", "set", &a, "up"]);
        run(&["ip", "-n", &cli.name, "link", "set", &b, "up"]);
        // The flood's forged sources arrive on a subnet of the veth: no reverse-path check.
        for key in ["all", "default", a.as_str()] {
            run(&[
                "ip",
                "netns",
                "exec",
                &srv.name,
                "sh",
                "-c",
                &format!("echo 0 > /proc/sys/net/ipv4/conf/{key}/rp_filter"),
            ]);
        }
        Self { srv, cli }
    }

    /// One client from `src` (`tcp` or `udp`): what it got.
    fn client(&self, src: &str, proto: &str) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.cli.name,
                "python3",
                "-c",
                CLIENT,
                src,
                proto,
            ])
            .output()
            .expect("python3 (install python3)");
        assert!(
            out.status.success(),
            "client: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// Python `script` as the target: in cgroup `cg` and the server namespace.
fn as_target(net: &Net, cg: &Path, script: &str) -> Command {
    // Into the cgroup first: `ip netns exec` mounts a sysfs of its own, without the cgroup
    // hierarchy.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "echo $$ > {} && exec ip netns exec {} python3 -c \"$0\"",
            cg.join("cgroup.procs").display(),
            net.srv.name
        ))
        .arg(script);
    cmd
}

/// The target: the server, in the target cgroup and the server namespace; killed on drop.
struct Server(Child);

impl Server {
    fn start(net: &Net, cg: &Path) -> Self {
        let mut child = as_target(net, cg, SERVER)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the server (install python3)");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("server stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("server ready line");
        assert_eq!(line.trim(), "ready", "the server did not start");
        Self(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Daemon, target and network of one test (dropped daemon first).
struct Setup {
    daemon: Daemon,
    _server: Server,
    cg: TestCgroup,
    net: Net,
    tmp: tempfile::TempDir,
}

fn setup(mode: &str, policy: &str) -> Setup {
    require_root();
    let net = Net::new();
    let cg = TestCgroup::new("inb");
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = write_policy(tmp.path(), policy);
    let cg_path = cg.path.display().to_string();
    let policy_path = policy.display().to_string();
    let daemon = Daemon::start(&[mode, "--cgroup", &cg_path, "--policy", &policy_path]);
    let server = Server::start(&net, &cg.path);
    Setup {
        daemon,
        _server: server,
        cg,
        net,
        tmp,
    }
}

fn is_inbound_from(e: &Value, src: &str) -> bool {
    e["direction"] == "inbound" && e["src"] == src
}

/// The packaged outbound policy: everything but loopback and one network is denied.
const OUTBOUND_DENY: &str = r#"
default = "deny"
[allow]
cidrs = ["127.0.0.0/8", "192.0.2.0/24"]
"#;

#[test]
fn replies_of_accepted_connections_are_never_judged_as_outbound() {
    // No [inbound] section: every source may connect; the outbound policy denies 198.51.100.10.
    let s = setup("--enforce", OUTBOUND_DENY);
    assert_eq!(s.net.client("192.0.2.10", "tcp"), "reply pong ping");
    assert_eq!(
        s.net.client("198.51.100.10", "tcp"),
        "reply pong ping",
        "the reply to a client the outbound policy denies was dropped:\n{}",
        s.daemon.stderr_text()
    );
    // Nothing of the accepted connection was judged (or dropped) as an outbound destination.
    std::thread::sleep(Duration::from_millis(2500));
    let outbound: Vec<Value> = s
        .daemon
        .events()
        .into_iter()
        .filter(|e| e["direction"] == "outbound" && e["dst"] == "198.51.100.10")
        .collect();
    assert!(outbound.is_empty(), "judged as outbound: {outbound:?}");
    let m = s.daemon.metrics();
    assert_eq!(
        metric_value(
            &m,
            r#"ollama_egress_packets_total{direction="egress",verdict="blocked"}"#
        ),
        Some(0.0),
        "{m}"
    );
    // The accepted connections' SYNs are inbound events of the default.
    let ev = s
        .daemon
        .wait_events(1, |e| is_inbound_from(e, "198.51.100.10"));
    assert_eq!(ev.len(), 1, "{:?}", s.daemon.events());
    assert_eq!(ev[0]["verdict"], "allowed");
    assert_eq!(ev[0]["rule"], "inbound.default");
    assert_eq!(ev[0]["dport"], 11434);
    assert_eq!(ev[0]["proto"], "tcp");

    // A datagram "reply" is a datagram to an address: judged as outbound, so the UDP echo may
    // answer 192.0.2.10 and may not answer 198.51.100.10 (blocked at sendto, and logged).
    assert_eq!(s.net.client("192.0.2.10", "udp"), "reply pong ping");
    assert_eq!(s.net.client("198.51.100.10", "udp"), "reply-timeout");
    let blocked = s.daemon.wait_events(1, |e| {
        e["direction"] == "outbound"
            && e["dst"] == "198.51.100.10"
            && e["verdict"] == "blocked"
            && e["proto"] == "udp"
    });
    assert_eq!(blocked.len(), 1, "{:?}", s.daemon.events());
}

/// Only 192.0.2.0/24 may connect; outbound is denied but for loopback.
const INBOUND_GUARD: &str = r#"
default = "deny"
[allow]
cidrs = ["127.0.0.0/8"]

[inbound]
default = "deny"
[inbound.allow]
cidrs = ["127.0.0.0/8", "192.0.2.0/24"]
"#;

#[test]
fn denied_sources_get_nothing_and_are_logged() {
    let s = setup("--enforce", INBOUND_GUARD);
    // Allowed, although the outbound policy denies the client's address.
    assert_eq!(s.net.client("192.0.2.10", "tcp"), "reply pong ping");
    // Denied: the SYN is dropped before the listener sees it, so no SYN-ACK comes back and the
    // connect times out (a refused or answered connect would mean a reply left).
    assert_eq!(s.net.client("198.51.100.10", "tcp"), "connect-timeout");
    assert_eq!(s.net.client("198.51.100.10", "udp"), "reply-timeout");

    let allowed = s
        .daemon
        .wait_events(1, |e| is_inbound_from(e, "192.0.2.10"));
    assert_eq!(allowed[0]["verdict"], "allowed", "{allowed:?}");
    assert_eq!(allowed[0]["rule"], "inbound.allow.cidrs:192.0.2.0/24");
    let denied = s
        .daemon
        .wait_events(2, |e| is_inbound_from(e, "198.51.100.10"));
    assert_eq!(denied.len(), 2, "{:?}", s.daemon.events());
    for e in &denied {
        assert_eq!(e["verdict"], "blocked", "{e}");
        assert_eq!(e["rule"], "inbound.default", "{e}");
        assert_eq!(e["mode"], "enforce");
        assert_eq!(e["hook"], "skb-ingress");
        assert!(e["sport"].as_u64().is_some_and(|p| p > 0), "{e}");
    }
    let ports: Vec<u64> = denied
        .iter()
        .map(|e| e["dport"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        ports.contains(&11434) && ports.contains(&11435),
        "{denied:?}"
    );
    // The retransmitted SYNs of the timed-out connect made no further events: one per attempt.
    let tcp = denied.iter().filter(|e| e["proto"] == "tcp").count();
    assert_eq!(tcp, 1, "{denied:?}");

    let queried = logs_json(
        &s.daemon,
        &["--direction", "inbound", "--verdict", "blocked"],
    );
    assert_eq!(queried.len(), 2, "{queried:?}");
    std::thread::sleep(Duration::from_millis(2500));
    let m = s.daemon.metrics();
    let blocked = metric_value(
        &m,
        r#"ollama_egress_connections_total{country="unknown",direction="inbound",proto="tcp",verdict="blocked"}"#,
    );
    assert_eq!(blocked, Some(1.0), "{m}");
}

/// The target's datagram to 198.51.100.10:7001, then what came back to its socket within 2 s.
const DATAGRAM_TARGET: &str = r#"
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 0)); s.settimeout(0.5)
s.sendto(b"hi", ("198.51.100.10", 7001))
got = []; end = time.monotonic() + 2
while time.monotonic() < end:
    try:
        d, a = s.recvfrom(100); got.append("%s:%d" % a)
    except socket.timeout:
        pass
print(" ".join(sorted(got)) or "none", flush=True)
"#;

/// The peer of `DATAGRAM_TARGET`: answers from the port it was sent to and from another one.
const DATAGRAM_PEER: &str = r#"
import socket, time
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(("198.51.100.10", 7001))
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.bind(("198.51.100.10", 7002))
print("ready", flush=True)
a.settimeout(10)
d, addr = a.recvfrom(100)
a.sendto(b"same", addr); b.sendto(b"other", addr)
time.sleep(0.5)
"#;

/// Outbound 198.51.100.0/24 is allowed, inbound only 192.0.2.0/24.
const DATAGRAM_POLICY: &str = r#"
default = "deny"
[allow]
cidrs = ["127.0.0.0/8", "198.51.100.0/24"]

[inbound]
default = "deny"
[inbound.allow]
cidrs = ["127.0.0.0/8", "192.0.2.0/24"]
"#;

#[test]
fn a_datagram_from_another_port_of_a_sent_to_host_is_inbound() {
    use std::io::BufRead as _;
    let s = setup("--enforce", DATAGRAM_POLICY);
    let mut peer = Command::new("ip")
        .args([
            "netns",
            "exec",
            &s.net.cli.name,
            "python3",
            "-c",
            DATAGRAM_PEER,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the peer (install python3)");
    let mut line = String::new();
    std::io::BufReader::new(peer.stdout.take().expect("peer stdout"))
        .read_line(&mut line)
        .expect("peer ready line");
    assert_eq!(line.trim(), "ready", "the peer did not start");
    let out = as_target(&s.net, &s.cg.path, DATAGRAM_TARGET)
        .output()
        .expect("run the target's datagram client");
    let _ = peer.kill();
    let _ = peer.wait();
    assert!(
        out.status.success(),
        "target: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The answer from the port the datagram went to is a reply; the one from another port of
    // the same host is inbound traffic, which the inbound policy denies.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "198.51.100.10:7001",
        "{}",
        s.daemon.stderr_text()
    );
    let denied = s.daemon.wait_events(1, |e| {
        is_inbound_from(e, "198.51.100.10") && e["sport"] == 7002
    });
    assert_eq!(denied[0]["verdict"], "blocked", "{denied:?}");
}

#[test]
fn monitor_lets_denied_sources_in_and_records_would_block() {
    let s = setup("--monitor", INBOUND_GUARD);
    assert_eq!(s.net.client("198.51.100.10", "tcp"), "reply pong ping");
    let ev = s
        .daemon
        .wait_events(1, |e| is_inbound_from(e, "198.51.100.10"));
    assert_eq!(ev.len(), 1, "{:?}", s.daemon.events());
    assert_eq!(ev[0]["verdict"], "would_block");
    assert_eq!(ev[0]["mode"], "monitor");
    assert_eq!(ev[0]["rule"], "inbound.default");
}

#[test]
fn a_reload_that_denies_the_source_stops_its_accepted_connection() {
    use std::io::{BufRead as _, Write as _};
    let s = setup("--enforce", INBOUND_GUARD);
    let mut client = Command::new("ip")
        .args(["netns", "exec", &s.net.cli.name, "python3", "-c", CLIENT])
        .args(["192.0.2.10", "tcp", "hold"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (install python3)");
    let mut out = std::io::BufReader::new(client.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("first reply");
    assert_eq!(first.trim(), "reply pong ping");
    // The same file without the allow rule for 192.0.2.0/24, then SIGHUP.
    let denied = INBOUND_GUARD.replace(", \"192.0.2.0/24\"", "");
    assert_ne!(denied, INBOUND_GUARD);
    write_policy(s.tmp.path(), &denied);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(s.daemon.pid()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_value(
        &s.daemon.metrics(),
        r#"ollama_egress_policy_reloads_total{result="success"}"#,
    ) != Some(1.0)
    {
        assert!(Instant::now() < deadline, "the reload did not happen");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut stdin = client.stdin.take().expect("stdin");
    stdin.write_all(b"go\n").expect("tell the client");
    let mut second = String::new();
    out.read_line(&mut second).expect("second answer");
    let _ = client.wait();
    assert_eq!(
        second.trim(),
        "reply-timeout",
        "the established connection outlived the policy that denies its source"
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_syn_flood_is_counted_exactly_with_bounded_events_and_memory() {
    let s = setup("--enforce", INBOUND_GUARD);
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = rss_kib(s.daemon.pid());
    let ports = 8;
    let out = Command::new("ip")
        .args(["netns", "exec", &s.net.cli.name, "python3", "-c", FLOOD])
        .arg(ports.to_string())
        .output()
        .expect("python3 (install python3)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace();
    let sent: u64 = fields.next().and_then(|n| n.parse().ok()).expect("count");
    let secs: f64 = fields.next().and_then(|n| n.parse().ok()).expect("seconds");
    assert_eq!(sent, 2 * 253 * ports);

    // The kernel counts every SYN; every one is an event or counted as unreported.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (decisions, unreported, events) = loop {
        let m = s.daemon.metrics();
        let decisions = metric_value(&m, "ollama_egress_inbound_decisions_total").unwrap_or(0.0);
        let unreported =
            metric_value(&m, "ollama_egress_inbound_unreported_total").unwrap_or(0.0) as u64;
        let events = s
            .daemon
            .events()
            .iter()
            .filter(|e| e["direction"] == "inbound")
            .count() as u64;
        if (decisions as u64 == sent && events + unreported == sent) || Instant::now() > deadline {
            break (decisions as u64, unreported, events);
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let rss_after = rss_kib(s.daemon.pid());
    eprintln!(
        "flood: {sent} SYNs in {secs:.2} s ({:.0}/s), {events} events, {unreported} unreported, daemon RSS {rss_before} KiB -> {rss_after} KiB",
        sent as f64 / secs
    );
    assert_eq!(decisions, sent, "inbound decisions counted");
    assert_eq!(events + unreported, sent, "events plus unreported");
    // At most the per-CPU budget per started second, on every CPU.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let bound = ollama_egress_common::INBOUND_EVENTS_PER_SECOND * cpus * (secs.ceil() as u64 + 1);
    assert!(events <= bound, "{events} events > {bound}");
    assert!(
        rss_after < rss_before + 32 * 1024,
        "daemon RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // The guarded port still serves an allowed client.
    assert_eq!(s.net.client("192.0.2.10", "tcp"), "reply pong ping");
}

#[test]
fn the_changed_programs_verify_with_a_margin() {
    let s = setup("--enforce", INBOUND_GUARD);
    for name in ["egress", "ingress", "accepted"] {
        let path = s.daemon.pin_dir.join("progs").join(name);
        let info = aya::programs::ProgramInfo::from_pin(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let n = info
            .verified_instruction_count()
            .expect("the kernel reports verified instructions");
        eprintln!("{name}: {n} verified instructions");
        assert!(n < 500_000, "{name}: {n} of the verifier's 1,000,000");
    }
}
