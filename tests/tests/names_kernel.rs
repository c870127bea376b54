//! The kernel side of names against a real DNS server (dnsmasq in the test's namespace): an
//! answer to a query the cgroup sent is learned before the client reads it and binds its
//! address to the name's domain rule; a forged answer that answers no query is ignored. The
//! domain rule is written into the pinned maps by the test (as the daemon's policy loader
//! does), so only the kernel programs are under test here.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, lpm_trie::Key};
use ollama_egress_common::{
    ACTION_ALLOW, FAMILY_IPV4, PolicyValue, SlotConfig,
    dns::{
        Binding, BindingKey, DOMAIN_KEY_LEN, ORIGIN_TABLES, SOCK_CONNECTED_ENTRIES, SOCK_OUTBOUND,
        STAT_DNS_IGNORED, STAT_DNS_LEARNED, SockVerdict, domain_key,
    },
};
use ollama_egress_tests::{NetNs, Scenario, ScenarioSpec, probe, with};

/// The resolver and two hosts with names, inside the namespace.
const ADDRS: &[&str] = &["198.51.100.53/32", "198.51.100.7/32", "198.51.100.8/32"];
const LISTEN: &[&str] = &["198.51.100.7:8080", "198.51.100.8:8080"];

const POLICY: &str = r#"
default = "deny"

[allow]
cidrs = ["198.51.100.53/32"]
"#;

/// dnsmasq in the namespace, killed on drop.
struct Dnsmasq(Child);

impl Dnsmasq {
    fn start(ns: &NetNs) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "dnsmasq", "--keep-in-foreground"])
            .args([
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--port=53",
            ])
            .args([
                "--listen-address=198.51.100.53",
                "--pid-file=",
                "--user=root",
            ])
            .args(["--address=/allowed.example/198.51.100.7"])
            .args(["--address=/other.example/198.51.100.8", "--local-ttl=300"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("dnsmasq cannot run (apt-get install dnsmasq-base): {e}"));
        sleep(Duration::from_millis(500));
        Self(child)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A client in `cgroup` and `ns` that asks the resolver for `name` (type A) over UDP; with
/// `forge`, a raw socket first sends the client's port a forged answer from 198.51.100.53:53
/// (an id no query carried, naming 198.51.100.8), which must arrive (it is never dropped).
const CLIENT: &str = r#"
import os, socket, struct, sys
name, forge = sys.argv[1], sys.argv[2] == "1"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 0))
port = s.getsockname()[1]
def msg(id, flags, an):
    q = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0\0\x01\0\x01"
    return struct.pack(">HHHHHH", id, flags, 1, len(an), 0, 0) + q + b"".join(an)
if forge:
    rr = b"\xc0\x0c\0\x01\0\x01\0\0\x0e\x10\0\x04" + bytes([198, 51, 100, 8])
    body = msg(0x4321, 0x8180, [rr])
    udp = struct.pack(">HHHH", 53, port, 8 + len(body), 0) + body
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     bytes([198, 51, 100, 53]), bytes([198, 51, 100, 53])) + udp
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    raw.sendto(ip, ("198.51.100.53", 0))
    s.settimeout(1.0)
    try:
        forged = s.recv(2048)
        print("forged answer delivered", len(forged))
    except socket.timeout:
        sys.exit("the forged answer never arrived")
s.settimeout(3.0)
s.sendto(msg(0x1234, 0x0100, []), ("198.51.100.53", 53))
data = s.recv(2048)
print("answer", len(data))
"#;

fn ask(s: &Scenario, name: &str, forge: bool) {
    // Joins the cgroup first: `ip netns exec` mounts the namespace's own /sys.
    let join = format!(
        "echo $$ > '{}/cgroup.procs' && exec ip netns exec '{}' python3 -c \"$0\" \"$@\"",
        s.cg.path.display(),
        s.ns.name
    );
    let out = Command::new("sh")
        .args(["-c", &join, CLIENT])
        .arg(name)
        .arg(if forge { "1" } else { "0" })
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "the DNS client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stat(pin_dir: &Path, index: u32) -> u64 {
    let data = MapData::from_pin(pin_dir.join("maps/STATS")).expect("pinned STATS");
    let stats = PerCpuArray::<_, u64>::try_from(Map::PerCpuArray(data)).expect("STATS");
    stats.get(&index, 0).expect("read STATS").iter().sum()
}

