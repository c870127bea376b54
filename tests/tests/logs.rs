//! `ollama-egress logs` and `status` against a log written by the real daemon.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use ollama_egress_tests::{Scenario, ScenarioSpec, daemon_bin, logs_json, probe, with};
use serde_json::Value;

const ADDRS: &[&str] = &["203.0.113.7/32", "198.51.100.1/32", "2001:db8::7/128"];
const LISTEN: &[&str] = &["203.0.113.7:8080", "198.51.100.1:8080", "[2001:db8::7]:443"];

#[test]
fn log_queries_return_exactly_the_matching_events_and_follow_sees_new_ones() {
    let s = Scenario::start(ScenarioSpec {
        geo: true,
        ..ScenarioSpec::new(
            "oe-logs",
            ADDRS,
            "--enforce",
            "default = \"allow\"\n[deny]\ncountries = [\"CN\"]\n",
        )
    });
    let d = &s.daemon;
    let inside = s.inside(LISTEN);
    for _ in 0..3 {
        probe(&with(&inside, &["tcp", "203.0.113.7:8080"])).assert_eperm("CN");
    }
    probe(&with(&inside, &["udp", "203.0.113.7:53"])).assert_eperm("CN over UDP");
    probe(&with(&inside, &["tcp", "198.51.100.1:8080"])).assert_ok("US");
    probe(&with(&inside, &["tcp", "[2001:db8::7]:443"])).assert_ok("DE");
    assert_eq!(d.wait_events(6, |_| true).len(), 6, "{:#?}", d.events());

    let all = logs_json(d, &[]);
    assert_eq!(all.len(), 6);
    assert_eq!(
        all,
        d.events(),
        "--json prints the file's schema, line for line"
    );
    let count = |args: &[&str]| logs_json(d, args).len();
    assert_eq!(count(&["--verdict", "blocked"]), 4);
    assert_eq!(count(&["--verdict", "allowed"]), 2);
    assert_eq!(count(&["--verdict", "would_block"]), 0);
    assert_eq!(
        count(&["--verdict", "blocked", "--since", "1h", "--country", "CN"]),
        4
    );
    assert_eq!(count(&["--country", "de"]), 1);
    assert_eq!(count(&["--port", "8080"]), 4);
    assert_eq!(count(&["--port", "53"]), 1);
    assert_eq!(count(&["--dst", "203.0.113.0/24"]), 4);
    assert_eq!(count(&["--dst", "2001:db8::/32"]), 1);
    assert_eq!(count(&["--comm", "egress-probe"]), 6);
    assert_eq!(count(&["--comm", "ollama"]), 0);
    assert_eq!(count(&["--rule", "deny.countries:CN"]), 4);
    assert_eq!(count(&["--rule", "default"]), 2);
    assert_eq!(count(&["--since", "2999-01-01T00:00:00Z"]), 0);
    assert_eq!(count(&["--until", "2000-01-01T00:00:00Z"]), 0);
    let last = logs_json(d, &["--limit", "2"]);
    assert_eq!(
        last,
        all[4..].to_vec(),
        "--limit keeps the newest, in order"
    );

    // The readable table names the verdicts and sums them up.
    let out = Command::new(daemon_bin())
        .args(["logs", "--verdict", "blocked", "--log-dir"])
        .arg(&d.log_dir)
        .output()
        .expect("logs table");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("203.0.113.7:8080") && table.contains("4 events (4 blocked)"),
        "{table}"
    );

    // --follow prints an event written after it started, then stops on SIGINT.
    let mut follow = Command::new(daemon_bin())
        .args(["logs", "--follow", "--json", "--limit", "0", "--log-dir"])
        .arg(&d.log_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("logs --follow");
    let stdout = follow.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    thread::sleep(Duration::from_millis(500));
    probe(&with(&inside, &["tcp", "198.51.100.1:8080"])).assert_ok("new event while following");
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("--follow printed the new event");
    let ev: Value = serde_json::from_str(&line).expect("json");
    assert_eq!(ev["dst"], "198.51.100.1");
    assert_eq!(ev["country"], "US");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(follow.id()).expect("pid")),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = follow.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "logs --follow did not stop on SIGINT"
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    reader.join().expect("reader");

    // status names the mode, the cgroup, the policy size and the counters.
    let out = d.status_output(&["--json"]);
    let st: Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(st["daemon_running"], true, "{st:#}");
    assert_eq!(st["attached_verified"], true, "{st:#}");
    assert_eq!(st["daemon"]["mode"], "enforce");
    assert_eq!(st["daemon"]["prefixes"]["ipv4"]["deny"], 1, "{st:#}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = d.state().counters;
        // The state file is written every 2 s: wait until it has caught up with every event.
        if c.connections.blocked == 4 && c.connections.allowed == 3 {
            assert!(c.packets.egress.allowed > 0, "{c:?}");
            break;
        }
        assert!(Instant::now() < deadline, "counters in the state: {c:?}");
        thread::sleep(Duration::from_millis(200));
    }
}
