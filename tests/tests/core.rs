//! The core path against the real kernel: enforce, monitor, precedence, the cgroup_skb
//! backstop, children, `--process`, and an invalid policy.

use std::{process::Command, time::Duration};

use ollama_egress::loader::{AttachPoint, attached_program_ids};
use ollama_egress_tests::{
    Daemon, NetNs, Scenario, ScenarioSpec, SpawnRetryingBusy as _, TestCgroup, probe, require_root,
    unique, with, write_policy,
};
use serde_json::Value;

/// Hosts of the test namespace: allowed and denied, both families.
const ADDRS: &[&str] = &[
    "192.0.2.1/32",
    "203.0.113.7/32",
    "198.51.100.1/32",
    "2001:db8::1/128",
    "2001:db8::dead/128",
];
const LISTEN: &[&str] = &[
    "192.0.2.1:8080",
    "203.0.113.7:8080",
    "198.51.100.1:8080",
    "[2001:db8::1]:8080",
    "[2001:db8::dead]:8080",
];

const DENY_POLICY: &str = r#"
default = "allow"

[deny]
cidrs = ["203.0.113.0/24", "2001:db8::dead/128"]
"#;

fn is(ev: &Value, verdict: &str, dst: &str) -> bool {
    ev["verdict"] == verdict && ev["dst"] == dst
}

#[test]
fn enforce_refuses_denied_destinations_at_once_and_allows_the_rest() {
    let s = Scenario::start(ScenarioSpec::new("oe-enf", ADDRS, "--enforce", DENY_POLICY));
    let d = &s.daemon;

    let inside = s.inside(LISTEN);
    let tcp4 = probe(&with(&inside, &["tcp", "203.0.113.7:8080"]));
    tcp4.assert_eperm("TCP over IPv4");
    probe(&with(&inside, &["tcp", "[2001:db8::dead]:8080"])).assert_eperm("TCP over IPv6");
    probe(&with(&inside, &["tcp", "[::ffff:203.0.113.7]:8080"]))
        .assert_eperm("TCP to a v4-mapped address");
    probe(&with(&inside, &["udp", "203.0.113.7:5353"])).assert_eperm("UDP sendto");
    probe(&with(&inside, &["udp", "[2001:db8::dead]:5353"])).assert_eperm("UDP sendto over IPv6");
    probe(&with(&inside, &["udp-connected", "203.0.113.7:5353"])).assert_eperm("connected UDP");

    probe(&with(&inside, &["tcp", "192.0.2.1:8080"])).assert_ok("allowed TCP over IPv4");
    probe(&with(&inside, &["tcp", "[2001:db8::1]:8080"])).assert_ok("allowed TCP over IPv6");
    probe(&with(&inside, &["udp", "192.0.2.1:5353"])).assert_ok("allowed UDP");

    let outside = s.outside(LISTEN);
    probe(&with(&outside, &["tcp", "203.0.113.7:8080"]))
        .assert_ok("denied address from outside the cgroup");
    probe(&with(&outside, &["tcp", "[2001:db8::dead]:8080"]))
        .assert_ok("denied IPv6 address from outside");

    let blocked = d.wait_events(5, |e| e["verdict"] == "blocked");
    assert_eq!(
        blocked.len(),
        6,
        "one blocked event per refused decision: {blocked:#?}"
    );
    let first = blocked
        .iter()
        .find(|e| is(e, "blocked", "203.0.113.7") && e["proto"] == "tcp")
        .expect("blocked TCP event");
    assert_eq!(first["rule"], "deny.cidrs:203.0.113.0/24");
    assert_eq!(first["mode"], "enforce");
    assert_eq!(first["comm"], "egress-probe");
    assert_eq!(first["pid"].as_u64(), Some(tcp4.pid()));
    assert_eq!(first["dport"], 8080);
    assert_eq!(first["family"], "ipv4");
    let v6 = blocked
        .iter()
        .find(|e| e["dst"] == "2001:db8::dead")
        .expect("IPv6 event");
    assert_eq!(v6["rule"], "deny.cidrs:2001:db8::dead/128");
    assert_eq!(v6["family"], "ipv6");
    assert!(
        blocked.iter().any(|e| e["proto"] == "udp"),
        "UDP events: {blocked:#?}"
    );
    let allowed = d.wait_events(3, |e| e["verdict"] == "allowed");
    assert!(
        allowed.iter().all(|e| e["rule"] == "default"),
        "{allowed:#?}"
    );
    // Nothing from outside the cgroup is recorded.
    let n_before = d.events().len();
    assert_eq!(n_before, blocked.len() + allowed.len(), "{:#?}", d.events());
}

