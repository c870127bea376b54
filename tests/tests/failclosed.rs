//! Enforcement outlives the daemon: `kill -9`, restart and adoption, graceful stop, detach.

use std::{thread, time::Duration};

use ollama_egress_tests::{Scenario, ScenarioSpec, probe, with};

const ADDRS: &[&str] = &["203.0.113.7/32", "192.0.2.1/32"];
const LISTEN: &[&str] = &["203.0.113.7:8080", "192.0.2.1:8080"];
const POLICY: &str = "default = \"allow\"\n[deny]\ncidrs = [\"203.0.113.0/24\"]\n";

#[test]
fn kill_9_restart_and_detach_never_let_a_denied_connection_through() {
    let mut s = Scenario::start(ScenarioSpec::new("oe-k9", ADDRS, "--enforce", POLICY));
    let args = s.args.clone();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // A client in the cgroup retries the denied connection for 4 s while the daemon is killed
    // and restarted. The listener is up, so any attempt that got through would succeed.
    let inside = s.inside(LISTEN);
    let first = &mut s.daemon;
    let looping = with(
        &inside,
        &["tcp-loop", "203.0.113.7:8080", "--duration-ms", "4000"],
    );
    let client = thread::spawn(move || probe(&looping));
    thread::sleep(Duration::from_millis(800));
    first.kill9();
    thread::sleep(Duration::from_millis(800));
    let out = first.status_output(&[]);
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.contains("ENFORCING WITHOUT A DAEMON"),
        "status while no daemon runs:\n{status}"
    );
    let second = first.restart(&args);
    let result = client.join().expect("client thread");
    let attempts = result.json["attempts"].as_u64().unwrap_or(0);
    let successes = result.json["successes"].as_u64().unwrap_or(u64::MAX);
    assert!(attempts > 100, "the client kept trying: {}", result.json);
    assert_eq!(
        successes, 0,
        "a denied connection got through: {}",
        result.json
    );
    assert_eq!(result.errno(), Some(libc::EPERM), "{}", result.json);
    assert!(
        second
            .stderr_text()
            .contains("adopted the pinned enforcement"),
        "the restarted daemon reports the adoption:\n{}",
        second.stderr_text()
    );
    // The restarted daemon also logs what happened while no daemon ran.
    let blocked = second.wait_events(1, |e| e["verdict"] == "blocked");
    assert!(!blocked.is_empty(), "no blocked events in the log");

    // A graceful stop leaves enforcement in place too.
    let mut second = second;
    assert!(second.stop(), "SIGTERM ends the daemon cleanly");
    probe(&with(&inside, &["tcp", "203.0.113.7:8080"])).assert_eperm("after SIGTERM");
    probe(&with(&inside, &["tcp", "192.0.2.1:8080"])).assert_ok("allowed after SIGTERM");

    // `detach` is the one way to stop enforcing.
    ollama_egress_tests::detach(&second.pin_dir);
    probe(&with(&inside, &["tcp", "203.0.113.7:8080"])).assert_ok("after detach");
    assert!(!second.pin_dir.exists(), "detach removes the pins");
}

#[test]
fn monitor_mode_leaves_nothing_behind() {
    let mut s = Scenario::start(ScenarioSpec::new("oe-monpin", ADDRS, "--monitor", POLICY));
    let d = &mut s.daemon;
    assert!(!d.pin_dir.exists(), "monitor mode pins nothing");
    assert!(d.stop());
    for point in ollama_egress::loader::AttachPoint::ALL {
        let ids = ollama_egress::loader::attached_program_ids(&s.cg.path, point).expect("query");
        assert!(
            ids.is_empty(),
            "{point:?} still attached after monitor mode: {ids:?}"
        );
    }
    let inside = s.inside(LISTEN);
    probe(&with(&inside, &["tcp", "203.0.113.7:8080"]))
        .assert_ok("nothing blocks after monitor mode");
}

#[test]
fn kernel_log_messages_reach_the_daemon_log() {
    let s = Scenario::start(ScenarioSpec::new("oe-klog", ADDRS, "--enforce", POLICY));
    let d = &s.daemon;
    // Empty the pinned slot settings under the running programs: they then find no policy in
    // force and say so through aya-log.
    ollama_egress_tests::clear_pinned_slots(&d.pin_dir);
    let inside = s.inside(LISTEN);
    // Enforce-mode programs deny without a valid policy (fail closed).
    probe(&with(&inside, &["tcp", "192.0.2.1:8080"])).assert_eperm("denied without a policy");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !d.stderr_text().contains("no policy in force") {
        assert!(
            std::time::Instant::now() < deadline,
            "kernel log not forwarded:\n{}",
            d.stderr_text()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn pinned_links_of_a_removed_cgroup_are_replaced_not_refused() {
    // As systemd does on `systemctl restart ollama`: the unit's cgroup is removed and made anew
    // at the same path while enforcement stays pinned.
    let mut s = Scenario::start(ScenarioSpec::new("oe-recg", ADDRS, "--enforce", POLICY));
    let args = s.args.clone();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let inside = s.inside(LISTEN);
    assert!(s.daemon.stop(), "SIGTERM");
    std::fs::remove_dir(&s.cg.path).expect("remove the cgroup");
    std::fs::create_dir(&s.cg.path).expect("make it again");
    let second = s.daemon.restart(&args);
    assert!(
        second.stderr_text().contains("cgroup was removed"),
        "{}",
        second.stderr_text()
    );
    probe(&with(&inside, &["tcp", "203.0.113.7:8080"])).assert_eperm("the new cgroup is enforced");
    probe(&with(&inside, &["tcp", "192.0.2.1:8080"])).assert_ok("allowed in the new cgroup");
}
