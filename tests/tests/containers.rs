//! `--container` against a real Docker engine (Debian's `docker.io`, see `docker.rs` of the
//! harness: one private dockerd for this file's tests): found, enforced, named in events and
//! status, picked automatically; followed by name across `docker restart`, a crash restart and
//! `docker rm` + `docker run` under the same name, enforced from the new container's first
//! connection; and `--cgroup-parent` under a cgroup the daemon is on, enforced from the first
//! connection even with the daemon stopped (pins).

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use ollama_egress_tests::{
    Daemon, NetNs, daemon_bin,
    docker::{CgroupParent, engine, link_container},
    listener::NsListener,
    require_root, unique, write_policy,
};

const POLICY: &str = r#"
default = "deny"

[allow]
cidrs = ["127.0.0.0/8", "203.0.113.0/24"]
"#;

/// The denied listener and the allowed one, in the namespace the containers are linked to.
const DENIED: &str = "198.51.100.1:8080";
const ALLOWED: &str = "203.0.113.1:8080";

/// A container's command: connect to the denied address at once, and again every 50 ms; each
/// attempt's error on stdout, after a `start` line per start of the container.
const LOOP: &str = "echo start; while :; do echo leak | /bin/busybox nc -w 1 198.51.100.1 8080 2>&1; /bin/busybox usleep 50000; done";

/// `ollama-egress run` that is expected to fail at start-up; its stderr.
fn run_fails(args: &[&str]) -> String {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = Command::new(daemon_bin())
        .arg("run")
        .args(args)
        .arg("--log-dir")
        .arg(tmp.path().join("log"))
        .arg("--pin-dir")
        .arg(PathBuf::from("/sys/fs/bpf").join(unique("oe-ctf")))
        .arg("--metrics-addr")
        .arg("127.0.0.1:0")
        .stdin(Stdio::null())
        .output()
        .expect("run ollama-egress");
    assert!(!out.status.success(), "run {args:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// The peer namespace with both listeners.
fn peer() -> (NetNs, NsListener) {
    let ns = NetNs::new("oe-ctp", &["198.51.100.1/32", "203.0.113.1/32"]);
    let l = NsListener::start(&ns, &[addr(DENIED), addr(ALLOWED)]);
    (ns, l)
}

/// The attempts of each start of the container after the first `skip` starts (the `start`
/// lines of its log split them), waiting until the last start made at least two.
fn starts(name: &str, skip: usize) -> Vec<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = engine().docker_ok(&["logs", name]);
        let mut runs: Vec<Vec<String>> = Vec::new();
        for line in log.lines() {
            if line == "start" {
                runs.push(Vec::new());
            } else if let Some(r) = runs.last_mut() {
                r.push(line.to_owned());
            }
        }
        let runs: Vec<Vec<String>> = runs.into_iter().skip(skip).collect();
        if runs.last().is_some_and(|r| r.len() >= 2) || Instant::now() > deadline {
            return runs;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Every attempt of a start was refused by the kernel's connect hook (EPERM, before routing:
/// without enforcement a container whose veth is not there yet gets "Network is unreachable").
fn assert_all_denied(what: &str, attempts: &[String]) {
    assert!(
        attempts.len() >= 2,
        "{what}: too few attempts: {attempts:?}"
    );
    for a in attempts {
        assert!(
            a.contains("Operation not permitted"),
            "{what}: an attempt not denied by the kernel: {a:?} (all: {attempts:?})"
        );
    }
}

/// The milliseconds of each "re-attached to container NAME (…) X ms after its cgroup
/// appeared" line of the daemon, and whether the watch (not the periodic check) found it.
fn reattachments(daemon: &Daemon, name: &str) -> Vec<(String, f64, bool)> {
    let needle = format!("re-attached to container {name} (");
    daemon
        .stderr_text()
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find(&needle)? + needle.len()..];
            let (id, rest) = rest.split_once(") ")?;
            let ms = rest.split_whitespace().next()?.parse().ok()?;
            Some((id.to_owned(), ms, !rest.contains("periodic")))
        })
        .collect()
}