/// Writes an allow rule for `name` into the active slot's domain trie and counts it in the
/// slot's settings, as the policy loader does.
fn allow_name(pin_dir: &Path, name: &str) {
    let active = {
        let data = MapData::from_pin(pin_dir.join("maps/ACTIVE_SLOT")).expect("ACTIVE_SLOT");
        let a = Array::<_, u32>::try_from(Map::Array(data)).expect("array");
        a.get(&0, 0).expect("active slot") & 1
    };
    let data = MapData::from_pin(pin_dir.join(format!("maps/DOMAINS_{active}"))).expect("DOMAINS");
    let mut trie = LpmTrie::<_, [u8; DOMAIN_KEY_LEN], PolicyValue>::try_from(Map::LpmTrie(data))
        .expect("trie");
    let (bits, key) = domain_key(name.as_bytes(), false).expect("a name");
    let value = PolicyValue {
        action: ACTION_ALLOW,
        rule_id: 1,
    };
    trie.insert(&Key::new(bits, key), value, 0)
        .expect("insert the rule");
    let data = MapData::from_pin(pin_dir.join("maps/SLOT_CONFIG")).expect("SLOT_CONFIG");
    let mut slots = Array::<_, SlotConfig>::try_from(Map::Array(data)).expect("array");
    let mut cfg = slots.get(&active, 0).expect("slot");
    cfg.domain_rules += 1;
    slots.set(active, cfg, 0).expect("write the slot");
}

fn wait_stat(pin_dir: &Path, index: u32, at_least: u64) -> u64 {
    let end = Instant::now() + Duration::from_secs(3);
    loop {
        let v = stat(pin_dir, index);
        if v >= at_least || Instant::now() > end {
            return v;
        }
        sleep(Duration::from_millis(50));
    }
}

#[test]
fn answers_to_the_cgroups_queries_bind_their_addresses_and_forged_ones_are_ignored() {
    let s = Scenario::start(ScenarioSpec::new("oe-nk", ADDRS, "--enforce", POLICY));
    let _dns = Dnsmasq::start(&s.ns);
    let pins = s.daemon.pin_dir.clone();
    let inside = s.inside(LISTEN);

    // No rule, no answer yet: the default denies.
    probe(&with(&inside, &["tcp", "198.51.100.7:8080"])).assert_eperm("before any answer");
    allow_name(&pins, "allowed.example");
    probe(&with(&inside, &["tcp", "198.51.100.7:8080"])).assert_eperm("a rule but no answer");

    // A forged answer to no query, then the real one.
    let learned = stat(&pins, STAT_DNS_LEARNED);
    let ignored = stat(&pins, STAT_DNS_IGNORED);
    ask(&s, "Allowed.Example", true);
    assert!(
        wait_stat(&pins, STAT_DNS_IGNORED, ignored + 1) > ignored,
        "the forged answer was not counted as ignored"
    );
    assert_eq!(
        wait_stat(&pins, STAT_DNS_LEARNED, learned + 1),
        learned + 1,
        "exactly the real answer is learned"
    );
    probe(&with(&inside, &["tcp", "198.51.100.7:8080"])).assert_ok("the allowed name's address");

    // The forged answer named 198.51.100.8: it stays denied; so does a name without a rule.
    probe(&with(&inside, &["tcp", "198.51.100.8:8080"])).assert_eperm("the forged address");
    ask(&s, "other.example", false);
    assert_eq!(wait_stat(&pins, STAT_DNS_LEARNED, learned + 2), learned + 2);
    probe(&with(&inside, &["tcp", "198.51.100.8:8080"])).assert_eperm("a name without a rule");
}

/// An echo server on port 9090 of an address in the namespace (outside the cgroup), killed on
/// drop.
struct Echo(Child);

impl Echo {
    /// Starts the server on `addr`:9090 and waits until it listens.
    fn start(ns: &NetNs, addr: &str) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "python3", "-c", ECHO, addr])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("echo server");
        assert_eq!(line.trim(), "listening", "the echo server on {addr}");
        Self(child)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const ECHO: &str = r#"
import socket, sys, threading
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((sys.argv[1], 9090))
l.listen(8)
print("listening", flush=True)
def serve(c):
    while True:
        d = c.recv(100)
        if not d:
            return
        c.sendall(d)
