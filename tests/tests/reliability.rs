//! Never fail open, never lose an event: atomic reloads, bad reloads, SIGTERM during a burst,
//! ring-buffer overflow accounting, capacity.

use std::{
    fs,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};
use ollama_egress_tests::{
    Daemon, Scenario, ScenarioSpec, TestCgroup, daemon_bin, metric_value, probe, require_root,
    with, write_policy,
};
use serde_json::Value;

const X: &str = "203.0.113.7";
const Y: &str = "198.51.100.1";
const ADDRS: &[&str] = &["203.0.113.7/32", "198.51.100.1/32", "192.0.2.1/32"];
const LISTEN: &[&str] = &["203.0.113.7:8080", "198.51.100.1:8080"];

fn policy_text(deny: &str, allow: &str) -> String {
    format!(
        "default = \"allow\"\n[allow]\ncidrs = [\"{allow}/32\"]\n[deny]\ncidrs = [\"{deny}/32\"]\n"
    )
}

fn signal(d: &Daemon, sig: Signal) {
    nix::sys::signal::kill(Pid::from_raw(i32::try_from(d.pid()).expect("pid")), sig).expect("kill");
}

/// Replaces the policy file atomically (a reader never sees half a file).
fn replace_policy(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).expect("write policy");
    fs::rename(&tmp, path).expect("rename policy");
}

#[test]
fn a_thousand_reloads_never_judge_against_a_mixed_policy() {
    let s = Scenario::start(ScenarioSpec::new(
        "oe-reload",
        ADDRS,
        "--enforce",
        &policy_text(X, Y),
    ));
    let d = &s.daemon;

    // Clients connect to X and Y for the whole run; the first one also runs the listeners.
    let clients: Vec<_> = [(X, LISTEN), (Y, &[][..])]
        .iter()
        .map(|(h, listen)| {
            let inside = s.inside(listen);
            let args = with(
                &inside,
                &["tcp-loop", &format!("{h}:8080"), "--duration-ms", "600000"],
            );
            let mut cmd = Command::new(ollama_egress_tests::probe_bin());
            cmd.args(&args).stdout(std::process::Stdio::piped());
            cmd.spawn().expect("client")
        })
        .collect();

    let mut generation = d.state().generation;
    let started = Instant::now();
    for i in 0..1000 {
        let text = if i % 2 == 0 {
            policy_text(Y, X)
        } else {
            policy_text(X, Y)
        };
        replace_policy(&s.policy, &text);
        signal(d, Signal::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let g = d.state().generation;
            if g != generation {
                generation = g;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "reload {i} did not happen:\n{}",
                d.stderr_text()
            );
            thread::sleep(Duration::from_millis(1));
        }
    }
    let took = started.elapsed();
    for mut c in clients {
        let _ = nix::sys::signal::kill(
            Pid::from_raw(i32::try_from(c.id()).expect("pid")),
            Signal::SIGTERM,
        );
        let _ = c.wait();
    }
    thread::sleep(Duration::from_millis(300));
    let events = d.events();
    assert!(
        events.len() > 200,
        "too few decisions to mean anything: {} in {took:?}",
        events.len()
    );
    let mut per_verdict = [0usize; 2];
    for e in &events {
        let dst = e["dst"].as_str().expect("dst");
        let rule = e["rule"].as_str().expect("rule");
        match e["verdict"].as_str() {
            Some("allowed") => {
                assert_eq!(
                    rule,
                    format!("allow.cidrs:{dst}/32"),
                    "allowed by a rule of the other policy: {e}"
                );
                per_verdict[0] += 1;
            }
            Some("blocked") => {
                assert_eq!(
                    rule,
                    format!("deny.cidrs:{dst}/32"),
                    "blocked by a rule of the other policy: {e}"
                );
                per_verdict[1] += 1;
            }
            other => panic!("unexpected verdict {other:?}: {e}"),
        }
    }
    assert!(
        per_verdict[0] > 0 && per_verdict[1] > 0,
        "both verdicts seen: {per_verdict:?}"
    );
    for h in [X, Y] {
        assert!(
            events.iter().any(|e| e["dst"] == h),
            "no decision for {h}: both clients ran"
        );
    }
    eprintln!(
        "1000 reloads in {took:?}; {} decisions, allowed/blocked {per_verdict:?}",
        events.len()
    );
}

