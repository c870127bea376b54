//! Targeting against the real kernel: a target cgroup that is removed and made again (as
//! systemd does on every restart of a unit) is enforced again at once while the daemon runs,
//! and `status` says so honestly when no daemon runs.

use std::{
    fs,
    os::unix::process::CommandExt as _,
    process::Command,
    time::{Duration, Instant},
};

use ollama_egress::loader::{AttachPoint, attached_program_ids};
use ollama_egress_tests::{Scenario, ScenarioSpec, daemon_bin, probe, with};

const ADDRS: &[&str] = &["192.0.2.1/32", "203.0.113.7/32"];
const LISTEN: &[&str] = &["192.0.2.1:8080", "203.0.113.7:8080"];
const POLICY: &str = r#"
default = "allow"

[deny]
cidrs = ["203.0.113.0/24"]
"#;

fn status(s: &Scenario) -> (bool, String) {
    let out = Command::new(daemon_bin())
        .args(["status", "--log-dir"])
        .arg(&s.daemon.log_dir)
        .arg("--pin-dir")
        .arg(&s.daemon.pin_dir)
        .output()
        .expect("run status");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_recreated_target_cgroup_is_enforced_again_within_a_second() {
    let s = Scenario::start(ScenarioSpec::new("oe-tgre", ADDRS, "--enforce", POLICY));
    let inside = s.inside(LISTEN);
    probe(&with(&inside, &["tcp", "203.0.113.7:8080"])).assert_eperm("before the restart");

    // systemctl restart: rmdir, then mkdir at the same path, then processes start in it. Five
    // restarts; each time the gap from mkdir until the kernel lists all six programs on the
    // new cgroup is measured.
    let mut gaps = Vec::new();
    for round in 0..5 {
        fs::remove_dir(&s.cg.path).expect("remove the cgroup");
        fs::create_dir(&s.cg.path).expect("make it again");
        let made = Instant::now();
        loop {
            let attached = AttachPoint::ALL
                .iter()
                .all(|p| attached_program_ids(&s.cg.path, *p).is_ok_and(|ids| !ids.is_empty()));
            if attached {
                break;
            }
            assert!(
                made.elapsed() < Duration::from_secs(3),
                "round {round}: the re-created cgroup has no programs after 3 s\n{}",
                s.daemon.stderr_text()
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        gaps.push(made.elapsed());
        probe(&with(&inside, &["tcp", "203.0.113.7:8080"]))
            .assert_eperm(&format!("round {round}: the new cgroup is enforced"));
    }
    gaps.sort();
    eprintln!("re-attach gap from mkdir, 5 restarts: {gaps:?}");
    let worst = gaps[gaps.len() - 1];
    assert!(
        worst < Duration::from_secs(1),
        "enforced again only after {worst:?}"
    );
    probe(&with(&inside, &["tcp", "192.0.2.1:8080"])).assert_ok("allowed in the new cgroup");
    let err = s.daemon.stderr_text();
    assert!(
        err.contains("was made again: attached to the new one"),
        "{err}"
    );
    let (ok, text) = status(&s);
    assert!(
        ok,
        "status with the daemon following the new cgroup:\n{text}"
    );
    assert!(text.contains("verified by the kernel"), "{text}");
}

#[test]
fn status_without_a_daemon_says_a_recreated_cgroup_is_not_enforced() {
    let mut s = Scenario::start(ScenarioSpec::new("oe-tgst", ADDRS, "--enforce", POLICY));
    let inside = s.inside(LISTEN);
    // Killed (a crash): the state file stays and names the target.
    s.daemon.kill9();
    let (ok, text) = status(&s);
    assert!(ok, "pinned enforcement on the live target:\n{text}");
    assert!(text.contains("ENFORCING WITHOUT A DAEMON"), "{text}");

    fs::remove_dir(&s.cg.path).expect("remove the cgroup");
    fs::create_dir(&s.cg.path).expect("make it again");
    // Nothing enforces the new cgroup: the denied host is reached.
    probe(&with(&inside, &["tcp", "203.0.113.7:8080"])).assert_ok("the new cgroup is open");
    let (ok, text) = status(&s);
    assert!(
        !ok,
        "status must fail when nothing enforces the target:\n{text}"
    );
    assert!(text.contains("NOT ENFORCING"), "{text}");
    assert!(!text.contains("ENFORCING WITHOUT A DAEMON"), "{text}");
}

#[test]
fn status_as_a_user_says_what_needs_root() {
    let s = Scenario::start(ScenarioSpec::new("oe-tgnr", ADDRS, "--monitor", POLICY));
    let out = Command::new(daemon_bin())
        .args(["status", "--log-dir"])
        .arg(&s.daemon.log_dir)
        .arg("--pin-dir")
        .arg(&s.daemon.pin_dir)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run status as nobody");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("status needs root"), "{err}");
    assert!(err.contains("sudo ollama-egress status"), "{err}");
}