#[test]
fn a_docker_container_is_found_enforced_named_and_picked_automatically() {
    require_root();
    let (peer, listener) = peer();
    let name = unique("oe-ct");
    let ct = engine().run(&name, &[], &["/bin/busybox", "sleep", "600"]);
    let id = engine().inspect(&name, ".Id");
    let sock = engine().socket_arg();

    // Without enforcement the container's namespace has no route: the kernel says so.
    let before = engine().nc(&name, "198.51.100.1", "8080", "x");
    assert!(before.contains("Network is unreachable"), "{before}");
    let pid: u32 = engine().inspect(&name, ".State.Pid").parse().expect("pid");
    link_container(&peer, pid, 0);

    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write_policy(dir.path(), POLICY);
    let policy = policy.display().to_string();
    let mut daemon = Daemon::start(&[
        "--enforce",
        "--container",
        &name,
        "--engine-socket",
        &sock,
        "--policy",
        &policy,
    ]);
    let state = daemon.state();
    assert_eq!(state.target, format!("container {name} ({})", &id[..12]));
    assert!(
        state.cgroup.ends_with(format!("docker/{id}")),
        "{}",
        state.cgroup.display()
    );

    let denied = engine().nc(&name, "198.51.100.1", "8080", "denied");
    assert!(denied.contains("Operation not permitted"), "{denied}");
    let allowed = engine().nc(&name, "203.0.113.1", "8080", "allowed");
    assert!(!allowed.contains("can't connect"), "{allowed}");
    let local = engine().nc(&name, "127.0.0.1", "9", "x");
    assert!(local.contains("Connection refused"), "{local}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while listener.received(addr(ALLOWED)).bytes.is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(listener.received(addr(ALLOWED)).bytes, b"allowed\n");
    assert_eq!(listener.received(addr(DENIED)).connections, 0);
    let blocked = daemon.wait_events(1, |e| {
        e["verdict"] == "blocked" && e["dst"] == "198.51.100.1"
    });
    assert_eq!(blocked.len(), 1, "{:?}", daemon.events());
    assert_eq!(blocked[0]["container"], name.as_str(), "{}", blocked[0]);
    let ok = daemon.wait_events(2, |e| e["verdict"] == "allowed");
    assert!(ok.len() >= 2, "{:?}", daemon.events());
    for e in &ok {
        assert_eq!(e["container"], name.as_str(), "{e}");
    }

    let status = Command::new(daemon_bin())
        .args(["status", "--log-dir"])
        .arg(&daemon.log_dir)
        .arg("--pin-dir")
        .arg(&daemon.pin_dir)
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains(&format!("target:    container {name} ({})", &id[..12])),
        "{text}"
    );
    assert!(daemon.stop(), "{}", daemon.stderr_text());
    drop(daemon);

    // No target option: no ollama.service here, so the container of the image named
    // *ollama* is picked, and the log says why.
    let auto = Daemon::start(&["--monitor", "--engine-socket", &sock]);
    assert_eq!(
        auto.state().target,
        format!("container {name} ({})", &id[..12]),
        "{}",
        auto.stderr_text()
    );
    assert!(
        auto.stderr_text()
            .contains(&format!("picked container {name}")),
        "{}",
        auto.stderr_text()
    );
    engine().nc(&name, "198.51.100.1", "8080", "monitored");
    let seen = auto.wait_events(1, |e| {
        e["verdict"] == "would_block" && e["dst"] == "198.51.100.1"
    });
    assert_eq!(seen.len(), 1, "{:?}", auto.events());
    assert_eq!(seen[0]["container"], name.as_str());
    drop(auto);
    drop(ct);

    // The errors a user meets, each naming what to do.
    let err = run_fails(&[
        "--monitor",
        "--container",
        "oe-no-such",
        "--engine-socket",
        &sock,
    ]);
    assert!(err.contains("no container oe-no-such at"), "{err}");
    let stopped = unique("oe-ct-stopped");
    let image = engine().image();
    let _stopped = engine().guard(&stopped);
    engine().docker_ok(&["create", "--name", &stopped, &image, "/bin/busybox", "true"]);
    let err = run_fails(&[
        "--monitor",
        "--container",
        &stopped,
        "--engine-socket",
        &sock,
    ]);
    assert!(err.contains("is not running (it is created)"), "{err}");
    assert!(err.contains("docker start"), "{err}");
    let gone = engine().tmp.path().join("gone.sock").display().to_string();
    let err = run_fails(&["--monitor", "--container", &name, "--engine-socket", &gone]);
    assert!(err.contains("no container engine socket at"), "{err}");
}