while True:
    c, _ = l.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// With "resolve" as its second argument, resolves `allowed.example`; connects to port 9090 of
/// its first argument, exchanges one message, says "connected" and the socket's cookie, waits
/// for a line on stdin, then exchanges another and says "ok" or "timeout".
const LONG_CLIENT: &str = r#"
import socket, struct, sys
if sys.argv[2] == "resolve":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    q = b"\x07allowed\x07example\0\0\x01\0\x01"
    s.settimeout(3.0)
    s.sendto(struct.pack(">HHHHHH", 0x2222, 0x0100, 1, 0, 0, 0) + q, ("198.51.100.53", 53))
    s.recv(2048)
c = socket.create_connection((sys.argv[1], 9090), timeout=3.0)
c.sendall(b"a")
assert c.recv(10) == b"a"
SO_COOKIE = 57
cookie = struct.unpack("=Q", c.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8))[0]
print("connected", cookie, flush=True)
sys.stdin.readline()
c.settimeout(3.0)
try:
    c.sendall(b"b")
    print("ok" if c.recv(10) == b"b" else "wrong", flush=True)
except (socket.timeout, OSError) as e:
    print("timeout", e, flush=True)
"#;

fn active_bindings(pin_dir: &Path) -> HashMap<MapData, BindingKey, Binding> {
    let data = MapData::from_pin(pin_dir.join("maps/ACTIVE_SLOT")).expect("ACTIVE_SLOT");
    let active = Array::<_, u32>::try_from(Map::Array(data))
        .expect("array")
        .get(&0, 0)
        .expect("active slot")
        & 1;
    let data =
        MapData::from_pin(pin_dir.join(format!("maps/BINDINGS_{active}"))).expect("BINDINGS");
    HashMap::try_from(Map::LruHashMap(data)).expect("bindings")
}

/// The pinned `SOCK_CONNECTED` map: the TCP connect verdicts the tables decided, by cookie.
fn connected_verdicts(pin_dir: &Path) -> HashMap<MapData, u64, SockVerdict> {
    let data = MapData::from_pin(pin_dir.join("maps/SOCK_CONNECTED")).expect("SOCK_CONNECTED");
    HashMap::try_from(Map::HashMap(data)).expect("a hash")
}

/// Waits up to 5 s for `cookie`'s entry in `table` to go (its socket destroyed).
fn wait_forgotten(table: &HashMap<MapData, u64, SockVerdict>, cookie: u64, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while table.get(&cookie, 0).is_ok() {
        assert!(
            Instant::now() < deadline,
            "a closed socket's entry is still in SOCK_CONNECTED {when}"
        );
        sleep(Duration::from_millis(100));
    }
}

/// [`LONG_CLIENT`] in the scenario's cgroup and namespace, connected; killed on drop.
struct LongClient {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
    /// The connected socket's cookie.
    cookie: u64,
}

impl LongClient {
    /// Connects to `addr`:9090 (after resolving `allowed.example` with `resolve`).
    fn connect(s: &Scenario, addr: &str, resolve: bool) -> Self {
        let join = format!(
            "echo $$ > '{}/cgroup.procs' && exec ip netns exec '{}' python3 -c \"$0\" \"$@\"",
            s.cg.path.display(),
            s.ns.name
        );
        let mut child = Command::new("sh")
            .args(["-c", &join, LONG_CLIENT, addr])
            .arg(if resolve { "resolve" } else { "direct" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("client");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("client output");
        let cookie = match line.split_whitespace().collect::<Vec<_>>()[..] {
            ["connected", cookie] => cookie.parse().expect("a cookie"),
            _ => panic!("the client did not connect to {addr}: {line:?}"),
        };
        Self { child, out, cookie }
    }

    /// Lets the client exchange its second message and end; "ok" when it went both ways.
    fn exchange(&mut self) -> String {
        self.child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"go\n")
            .expect("signal");
        let mut line = String::new();
        self.out.read_line(&mut line).expect("client output");
        let _ = self.child.wait();
        line.trim().to_owned()
    }
}

impl Drop for LongClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_connection_allowed_through_a_name_outlives_its_binding() {
    let s = Scenario::start(ScenarioSpec::new("oe-nkv", ADDRS, "--enforce", POLICY));
    let _dns = Dnsmasq::start(&s.ns);
    let pins = s.daemon.pin_dir.clone();
    allow_name(&pins, "allowed.example");
    let _echo = Echo::start(&s.ns, "198.51.100.7");
    let mut client = LongClient::connect(&s, "198.51.100.7", true);
    // A binding's verdict is socket storage, never in the hash of the tables' verdicts.
    assert!(
        connected_verdicts(&pins).get(&client.cookie, 0).is_err(),
        "a domain verdict in SOCK_CONNECTED"
    );