#[test]
fn monitor_lets_everything_through_and_records_would_block() {
    let s = Scenario::start(ScenarioSpec::new("oe-mon", ADDRS, "--monitor", DENY_POLICY));
    let d = &s.daemon;

    let inside = s.inside(LISTEN);
    let tcp4 = probe(&with(&inside, &["tcp", "203.0.113.7:8080"]));
    tcp4.assert_ok("monitored TCP over IPv4");
    probe(&with(&inside, &["tcp", "[2001:db8::dead]:8080"])).assert_ok("monitored TCP over IPv6");
    probe(&with(&inside, &["tcp", "[::ffff:203.0.113.7]:8080"])).assert_ok("monitored v4-mapped");
    probe(&with(&inside, &["udp", "203.0.113.7:5353", "--count", "5"])).assert_ok("monitored UDP");
    probe(&with(&inside, &["raw-ping", "203.0.113.7"])).assert_ok("monitored raw ICMP");

    let wb = d.wait_events(5, |e| e["verdict"] == "would_block");
    assert_eq!(
        wb.len(),
        5,
        "five datagrams from one socket are one decision; the raw ICMP packet is one: {wb:#?}"
    );
    assert_eq!(
        wb.iter().filter(|e| e["proto"] == "1").count(),
        1,
        "the backstop reports the raw packet: {wb:#?}"
    );
    let tcp_ev = wb
        .iter()
        .find(|e| {
            e["proto"] == "tcp"
                && e["dst"] == "203.0.113.7"
                && e["pid"].as_u64() == Some(tcp4.pid())
        })
        .expect("would_block TCP event of the probe");
    assert_eq!(tcp_ev["rule"], "deny.cidrs:203.0.113.0/24");
    assert_eq!(tcp_ev["mode"], "monitor");
    assert_eq!(tcp_ev["comm"], "egress-probe");
    assert!(
        wb.iter()
            .any(|e| e["dst"] == "2001:db8::dead" && e["rule"] == "deny.cidrs:2001:db8::dead/128")
    );
    assert!(
        !d.events().iter().any(|e| e["verdict"] == "blocked"),
        "monitor never blocks"
    );
}

#[test]
fn longest_prefix_wins_deny_wins_a_tie_and_default_decides_the_rest() {
    let s = Scenario::start(ScenarioSpec {
        name: "oe-prec",
        addrs: &[
            "203.0.113.7/32",
            "203.0.113.8/32",
            "192.0.2.1/32",
            "198.51.100.1/32",
        ],
        mode: "--enforce",
        policy: r#"
default = "deny"
[allow]
cidrs = ["203.0.113.7/32", "192.0.2.1/32"]
[deny]
cidrs = ["203.0.113.0/24", "192.0.2.1/32"]
"#,
        geo: false,
        extra: &[],
    });
    let d = &s.daemon;
    let inside = s.inside(&["203.0.113.7:8080", "192.0.2.1:8080"]);
    probe(&with(&inside, &["tcp", "203.0.113.7:8080"]))
        .assert_ok("a /32 allow inside a denied /24");
    probe(&with(&inside, &["tcp", "203.0.113.8:8080"])).assert_eperm("the rest of the denied /24");
    probe(&with(&inside, &["tcp", "192.0.2.1:8080"]))
        .assert_eperm("allow and deny of the same prefix");
    probe(&with(&inside, &["tcp", "198.51.100.1:8080"]))
        .assert_eperm("unmatched under default deny");

    let evs = d.wait_events(4, |_| true);
    let rule_of = |dst: &str| {
        evs.iter().find(|e| e["dst"] == dst).map(|e| {
            (
                e["verdict"].as_str().unwrap_or("").to_owned(),
                e["rule"].as_str().unwrap_or("").to_owned(),
            )
        })
    };
    assert_eq!(
        rule_of("203.0.113.7"),
        Some(("allowed".into(), "allow.cidrs:203.0.113.7/32".into()))
    );
    assert_eq!(
        rule_of("203.0.113.8"),
        Some(("blocked".into(), "deny.cidrs:203.0.113.0/24".into()))
    );
    assert_eq!(
        rule_of("192.0.2.1"),
        Some(("blocked".into(), "deny.cidrs:192.0.2.1/32".into()))
    );
    assert_eq!(
        rule_of("198.51.100.1"),
        Some(("blocked".into(), "default".into()))
    );
}

#[test]
fn cgroup_skb_drops_what_bypasses_the_sock_addr_hooks() {
    let s = Scenario::start(ScenarioSpec::new("oe-raw", ADDRS, "--enforce", DENY_POLICY));
    let d = &s.daemon;

    let inside = s.inside(&[]);
    let outside = s.outside(&[]);
    // Raw sockets pass no connect/sendmsg hook: only the egress program sees these packets.
    probe(&with(&outside, &["raw-ping", "203.0.113.7"]))
        .assert_ok("raw ICMP from outside the cgroup");
    probe(&with(&inside, &["raw-ping", "192.0.2.1"])).assert_ok("raw ICMP to an allowed host");
    let denied = probe(&with(&inside, &["raw-ping", "203.0.113.7"]));
    assert!(
        !denied.ok(),
        "raw ICMP to a denied host got a reply: {}",
        denied.json
    );
    // The backstop's drop is an event of its own (see tests/bypass.rs for the details).
    let evs = d.wait_events(1, |e| e["dst"] == "203.0.113.7");
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0]["verdict"], "blocked");
}