/// What one restart or re-creation is.
#[derive(Clone, Copy, Debug)]
enum Again {
    /// `docker restart`: the same id, its cgroup removed and made again.
    Restart,
    /// The init process killed: `--restart on-failure` starts it again (same id).
    Crash,
    /// `docker rm -f` + `docker run --name` the same name: a new id, a new cgroup.
    Recreate,
}

#[test]
fn restarted_and_re_created_containers_are_enforced_from_their_first_connection() {
    require_root();
    let (peer, listener) = peer();
    let name = unique("oe-ctr");
    let opts = ["--restart", "on-failure"];
    let cmd = ["/bin/busybox", "sh", "-c", LOOP];
    let mut ct = engine().run(&name, &opts, &cmd);
    let mut pid = engine().wait_running(&name, 0);
    let sock = engine().socket_arg();
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write_policy(dir.path(), POLICY).display().to_string();
    let daemon = Daemon::start(&[
        "--enforce",
        "--container",
        &name,
        "--engine-socket",
        &sock,
        "--policy",
        &policy,
    ]);
    let mut link = 0;
    link_container(&peer, pid, link);

    let rounds = [
        Again::Restart,
        Again::Restart,
        Again::Restart,
        Again::Crash,
        Again::Crash,
        Again::Recreate,
        Again::Recreate,
        Again::Recreate,
    ];
    // Starts of the container of this id so far (its log keeps them across restarts).
    let mut starts_seen = 1;
    let mut blocked_attempts = 0;
    for (i, again) in rounds.iter().enumerate() {
        let old_id = engine().inspect(&name, ".Id");
        match again {
            Again::Restart => {
                engine().docker_ok(&["restart", "-t", "0", &name]);
            }
            Again::Crash => {
                let p = Pid::from_raw(i32::try_from(pid).expect("pid"));
                kill(p, Signal::SIGKILL).expect("kill the container's init");
            }
            Again::Recreate => {
                drop(ct);
                ct = engine().run(&name, &opts, &cmd);
                starts_seen = 0;
            }
        }
        pid = engine().wait_running(&name, pid);
        let id = engine().inspect(&name, ".Id");
        let what = format!("round {i} ({again:?})");
        assert_eq!(
            id == old_id,
            !matches!(again, Again::Recreate),
            "{what}: the id"
        );
        // From its first connection, every attempt of the new start was denied in the kernel.
        let runs = starts(&name, starts_seen);
        assert_eq!(runs.len(), 1, "{what}: starts {runs:?}");
        assert_all_denied(&what, &runs[0]);
        blocked_attempts += runs[0].len();
        starts_seen += 1;

        // The new network namespace gets a link again: allowed traffic flows, denied does not.
        link += 1;
        link_container(&peer, pid, link);
        let data = format!("allowed-{i}");
        let out = engine().nc(&name, "203.0.113.1", "8080", &data);
        assert!(!out.contains("can't connect"), "{what}: {out}");
        let denied = engine().nc(&name, "198.51.100.1", "8080", "leak");
        assert!(
            denied.contains("Operation not permitted"),
            "{what}: {denied}"
        );

        let state = daemon.state();
        assert_eq!(
            state.target,
            format!("container {name} ({})", &id[..12]),
            "{what}"
        );
        assert!(
            state.cgroup.ends_with(&id),
            "{what}: {}",
            state.cgroup.display()
        );
        let re = reattachments(&daemon, &name);
        assert_eq!(re.len(), i + 1, "{what}: {re:?}\n{}", daemon.stderr_text());
        let (re_id, ms, by_watch) = &re[i];
        assert_eq!(re_id, &id[..12], "{what}");
        assert!(
            by_watch,
            "{what}: found by the periodic check, not the watch"
        );
        eprintln!("{what}: re-attached {ms:.1} ms after the cgroup appeared");
    }

    let deadline = Instant::now() + Duration::from_secs(5);
    while listener.received(addr(ALLOWED)).connections < rounds.len() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let allowed = listener.received(addr(ALLOWED));
    for i in 0..rounds.len() {
        let data = format!("allowed-{i}\n");
        assert!(
            allowed
                .bytes
                .windows(data.len())
                .any(|w| w == data.as_bytes()),
            "{data:?} never arrived: {allowed:?}"
        );
    }
    let leaked = listener.received(addr(DENIED));
    assert_eq!(leaked.connections, 0, "{leaked:?}");
    assert!(leaked.bytes.is_empty(), "{leaked:?}");
    let blocked = daemon.wait_events(blocked_attempts, |e| {
        e["verdict"] == "blocked" && e["dst"] == "198.51.100.1"
    });
    assert!(
        blocked.len() >= blocked_attempts,
        "{} blocked events for {blocked_attempts} denied attempts",
        blocked.len()
    );
    for e in &blocked {
        assert_eq!(e["container"], name.as_str(), "{e}");
    }
    drop(ct);
}

