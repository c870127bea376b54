//! Bypass attempts against the kernel programs: IPv4 addresses in IPv6 form (NAT64, 6to4,
//! IPv4-compatible, IPv4-translated), IPv4 source routes, IPv6 routing headers behind long
//! extension header chains, and drops of the cgroup_skb backstop that must be events.
//!
//! Each denied host lives in the test's namespace with a listener outside the cgroup that
//! reports whether anything arrived.

use std::process::Command;

use ollama_egress_tests::{Scenario, ScenarioSpec, metric_value, probe, with};
use serde_json::Value;

const DENY_POLICY: &str = r#"
default = "allow"

[deny]
cidrs = ["203.0.113.0/24"]
"#;

/// IPv6 forms of the denied host 203.0.113.7.
const V6_FORMS: &[&str] = &[
    "64:ff9b::cb00:7107",
    "64:ff9b:1::cb00:7107",
    "2002:cb00:7107::1",
    "::cb00:7107",
    "::ffff:0:cb00:7107",
];

const NOBODY: &str = "65534";

fn blocked_packets(s: &Scenario) -> f64 {
    metric_value(
        &s.daemon.metrics(),
        "ollama_egress_packets_total{direction=\"egress\",verdict=\"blocked\"}",
    )
    .expect("blocked packets series")
}

fn count(p: &ollama_egress_tests::Probe, field: &str) -> u64 {
    p.json[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {}", p.json))
}

#[test]
fn ipv4_in_ipv6_forms_are_judged_as_ipv4_for_an_unprivileged_user() {
    let addrs: Vec<String> = V6_FORMS
        .iter()
        .map(|a| format!("{a}/128"))
        .chain(["64:ff9b::c000:201/128".to_owned()])
        .collect();
    let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let s = Scenario::start(ScenarioSpec::new(
        "oe-nat64",
        &addrs,
        "--enforce",
        DENY_POLICY,
    ));
    for form in V6_FORMS {
        let udp = format!("[{form}]:5353");
        let tcp = format!("[{form}]:8080");
        let listen_udp = ["--listen-udp", udp.as_str()];
        let tcp_listen = [tcp.as_str()];

        // The listener works: from outside the cgroup the datagram and connection arrive.
        let out = probe(&with(
            &with(&s.outside(&tcp_listen), &listen_udp),
            &["--uid", NOBODY, "udp", &udp],
        ));
        out.assert_ok(&format!("UDP to {form} from outside the cgroup"));
        assert_eq!(count(&out, "udp_received"), 1, "{form}: {}", out.json);
        let out = probe(&with(
            &s.outside(&tcp_listen),
            &["--uid", NOBODY, "tcp", &tcp],
        ));
        out.assert_ok(&format!("TCP to {form} from outside the cgroup"));
        assert_eq!(count(&out, "tcp_accepted"), 1, "{form}: {}", out.json);

        // Inside the cgroup, as nobody: refused at once, nothing arrives.
        let udp_in = probe(&with(
            &with(&s.inside(&tcp_listen), &listen_udp),
            &["--uid", NOBODY, "udp", &udp, "--count", "3"],
        ));
        udp_in.assert_eperm(&format!("UDP as nobody to {form}"));
        assert_eq!(count(&udp_in, "udp_received"), 0, "{form}: {}", udp_in.json);
        let tcp_in = probe(&with(
            &s.inside(&tcp_listen),
            &["--uid", NOBODY, "tcp", &tcp],
        ));
        tcp_in.assert_eperm(&format!("TCP as nobody to {form}"));
        assert_eq!(count(&tcp_in, "tcp_accepted"), 0, "{form}: {}", tcp_in.json);
    }
    // One blocked event per refused decision, naming the IPv4 host and the rule that denies it.
    let n = 2 * V6_FORMS.len();
    let evs = s.daemon.wait_events(n, |e| e["verdict"] == "blocked");
    assert_eq!(evs.len(), n, "{evs:#?}");
    for e in &evs {
        assert_eq!(e["dst"], "203.0.113.7", "{e}");
        assert_eq!(e["family"], "ipv4", "{e}");
        assert_eq!(e["rule"], "deny.cidrs:203.0.113.0/24", "{e}");
        assert_eq!(e["uid"], 65534, "{e}");
    }
    // An allowed IPv4 host in NAT64 form still goes through.
    let ok = probe(&with(
        &s.inside(&["[64:ff9b::c000:201]:8080"]),
        &["--uid", NOBODY, "tcp", "[64:ff9b::c000:201]:8080"],
    ));
    ok.assert_ok("TCP as nobody to 64:ff9b::192.0.2.1");
    assert_eq!(count(&ok, "tcp_accepted"), 1, "{}", ok.json);
}

#[test]
fn ipv4_in_ipv6_forms_are_dropped_by_the_backstop() {
    let addrs: Vec<String> = V6_FORMS.iter().map(|a| format!("{a}/128")).collect();
    let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let s = Scenario::start(ScenarioSpec::new(
        "oe-nat64raw",
        &addrs,
        "--enforce",
        DENY_POLICY,
    ));
    let inside = s.inside(&[]);
    let before = blocked_packets(&s);
    for form in V6_FORMS {
        // A raw socket passes no sock_addr hook: only the egress program sees the packet.
        let raw = probe(&with(&inside, &["raw6", form, form, "--kind", "plain"]));
        assert_eq!(
            raw.errno(),
            Some(libc::EPERM),
            "raw IPv6 to {form}: {}",
            raw.json
        );
    }
    assert_eq!(
        blocked_packets(&s),
        before + V6_FORMS.len() as f64,
        "every packet was dropped by the egress program"
    );
}

#[test]
fn policy_check_explains_ipv4_in_ipv6_forms_as_ipv4() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = ollama_egress_tests::write_policy(tmp.path(), DENY_POLICY);
    let mut cmd = Command::new(ollama_egress_tests::daemon_bin());
    cmd.args(["policy", "check"]).arg(&policy);
    for form in V6_FORMS {
        cmd.args(["--explain", form]);
    }
    let out = cmd.output().expect("run policy check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for form in V6_FORMS {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{form} ")) || l.starts_with(&format!("{form}:")))
            .unwrap_or_else(|| panic!("no line for {form}: {text}"));
        assert!(
            line.ends_with("deny by deny.cidrs:203.0.113.0/24") && line.contains("203.0.113.7"),
            "{line}"
        );
    }
}