#[test]
fn a_malformed_policy_on_sighup_keeps_the_old_one() {
    let s = Scenario::start(ScenarioSpec::new(
        "oe-badhup",
        ADDRS,
        "--enforce",
        &policy_text(X, Y),
    ));
    let d = &s.daemon;
    let before = d.metrics();
    let errors = |m: &str| {
        metric_value(m, "ollama_egress_policy_reloads_total{result=\"error\"}").unwrap_or(-1.0)
    };
    assert_eq!(errors(&before), 0.0, "{before}");

    replace_policy(
        &s.policy,
        "default = \"allow\"\n[deny]\ncidrs = [\"203.0.113.7/40\"]\n",
    );
    signal(d, Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.stderr_text().contains("policy reload failed") {
        assert!(
            Instant::now() < deadline,
            "no reload error logged:\n{}",
            d.stderr_text()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let log = d.stderr_text();
    assert!(
        log.contains("line 3") && log.contains("203.0.113.7/40"),
        "the error names line and value:\n{log}"
    );
    assert!(errors(&d.metrics()) >= 1.0, "{}", d.metrics());
    let inside = s.inside(LISTEN);
    probe(&with(&inside, &["tcp", "203.0.113.7:8080"]))
        .assert_eperm("the old policy still denies X");
    probe(&with(&inside, &["tcp", "198.51.100.1:8080"])).assert_ok("the old policy still allows Y");
    assert_eq!(d.state().generation, 1, "no new generation was switched in");
}

#[test]
fn sigterm_during_a_burst_loses_no_event() {
    let mut s = Scenario::start(ScenarioSpec::new(
        "oe-burst",
        ADDRS,
        "--enforce",
        &policy_text(X, Y),
    ));
    let args = s.args.clone();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let inside = s.inside(LISTEN);
    let first = &mut s.daemon;
    let burst = with(
        &inside,
        &["tcp-loop", "203.0.113.7:8080", "--duration-ms", "2500"],
    );
    let client = thread::spawn(move || probe(&burst));
    thread::sleep(Duration::from_millis(700));
    assert!(
        first.stop(),
        "SIGTERM ends the daemon cleanly:\n{}",
        first.stderr_text()
    );
    thread::sleep(Duration::from_millis(500));
    // The pinned programs kept enforcing and recording; the next daemon reads what waited.
    let second = first.restart(&args);
    let result = client.join().expect("client");
    let attempts = result.json["attempts"].as_u64().expect("attempts");
    assert_eq!(
        result.json["successes"].as_u64(),
        Some(0),
        "{}",
        result.json
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let blocked = loop {
        let n = second
            .events()
            .iter()
            .filter(|e| e["verdict"] == "blocked")
            .count() as u64;
        if n >= attempts || Instant::now() > deadline {
            break n;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let lost = metric_value(&second.metrics(), "ollama_egress_events_lost_total").unwrap_or(-1.0);
    assert_eq!(lost, 0.0, "nothing was lost");
    assert_eq!(
        blocked, attempts,
        "one event per refused connect, across the stop and restart"
    );
}

#[test]
fn a_ring_buffer_flood_is_counted_exactly() {
    let s = Scenario::start(ScenarioSpec {
        extra: &["--event-buffer-bytes", "4096"],
        ..ScenarioSpec::new("oe-flood", ADDRS, "--monitor", &policy_text(X, Y))
    });
    let d = &s.daemon;
    let inside = s.inside(&[]);
    let spray = probe(&with(
        &inside,
        &["udp-spray", "192.0.2.1:1000", "--ports", "50000"],
    ));
    let sent = spray.json["attempts"].as_u64().expect("attempts");
    assert_eq!(sent, 50_000);
    let is_spray = |e: &Value| e["dst"] == "192.0.2.1" && e["proto"] == "udp";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logged = d.events().iter().filter(|e| is_spray(e)).count() as u64;
        let lost =
            metric_value(&d.metrics(), "ollama_egress_events_lost_total").unwrap_or(0.0) as u64;
        if logged + lost == sent {
            assert!(
                lost > 0,
                "the flood did not overflow a 4 KiB ring buffer ({logged} logged)"
            );
            eprintln!("{sent} decisions: {logged} logged, {lost} counted lost");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{sent} decisions but {logged} logged + {lost} lost: events went missing uncounted"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_policy_larger_than_the_tables_is_refused_with_the_size_it_needs() {
    require_root();
    let cg = TestCgroup::new("oe-cap");
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = write_policy(
        tmp.path(),
        "[deny]\ncidrs = [\"203.0.113.0/24\", \"198.51.100.0/24\", \"192.0.2.0/24\"]\n",
    );
    let pin_dir =
        std::path::PathBuf::from("/sys/fs/bpf").join(ollama_egress_tests::unique("oe-cap"));
    let out = Command::new(daemon_bin())
        .args([
            "run",
            "--enforce",
            "--max-prefixes",
            "2",
            "--metrics-addr",
            "127.0.0.1:0",
            "--cgroup",
        ])
        .arg(&cg.path)
        .arg("--policy")
        .arg(&policy)
        .arg("--log-dir")
        .arg(tmp.path().join("log"))
        .arg("--pin-dir")
        .arg(&pin_dir)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("needs 3 IPv4 prefixes") && stderr.contains("at most 2"),
        "{stderr}"
    );
    assert!(!pin_dir.exists(), "a refused start leaves no pins");
    for point in ollama_egress::loader::AttachPoint::ALL {
        assert!(
            ollama_egress::loader::attached_program_ids(&cg.path, point)
                .expect("query")
                .is_empty()
        );
    }
}