#[test]
fn a_cgroup_parent_is_enforced_from_the_first_connection_even_without_the_daemon() {
    require_root();
    let parent = CgroupParent::new("oe-ctparent");
    let name = unique("oe-ctp");
    let cgroup_parent = format!("/{}", parent.name);
    let opts = ["--cgroup-parent", cgroup_parent.as_str()];
    let cmd = ["/bin/busybox", "sh", "-c", LOOP];
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write_policy(dir.path(), POLICY).display().to_string();
    let cg = parent.path.display().to_string();
    let mut daemon = Daemon::start(&["--enforce", "--cgroup", &cg, "--policy", &policy]);

    // Created under the parent the daemon is on: denied from its very first connection.
    let mut ct = engine().run(&name, &opts, &cmd);
    let id = engine().inspect(&name, ".Id");
    assert!(
        parent.path.join(&id).is_dir(),
        "the container's cgroup is not under {}",
        parent.path.display()
    );
    let mut pid = engine().wait_running(&name, 0);
    assert_all_denied("first start", &starts(&name, 0)[0]);

    engine().docker_ok(&["restart", "-t", "0", &name]);
    pid = engine().wait_running(&name, pid);
    assert_all_denied("restart", &starts(&name, 1)[0]);
    let seen = daemon.wait_events(1, |e| e["verdict"] == "blocked" && e["pid"] != 0);
    assert!(!seen.is_empty(), "{:?}", daemon.events());

    // The daemon stops; the pinned enforcement stays on the parent.
    assert!(daemon.stop(), "{}", daemon.stderr_text());
    engine().docker_ok(&["restart", "-t", "0", &name]);
    engine().wait_running(&name, pid);
    assert_all_denied("restart without the daemon", &starts(&name, 2)[0]);
    drop(ct);
    ct = engine().run(&name, &opts, &cmd);
    engine().wait_running(&name, 0);
    assert_all_denied("re-created without the daemon", &starts(&name, 0)[0]);
    drop(ct);
    drop(daemon);
}