#[test]
fn ipv4_source_routes_are_dropped_with_an_event() {
    let s = Scenario::start(ScenarioSpec::new(
        "oe-srr",
        &["192.0.2.1/32", "198.51.100.1/32", "203.0.113.7/32"],
        "--enforce",
        DENY_POLICY,
    ));
    let inside = s.inside(&[]);
    probe(&with(&inside, &["udp", "198.51.100.1:5353"])).assert_ok("plain UDP to an allowed host");
    // A record-route option routes nowhere: the options walk lets it pass.
    probe(&with(
        &inside,
        &[
            "udp-opts",
            "198.51.100.1:5353",
            "--kind",
            "rr",
            "--hops",
            "0.0.0.0,0.0.0.0",
        ],
    ))
    .assert_ok("record-route option to an allowed host");
    let before = blocked_packets(&s);
    // Sent to an allowed host through an allowed first hop, but the route visits the denied host.
    for kind in ["lsrr", "ssrr"] {
        let out = probe(&with(
            &inside,
            &[
                "udp-opts",
                "198.51.100.1:5353",
                "--kind",
                kind,
                "--hops",
                "192.0.2.1,203.0.113.7",
            ],
        ));
        assert_eq!(out.errno(), Some(libc::EPERM), "{kind}: {}", out.json);
    }
    assert_eq!(
        blocked_packets(&s),
        before + 2.0,
        "both dropped by the egress program"
    );
    let evs = s.daemon.wait_events(2, |e| {
        e["verdict"] == "blocked" && e["rule"] == "ipv4-source-route"
    });
    assert_eq!(evs.len(), 2, "{:#?}", s.daemon.events());
    for e in &evs {
        assert_eq!(e["proto"], "udp", "{e}");
        assert_eq!(e["dst"], "192.0.2.1", "{e}");
        assert_eq!(e["dport"], 5353, "{e}");
    }
}