    // The binding goes (as at TTL expiry): new connections fall through to the default.
    let mut bindings = active_bindings(&pins);
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&[198, 51, 100, 7]);
    let key = BindingKey {
        addr,
        family: FAMILY_IPV4,
        reserved: 0,
    };
    bindings.remove(&key).expect("the learned binding");
    probe(&with(&s.inside(&[]), &["tcp", "198.51.100.7:9090"]))
        .assert_eperm("a new connection without a binding");

    // The established one keeps flowing: the backstop takes the socket's stored verdict.
    assert_eq!(
        client.exchange(),
        "ok",
        "the established connection was cut"
    );
}

#[test]
fn a_connect_verdict_of_the_tables_is_kept_by_cookie_and_goes_with_its_socket() {
    let s = Scenario::start(ScenarioSpec::new("oe-nkc", ADDRS, "--enforce", POLICY));
    let pins = s.daemon.pin_dir.clone();
    let _echo = Echo::start(&s.ns, "198.51.100.53");
    let mut client = LongClient::connect(&s, "198.51.100.53", false);

    let table = connected_verdicts(&pins);
    let v = table
        .get(&client.cookie, 0)
        .expect("the tables' verdict of a TCP connect, by the socket's cookie");
    let mut daddr = [0u8; 16];
    daddr[..4].copy_from_slice(&[198, 51, 100, 53]);
    assert_eq!(
        (v.direction, v.origin, v.action, v.family, v.daddr),
        (
            SOCK_OUTBOUND,
            ORIGIN_TABLES,
            ACTION_ALLOW,
            FAMILY_IPV4,
            daddr
        ),
        "the kept verdict"
    );
    assert_ne!(v.generation, 0, "the kept verdict's generation");
    assert_eq!(
        client.exchange(),
        "ok",
        "the connection by its kept verdict"
    );

    // The client is gone: once its socket is destroyed (after the closing handshake), so is
    // the entry.
    wait_forgotten(&table, client.cookie, "after the connection closed");
}

#[test]
fn connect_verdicts_are_forgotten_while_pinned_enforcement_runs_without_a_daemon() {
    let mut s = Scenario::start(ScenarioSpec::new("oe-nkp", ADDRS, "--enforce", POLICY));
    let pins = s.daemon.pin_dir.clone();
    let _echo = Echo::start(&s.ns, "198.51.100.53");
    assert!(s.daemon.stop(), "the daemon stopped cleanly");
    let mut client = LongClient::connect(&s, "198.51.100.53", false);
    let table = connected_verdicts(&pins);
    assert!(
        table.get(&client.cookie, 0).is_ok(),
        "no entry for a connect under pinned enforcement"
    );
    assert_eq!(
        client.exchange(),
        "ok",
        "the connection under pinned enforcement"
    );
    // The cleanup link is pinned with the others: the entry goes with the socket.
    wait_forgotten(&table, client.cookie, "while no daemon runs");
}

#[test]
fn a_full_table_of_connect_verdicts_breaks_no_connection() {
    let s = Scenario::start(ScenarioSpec::new("oe-nkf", ADDRS, "--enforce", POLICY));
    let pins = s.daemon.pin_dir.clone();
    let _echo = Echo::start(&s.ns, "198.51.100.53");
    // Cookies no socket has (the kernel counts them up from 1): the table is full.
    let mut table = connected_verdicts(&pins);
    let filler = SockVerdict::default();
    for i in 0..u64::from(SOCK_CONNECTED_ENTRIES) {
        if let Err(e) = table.insert(u64::MAX - i, filler, 0) {
            // Entries of sockets the test machine made meanwhile may take a few places.
            assert!(i > 0, "filling SOCK_CONNECTED: {e}");
            break;
        }
    }
    let mut client = LongClient::connect(&s, "198.51.100.53", false);
    assert!(
        table.get(&client.cookie, 0).is_err(),
        "an entry in a full SOCK_CONNECTED"
    );
    assert_eq!(
        client.exchange(),
        "ok",
        "a connection whose verdict went to socket storage"
    );
}