#[test]
fn children_of_the_target_are_covered() {
    let s = Scenario::start(ScenarioSpec::new(
        "oe-child",
        ADDRS,
        "--enforce",
        DENY_POLICY,
    ));
    let d = &s.daemon;
    let inside = s.inside(&[]);
    let child = probe(&with(&inside, &["fork-tcp", "203.0.113.7:8080"]));
    child.assert_eperm("TCP from a forked child");
    let evs = d.wait_events(1, |e| e["verdict"] == "blocked");
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(
        evs[0]["pid"].as_u64(),
        Some(child.pid()),
        "the event names the child"
    );
}

#[test]
fn process_target_moves_existing_and_new_processes() {
    require_root();
    let ns = NetNs::new("oe-proc", ADDRS);
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = write_policy(tmp.path(), DENY_POLICY);
    // A copy of the probe under a unique name: its comm is what --process looks for.
    let name = format!("oep{:x}", std::process::id() % 0xfffff);
    let bin = ollama_egress_tests::named_copy(&ollama_egress_tests::probe_bin(), tmp.path(), &name);
    let managed = unique("oe-managed");
    let mount = ollama_egress::targeting::cgroup2_mount().expect("cgroup2");
    let _managed = TestCgroup::adopt(mount.join(&managed));
    let start_probe = |delay_ms: &str| {
        Command::new(&bin)
            .args([
                "--netns",
                &ns.name,
                "--delay-ms",
                delay_ms,
                "tcp",
                "203.0.113.7:8080",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn_retrying_busy()
    };
    // Running before the daemon starts.
    let early = start_probe("4000");
    let mut d = Daemon::start(&[
        "--enforce",
        "--process",
        &name,
        "--managed-cgroup",
        &managed,
        "--policy",
        policy.to_str().expect("utf8"),
    ]);
    // Started after the daemon: picked up within a second.
    std::thread::sleep(Duration::from_millis(200));
    let late = start_probe("1500");
    for (what, child) in [
        ("process started before the daemon", early),
        ("process started after the daemon", late),
    ] {
        let out = child.wait_with_output().expect("probe output");
        let json: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            json["errno"].as_i64(),
            Some(i64::from(libc::EPERM)),
            "{what}: {json}\n{}",
            d.stderr_text()
        );
    }
    let evs = d.wait_events(2, |e| {
        e["verdict"] == "blocked" && e["comm"] == name.as_str()
    });
    assert_eq!(evs.len(), 2, "{evs:#?}");
    assert!(d.stop(), "daemon exits cleanly on SIGTERM");
}

#[test]
fn an_invalid_policy_is_refused_and_nothing_is_attached() {
    require_root();
    let cg = TestCgroup::new("oe-bad");
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = write_policy(
        tmp.path(),
        "default = \"deny\"\n[deny]\ncidrs = [\"10.0.0.0/33\"]\n",
    );
    let out = Command::new(ollama_egress_tests::daemon_bin())
        .args(["run", "--enforce", "--cgroup"])
        .arg(&cg.path)
        .arg("--policy")
        .arg(&policy)
        .arg("--log-dir")
        .arg(tmp.path().join("log"))
        .output()
        .expect("run ollama-egress");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an invalid policy must fail: {stderr}"
    );
    assert!(stderr.contains("line 3"), "names the line: {stderr}");
    assert!(stderr.contains("10.0.0.0/33"), "names the value: {stderr}");
    for point in AttachPoint::ALL {
        let ids = attached_program_ids(&cg.path, point).expect("query");
        assert!(ids.is_empty(), "{point:?} has programs attached: {ids:?}");
    }
}

#[test]
fn ipv6_routing_headers_and_unreadable_header_chains_are_dropped() {
    let s = Scenario::start(ScenarioSpec::new("oe-rh", ADDRS, "--enforce", DENY_POLICY));
    let d = &s.daemon;
    let inside = s.inside(&[]);
    let blocked = || {
        ollama_egress_tests::metric_value(
            &d.metrics(),
            "ollama_egress_packets_total{direction=\"egress\",verdict=\"blocked\"}",
        )
        .expect("blocked packets series")
    };
    let raw6 = |kind: &str| {
        probe(&with(
            &inside,
            &["raw6", "2001:db8::1", "2001:db8::1", "--kind", kind],
        ))
    };
    let before = blocked();
    raw6("plain").assert_ok("a plain IPv6 packet to an allowed host");
    assert_eq!(blocked(), before, "the plain packet is not dropped");
    let routed = raw6("routing");
    assert_eq!(
        routed.errno(),
        Some(libc::EPERM),
        "routing header: {}",
        routed.json
    );
    let truncated = raw6("truncated");
    assert_eq!(
        truncated.errno(),
        Some(libc::EPERM),
        "unreadable header chain: {}",
        truncated.json
    );
    assert_eq!(
        blocked(),
        before + 2.0,
        "both packets were dropped by the egress program"
    );
}