#[test]
fn a_routing_header_behind_many_extension_headers_is_dropped() {
    let s = Scenario::start(ScenarioSpec::new(
        "oe-rh9",
        &["2001:db8::1/128"],
        "--enforce",
        DENY_POLICY,
    ));
    let inside = s.inside(&[]);
    let raw6 = |kind: &str| {
        probe(&with(
            &inside,
            &["raw6", "2001:db8::1", "2001:db8::1", "--kind", kind],
        ))
    };
    let before = blocked_packets(&s);
    raw6("dest-opts:8").assert_ok("eight destination-options headers, then ICMPv6");
    assert_eq!(blocked_packets(&s), before);
    for kind in [
        "dest-opts-routing:2",
        "dest-opts-routing:7",
        "dest-opts-routing:8",
        "dest-opts:9",
    ] {
        let out = raw6(kind);
        assert_eq!(out.errno(), Some(libc::EPERM), "{kind}: {}", out.json);
    }
    assert_eq!(blocked_packets(&s), before + 4.0);
    let evs = s
        .daemon
        .wait_events(4, |e| e["rule"] == "ipv6-routing-header");
    assert_eq!(evs.len(), 4, "{:#?}", s.daemon.events());
}

#[test]
fn every_backstop_drop_is_an_event_once_per_socket_and_destination() {
    let s = Scenario::start(ScenarioSpec::new(
        "oe-rawev",
        &["192.0.2.1/32", "203.0.113.7/32"],
        "--enforce",
        DENY_POLICY,
    ));
    let inside = s.inside(&[]);
    probe(&with(&inside, &["raw-ping", "192.0.2.1"])).assert_ok("raw ICMP to an allowed host");
    let before = blocked_packets(&s);
    let denied = probe(&with(&inside, &["raw-ping", "203.0.113.7", "--count", "5"]));
    assert_eq!(denied.errno(), Some(libc::EPERM), "{}", denied.json);
    assert_eq!(blocked_packets(&s), before + 5.0, "every drop is counted");
    let is_drop = |e: &Value| e["dst"] == "203.0.113.7";
    let evs = s.daemon.wait_events(2, is_drop);
    assert_eq!(
        evs.len(),
        1,
        "five drops from one socket are one event: {evs:#?}"
    );
    let e = &evs[0];
    assert_eq!(e["verdict"], "blocked");
    assert_eq!(e["proto"], "1");
    assert_eq!(e["rule"], "deny.cidrs:203.0.113.0/24");
    assert_eq!(e["uid"], 0);
    assert_eq!(e["pid"].as_u64(), Some(denied.pid()));
    assert_eq!(e["comm"], "egress-probe");
    // Another socket: another event.
    let again = probe(&with(&inside, &["raw-ping", "203.0.113.7"]));
    assert_eq!(again.errno(), Some(libc::EPERM), "{}", again.json);
    let evs = s.daemon.wait_events(2, is_drop);
    assert_eq!(evs.len(), 2, "{evs:#?}");
    // Nothing allowed was reported by the backstop.
    assert!(
        s.daemon.events().iter().all(|e| e["dst"] != "192.0.2.1"),
        "{:#?}",
        s.daemon.events()
    );
}

#[test]
fn a_flood_of_backstop_drops_is_rate_bounded_and_every_drop_is_accounted_for() {
    let s = Scenario::start(ScenarioSpec::new(
        "oe-rawflood",
        &["2001:db8::1/128", "2001:db8:dead::1/48"],
        "--enforce",
        "default = \"allow\"\n[deny]\ncidrs = [\"2001:db8:dead::/48\"]\n",
    ));
    let unreported = || {
        let data = aya::maps::MapData::from_pin(s.daemon.pin_dir.join("maps/STATS"))
            .expect("pinned STATS map");
        let stats: aya::maps::PerCpuArray<_, u64> =
            aya::maps::PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data)).expect("STATS");
        stats
            .get(&ollama_egress_common::STAT_SKB_DROPS_UNREPORTED, 0)
            .expect("read STATS")
            .iter()
            .sum::<u64>()
    };
    let before_drops = blocked_packets(&s);
    let before_unreported = unreported();
    let n: u16 = 10_000;
    // 10,000 sockets: 10,000 drops, each the first of its (socket, destination).
    let out = probe(&with(
        &s.inside(&[]),
        &[
            "raw6-spray",
            "2001:db8::1",
            "2001:db8:dead::1",
            "--count",
            &n.to_string(),
        ],
    ));
    assert_eq!(count(&out, "successes"), 0, "{}", out.json);
    assert_eq!(out.errno(), Some(libc::EPERM), "{}", out.json);
    assert_eq!(
        blocked_packets(&s),
        before_drops + f64::from(n),
        "every drop counted"
    );
    let budget = ollama_egress_common::BACKSTOP_EVENTS_PER_SECOND;
    let cpus = u64::try_from(
        std::thread::available_parallelism()
            .map(std::num::NonZero::get)
            .unwrap_or(1),
    )
    .expect("cpus");
    // Budget windows are one second per CPU: a run shorter than k seconds touches at most
    // k + 1 of them on each CPU.
    let windows = out.elapsed().as_secs() + 2;
    // The events arrive; then nothing more comes.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let events = s
        .daemon
        .events()
        .iter()
        .filter(|e| e["rule"] == "deny.cidrs:2001:db8:dead::/48")
        .count() as u64;
    let unreported = unreported() - before_unreported;
    eprintln!(
        "{n} drops in {:?}: {events} events, {unreported} unreported",
        out.elapsed()
    );
    assert!(events >= 1, "the flood is reported");
    assert!(
        events <= budget * cpus * windows && events < u64::from(n),
        "{events} events for {n} drops in {:?} on {cpus} CPUs",
        out.elapsed()
    );
    assert_eq!(
        events + unreported,
        u64::from(n),
        "each drop is an event or counted as unreported ({events} + {unreported})"
    );
}