/// Asks for `name` over TCP (the two-byte length, then the query) and prints the answer size.
const TCP_CLIENT: &str = r#"
import socket, struct, sys
name = sys.argv[1]
q = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0\0\x01\0\x01"
m = struct.pack(">HHHHHH", 0x3333, 0x0100, 1, 0, 0, 0) + q
c = socket.create_connection(("198.51.100.53", 53), timeout=3.0)
c.sendall(struct.pack(">H", len(m)) + m)
n = struct.unpack(">H", c.recv(2, socket.MSG_WAITALL))[0]
print("answer", len(c.recv(n, socket.MSG_WAITALL)))
"#;

#[test]
fn answers_over_tcp_are_learned() {
    let s = Scenario::start(ScenarioSpec::new("oe-nkt", ADDRS, "--enforce", POLICY));
    let _dns = Dnsmasq::start(&s.ns);
    let pins = s.daemon.pin_dir.clone();
    let inside = s.inside(LISTEN);
    allow_name(&pins, "allowed.example");
    probe(&with(&inside, &["tcp", "198.51.100.7:8080"])).assert_eperm("before the answer");
    let learned = stat(&pins, STAT_DNS_LEARNED);
    python_client(&s, TCP_CLIENT, "allowed.example", "the TCP DNS client");
    assert_eq!(
        wait_stat(&pins, STAT_DNS_LEARNED, learned + 1),
        learned + 1,
        "the TCP answer was not learned"
    );
    probe(&with(&inside, &["tcp", "198.51.100.7:8080"])).assert_ok("after the TCP answer");
}

/// Asks the IPv6 resolver for the AAAA record of `name` over UDP.
const V6_CLIENT: &str = r#"
import socket, struct, sys
name = sys.argv[1]
q = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0\0\x1c\0\x01"
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.settimeout(3.0)
s.sendto(struct.pack(">HHHHHH", 0x6666, 0x0100, 1, 0, 0, 0) + q, ("2001:db8::53", 53))
print("answer", len(s.recv(2048)))
"#;

#[test]
fn aaaa_answers_from_an_ipv6_resolver_bind_ipv6_addresses() {
    const ADDRS6: &[&str] = &["2001:db8::53/128", "2001:db8::7/128"];
    const POLICY6: &str = r#"
default = "deny"

[allow]
cidrs = ["2001:db8::53/128"]
"#;
    let s = Scenario::start(ScenarioSpec::new("oe-nk6", ADDRS6, "--enforce", POLICY6));
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &s.ns.name,
            "dnsmasq",
            "--keep-in-foreground",
        ])
        .args([
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--port=53",
        ])
        .args([
            "--listen-address=2001:db8::53",
            "--pid-file=",
            "--user=root",
        ])
        .args(["--address=/allowed.example/2001:db8::7"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq");
    let _dns = Dnsmasq(child);
    sleep(Duration::from_millis(500));
    let pins = s.daemon.pin_dir.clone();
    let inside = s.inside(&["[2001:db8::7]:8080"]);
    allow_name(&pins, "allowed.example");
    probe(&with(&inside, &["tcp", "[2001:db8::7]:8080"])).assert_eperm("before the answer");
    let learned = stat(&pins, STAT_DNS_LEARNED);
    python_client(&s, V6_CLIENT, "allowed.example", "the IPv6 DNS client");
    assert_eq!(
        wait_stat(&pins, STAT_DNS_LEARNED, learned + 1),
        learned + 1,
        "the AAAA answer was not learned"
    );
    probe(&with(&inside, &["tcp", "[2001:db8::7]:8080"])).assert_ok("after the AAAA answer");
}

/// Runs the python3 DNS client `script` with `name` inside the scenario's cgroup and namespace;
/// `what` names it when it fails.
fn python_client(s: &Scenario, script: &str, name: &str, what: &str) {
    let join = format!(
        "echo $$ > '{}/cgroup.procs' && exec ip netns exec '{}' python3 -c \"$0\" \"$@\"",
        s.cg.path.display(),
        s.ns.name
    );
    let out = Command::new("sh")
        .args(["-c", &join, script, name])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
