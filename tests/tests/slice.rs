//! `--unit NAME.service` and its slice, on hand-made cgroups (no systemd): a unit in
//! `NAME.slice` is enforced at the slice, so a restart of the unit (its cgroup removed and made
//! again, a process connecting at once) is judged from the first connection, also with the
//! daemon stopped; a unit outside its slice is followed at its own cgroup, with a warning naming
//! the drop-in, and the daemon moves to the slice when the unit is restarted into it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use ollama_egress::targeting::unit::Restarts;
use ollama_egress_tests::{
    Daemon, NetNs, TestCgroup, daemon_bin, probe, probe_args, require_root, unique, with,
    write_policy,
};

const ADDRS: &[&str] = &["192.0.2.1/32", "203.0.113.7/32"];
const LISTEN: &[&str] = &["192.0.2.1:8080", "203.0.113.7:8080"];
const DENIED: &str = "203.0.113.7:8080";
const ALLOWED: &str = "192.0.2.1:8080";
const POLICY: &str = r#"
default = "allow"

[deny]
cidrs = ["203.0.113.0/24"]
"#;

/// A unit name of this test and the hand-made cgroups of its tree (removed on drop, the unit's
/// before its parents': declared in that order by the callers).
struct Unit {
    name: String,
    slice: String,
}

impl Unit {
    fn new(prefix: &str) -> Self {
        let stem = unique(prefix);
        Self {
            name: format!("{stem}.service"),
            slice: format!("{stem}.slice"),
        }
    }
}

fn mount() -> PathBuf {
    ollama_egress::targeting::cgroup2_mount().expect("cgroup v2 mount")
}