#[test]
fn monitor_mode_reports_what_the_backstop_would_drop_once() {
    let s = Scenario::start(ScenarioSpec::new(
        "oe-rawmon",
        &["203.0.113.7/32"],
        "--monitor",
        DENY_POLICY,
    ));
    let inside = s.inside(&["203.0.113.7:8080"]);
    // No reply is expected from the namespace's raw socket handling; only the events matter.
    let _ = probe(&with(&inside, &["raw-ping", "203.0.113.7", "--count", "3"]));
    probe(&with(&inside, &["udp", "203.0.113.7:5353", "--count", "3"])).assert_ok("monitored UDP");
    probe(&with(&inside, &["tcp", "203.0.113.7:8080"])).assert_ok("monitored TCP");
    let evs = s.daemon.wait_events(4, |e| e["verdict"] == "would_block");
    // One per socket: the raw socket's from the backstop, the UDP and TCP sockets' from their
    // sendmsg/connect hooks only (their packets, also would-block, are not reported again).
    assert_eq!(evs.len(), 3, "{evs:#?}");
    for proto in ["1", "udp", "tcp"] {
        assert_eq!(
            evs.iter().filter(|e| e["proto"] == proto).count(),
            1,
            "{proto}: {evs:#?}"
        );
    }
    assert!(
        evs.iter().all(|e| e["rule"] == "deny.cidrs:203.0.113.0/24"),
        "{evs:#?}"
    );
}

#[test]
fn ipv4_options_are_walked_by_their_structure() {
    let s = Scenario::start(ScenarioSpec::new(
        "oe-opts",
        &["192.0.2.1/32", "203.0.113.7/32"],
        "--enforce",
        DENY_POLICY,
    ));
    let inside = s.inside(&[]);
    let raw4 = |options: &str| {
        probe(&with(
            &inside,
            &["raw4", "192.0.2.1", "192.0.2.1", "--options", options],
        ))
    };
    let lsrr = "8307047f000001"; // LSRR, length 7, pointer 4, one hop
    let passes = [
        // 40 NOPs: the longest option area, all of it walked.
        "01".repeat(40),
        // End of list, then bytes that would read as LSRR: receivers stop at the end.
        format!("00{lsrr}"),
        // Router alert, then the end.
        "94040000".to_owned(),
        // Record route with room for one address, then a NOP.
        "0707040000000001".to_owned(),
        // A timestamp option whose data holds 0x83 and 0x89 bytes.
        "440c0500838989830000000001000000".to_owned(),
    ];
    let before = blocked_packets(&s);
    for o in &passes {
        raw4(o).assert_ok(&format!("options {o}"));
    }
    assert_eq!(blocked_packets(&s), before);
    let denied = [
        format!("{lsrr}00"),
        format!("0101{lsrr}000000"),
        format!("94040000{lsrr}00"),
        // SSRR after a record-route option.
        "07070400000000018907047f00000100".to_owned(),
        // A length of 0, of 1, and one running past the option area.
        "07000000".to_owned(),
        "44010000".to_owned(),
        "0709040000000000".to_owned(),
    ];
    for o in &denied {
        let out = raw4(o);
        assert_eq!(out.errno(), Some(libc::EPERM), "options {o}: {}", out.json);
    }
    assert_eq!(blocked_packets(&s), before + denied.len() as f64);
    let evs = s
        .daemon
        .wait_events(denied.len(), |e| e["rule"] == "ipv4-source-route");
    assert_eq!(evs.len(), denied.len(), "{:#?}", s.daemon.events());
}