fn mkdir(path: &Path) -> TestCgroup {
    fs::create_dir(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    TestCgroup::adopt(path.to_owned())
}

/// What systemd does on `systemctl restart`: the unit's cgroup removed and made again.
fn restart(cgroup: &Path) {
    fs::remove_dir(cgroup).unwrap_or_else(|e| panic!("rmdir {}: {e}", cgroup.display()));
    fs::create_dir(cgroup).unwrap_or_else(|e| panic!("mkdir {}: {e}", cgroup.display()));
}

fn status(d: &Daemon) -> (bool, String) {
    let out = Command::new(daemon_bin())
        .args(["status", "--log-dir"])
        .arg(&d.log_dir)
        .arg("--pin-dir")
        .arg(&d.pin_dir)
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
fn a_unit_in_its_slice_is_enforced_at_the_slice_across_restarts_with_or_without_a_daemon() {
    require_root();
    let unit = Unit::new("oe-slc");
    let ns = NetNs::new("oe-slc", ADDRS);
    let slice = mkdir(&mount().join(&unit.slice));
    let svc = mkdir(&slice.path.join(&unit.name));
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = write_policy(tmp.path(), POLICY);
    let policy = policy.to_str().expect("utf-8 path");
    let mut d = Daemon::start(&["--enforce", "--unit", &unit.name, "--policy", policy]);

    let st = d.state();
    assert_eq!(
        st.cgroup,
        slice.path.canonicalize().expect("canonical"),
        "attached to the slice"
    );
    assert_eq!(st.restarts, Some(Restarts::Covered));
    let (ok, text) = status(&d);
    assert!(ok, "{text}");
    assert!(text.contains("restarts:  covered"), "{text}");

    let inside = probe_args(&ns, Some(&svc.path), LISTEN);
    for round in 0..5 {
        restart(&svc.path);
        // No wait: the first connection of the new process is judged.
        probe(&with(&inside, &["tcp", DENIED]))
            .assert_eperm(&format!("restart {round}: first connection"));
    }
    probe(&with(&inside, &["tcp", ALLOWED])).assert_ok("allowed after the restarts");
    let err = d.stderr_text();
    assert!(err.contains("attaching to the slice"), "{err}");
    assert!(
        !err.contains("was made again"),
        "the slice needs no following: {err}"
    );

    // The daemon stops; its programs stay pinned on the slice.
    assert!(d.stop(), "the daemon stopped cleanly");
    for round in 0..3 {
        restart(&svc.path);
        probe(&with(&inside, &["tcp", DENIED]))
            .assert_eperm(&format!("restart {round} with no daemon: first connection"));
    }
    probe(&with(&inside, &["tcp", ALLOWED])).assert_ok("allowed with no daemon");
    let (ok, text) = status(&d);
    assert!(ok, "{text}");
    assert!(
        text.contains("ENFORCING WITHOUT A DAEMON") && text.contains("restarts:  covered"),
        "{text}"
    );
    drop(d);
    drop(svc);
    drop(slice);
}

#[test]
fn a_stopped_unit_with_its_slice_is_enforced_at_the_slice_from_its_first_start() {
    require_root();
    let unit = Unit::new("oe-sls");
    let ns = NetNs::new("oe-sls", ADDRS);
    let slice = mkdir(&mount().join(&unit.slice));
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = write_policy(tmp.path(), POLICY);
    let policy = policy.to_str().expect("utf-8 path");
    let d = Daemon::start(&["--enforce", "--unit", &unit.name, "--policy", policy]);
    assert_eq!(d.state().restarts, Some(Restarts::Covered));
    // The unit starts after the daemon: judged at once.
    let svc = mkdir(&slice.path.join(&unit.name));
    let inside = probe_args(&ns, Some(&svc.path), LISTEN);
    probe(&with(&inside, &["tcp", DENIED])).assert_eperm("the unit's first connection");
    drop(d);
    drop(svc);
    drop(slice);
}

#[test]
fn a_unit_outside_its_slice_is_followed_and_moved_to_the_slice_when_restarted_into_it() {
    require_root();
    let unit = Unit::new("oe-slo");
    let ns = NetNs::new("oe-slo", ADDRS);
    let other = mkdir(&mount().join(unique("oe-slo-system")));
    let outside = mkdir(&other.path.join(&unit.name));
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = write_policy(tmp.path(), POLICY);
    let policy = policy.to_str().expect("utf-8 path");
    let d = Daemon::start(&["--enforce", "--unit", &unit.name, "--policy", policy]);

    let st = d.state();
    assert_eq!(st.cgroup, outside.path.canonicalize().expect("canonical"));
    assert_eq!(st.restarts, Some(Restarts::Followed));
    let err = d.stderr_text();
    assert!(
        err.contains(&format!("Slice={}", unit.slice))
            && err.contains(&format!("{}.d/ollama-egress.conf", unit.name)),
        "the warning names the drop-in: {err}"
    );
    let (ok, text) = status(&d);
    assert!(ok && text.contains("restarts:  followed"), "{text}");
    probe(&with(
        &probe_args(&ns, Some(&outside.path), LISTEN),
        &["tcp", DENIED],
    ))
    .assert_eperm("the unit's own cgroup is enforced");

    // Restarted into its slice (the drop-in installed, `systemctl restart`): the old cgroup
    // goes, the unit comes back in the slice, and the daemon moves there.
    let slice = mkdir(&mount().join(&unit.slice));
    let svc = mkdir(&slice.path.join(&unit.name));
    fs::remove_dir(&outside.path).expect("rmdir the old cgroup");
    let removed = Instant::now();
    let want = slice.path.canonicalize().expect("canonical");
    let deadline = Instant::now() + Duration::from_secs(3);
    while d.state().cgroup != want {
        assert!(
            Instant::now() < deadline,
            "the daemon did not move to the slice in 3 s: {}",
            d.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "moved to the slice {:?} after the old cgroup was removed",
        removed.elapsed()
    );
    assert_eq!(d.state().restarts, Some(Restarts::Covered));
    let inside = probe_args(&ns, Some(&svc.path), LISTEN);
    restart(&svc.path);
    probe(&with(&inside, &["tcp", DENIED])).assert_eperm("restarted in the slice");
    probe(&with(&inside, &["tcp", ALLOWED])).assert_ok("allowed in the slice");
    let (ok, text) = status(&d);
    assert!(ok && text.contains("restarts:  covered"), "{text}");
    drop(d);
    drop(svc);
    drop(slice);
    drop(outside);
    drop(other);
}
