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
    let (ok, text) = s.daemon.status();
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
    let (ok, text) = s.daemon.status();
    assert!(ok, "pinned enforcement on the live target:\n{text}");
    assert!(text.contains("ENFORCING WITHOUT A DAEMON"), "{text}");

    fs::remove_dir(&s.cg.path).expect("remove the cgroup");
    fs::create_dir(&s.cg.path).expect("make it again");
    // Nothing enforces the new cgroup: the denied host is reached.
    probe(&with(&inside, &["tcp", "203.0.113.7:8080"])).assert_ok("the new cgroup is open");
    let (ok, text) = s.daemon.status();
    assert!(
        !ok,
        "status must fail when nothing enforces the target:\n{text}"
    );
    assert!(text.contains("NOT ENFORCING"), "{text}");
    assert!(!text.contains("ENFORCING WITHOUT A DAEMON"), "{text}");
    // After a clean stop no state file names the target: the kernel's word on the links'
    // cgroup (removed) must be enough.
    fs::remove_file(s.daemon.log_dir.join("state.json")).expect("remove the state file");
    let (ok, text) = s.daemon.status();
    assert!(!ok, "status with no state file:\n{text}");
    assert!(
        text.contains("NOT ENFORCING") && text.contains("removed"),
        "{text}"
    );
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

/// A copy of `bin` named `name` in `dir`: its `comm` is what `--process` looks for.
/// Processes found by name are judged from the cgroup v2 root, and one daemon holds a target
/// at a time (a second is refused): the tests that target by name take turns.
fn root_target() -> std::sync::MutexGuard<'static, ()> {
    static ROOT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ROOT.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A process name unique to this test run (at most 15 bytes).
fn process_name(tag: &str) -> String {
    format!("oe{tag}{:x}", std::process::id() % 0xfffff)
}

/// Starts `run --enforce --process NAME` with a policy denying 203.0.113.0/24.
fn process_daemon(name: &str, policy: &std::path::Path) -> ollama_egress_tests::Daemon {
    ollama_egress_tests::Daemon::start(&[
        "--enforce",
        "--process",
        name,
        "--policy",
        policy.to_str().expect("utf8"),
    ])
}

/// What every test that targets by name sets up after taking its turn: root checked, a network
/// namespace `oe-tg<tag>`, the policy in a temporary directory, a process name unique to the
/// run.
fn by_name(
    tag: &str,
) -> (
    ollama_egress_tests::NetNs,
    tempfile::TempDir,
    std::path::PathBuf,
    String,
) {
    ollama_egress_tests::require_root();
    let ns = ollama_egress_tests::NetNs::new(&format!("oe-tg{tag}"), ADDRS);
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = ollama_egress_tests::write_policy(tmp.path(), POLICY);
    (ns, tmp, policy, process_name(tag))
}

/// Asserts the probe's connection was refused (EPERM); `what` says what got through if not.
fn assert_refused(json: &serde_json::Value, what: &str, d: &ollama_egress_tests::Daemon) {
    assert_eq!(
        json["errno"].as_i64(),
        Some(i64::from(libc::EPERM)),
        "{what}: {json}\n{}",
        d.stderr_text()
    );
}

fn probe_json(out: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "probe output {text:?}: {e}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn a_process_found_by_name_is_judged_from_its_first_connection() {
    let _root = root_target();
    let (ns, tmp, policy, name) = by_name("fc");
    let bin = ollama_egress_tests::named_copy(&ollama_egress_tests::probe_bin(), tmp.path(), &name);
    let d = process_daemon(&name, &policy);
    // Each copy connects at once, with no delay: any window between exec and the first
    // connection would let it through (the listener is up).
    for round in 0..10 {
        let out = Command::new(&bin)
            .args([
                "--netns",
                &ns.name,
                "--listen",
                LISTEN[1],
                "tcp",
                "203.0.113.7:8080",
            ])
            .output()
            .expect("run the named copy");
        let json = probe_json(&out);
        assert_refused(
            &json,
            &format!("round {round}: a new process named {name} connected before it was judged"),
            &d,
        );
    }
    // Processes of other names are not judged at all.
    probe(&[
        "--netns",
        &ns.name,
        "--listen",
        LISTEN[1],
        "tcp",
        "203.0.113.7:8080",
    ])
    .assert_ok("a process of another name");
}

#[test]
fn children_forked_under_another_name_before_the_daemon_are_judged() {
    let _root = root_target();
    let (ns, tmp, policy, name) = by_name("ch");
    // A shell named like the target starts a child of another name (the probe) before the
    // daemon runs; the child connects later.
    let sh = ollama_egress_tests::named_copy(std::path::Path::new("/bin/sh"), tmp.path(), &name);
    let (go, made) = (tmp.path().join("go"), tmp.path().join("go.made"));
    let script = format!(
        "{} --netns {} --listen {} --go-file {} tcp 203.0.113.7:8080; true",
        ollama_egress_tests::probe_bin().display(),
        ns.name,
        LISTEN[1],
        go.display()
    );
    let parent = Command::new(&sh)
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the named shell");
    wait_for_file(&made, "the shell's child runs");
    let d = process_daemon(&name, &policy);
    fs::write(&go, b"").expect("go");
    let out = parent.wait_with_output().expect("shell output");
    let json = probe_json(&out);
    assert_refused(
        &json,
        "the child forked before the daemon connected unjudged",
        &d,
    );
}

#[test]
fn with_no_daemon_a_new_process_found_by_name_is_still_judged() {
    let _root = root_target();
    let (ns, tmp, policy, name) = by_name("nd");
    let bin = ollama_egress_tests::named_copy(&ollama_egress_tests::probe_bin(), tmp.path(), &name);
    let mut d = process_daemon(&name, &policy);
    assert!(d.stop(), "SIGTERM");
    for action in [
        &["tcp", "203.0.113.7:8080"][..],
        &["udp", "203.0.113.7:9999"][..],
        &["fork-tcp", "203.0.113.7:8080"][..],
        // A raw socket bypasses the sock_addr hooks: the packet backstop judges it by the
        // socket the marked task made.
        &["raw-ping", "203.0.113.7"][..],
    ] {
        let out = Command::new(&bin)
            .args(["--netns", &ns.name, "--listen", LISTEN[1]])
            .args(action)
            .output()
            .expect("run the named copy");
        let json = probe_json(&out);
        if action[0] == "raw-ping" {
            assert_eq!(
                json["ok"], false,
                "the echo reached the denied host: {json}"
            );
        } else {
            assert_eq!(
                json["errno"].as_i64(),
                Some(i64::from(libc::EPERM)),
                "{action:?} of a process named {name} started with no daemon: {json}"
            );
        }
    }
    let out = Command::new(&bin)
        .args([
            "--netns",
            &ns.name,
            "--listen",
            LISTEN[0],
            "tcp",
            "192.0.2.1:8080",
        ])
        .output()
        .expect("run the named copy");
    assert_eq!(
        probe_json(&out)["ok"],
        true,
        "allowed destinations stay reachable"
    );
    probe(&[
        "--netns",
        &ns.name,
        "--listen",
        LISTEN[1],
        "tcp",
        "203.0.113.7:8080",
    ])
    .assert_ok("a process of another name, with no daemon");
    probe(&["--netns", &ns.name, "raw-ping", "203.0.113.7"])
        .assert_ok("a raw echo of a process of another name");
}

#[test]
fn a_socket_made_before_the_daemon_started_is_judged_at_connect() {
    let _root = root_target();
    let (ns, tmp, policy, name) = by_name("so");
    let bin = ollama_egress_tests::named_copy(&ollama_egress_tests::probe_bin(), tmp.path(), &name);
    let (go, made) = (tmp.path().join("go"), tmp.path().join("go.made"));
    // The socket exists before the daemon; it connects once the daemon runs.
    let early = Command::new(&bin)
        .args([
            "--netns",
            &ns.name,
            "--listen",
            LISTEN[1],
            "tcp-late",
            "203.0.113.7:8080",
            "--go-file",
            go.to_str().expect("utf-8"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the named copy");
    wait_for_file(&made, "the probe made its socket");
    let d = process_daemon(&name, &policy);
    fs::write(&go, b"").expect("go");
    let json = probe_json(&early.wait_with_output().expect("probe output"));
    assert_refused(
        &json,
        "a socket made before the daemon connected unjudged",
        &d,
    );
}

/// `struct clone_args` of clone3(2), up to `set_tid_size`.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
}

/// Starts `argv` as a new process with exactly pid `pid` (clone3 with `set_tid`, root only);
/// its stdout goes to `stdout`. Returns `None` when the pid is taken.
fn spawn_with_pid(pid: i32, argv: &[&str], stdout: std::os::fd::BorrowedFd<'_>) -> Option<i32> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd as _;
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(*a).expect("no NUL"))
        .collect();
    let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let tids = [pid];
    let mut ca = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: tids.as_ptr() as u64,
        set_tid_size: 1,
        ..CloneArgs::default()
    };
    let out = stdout.as_raw_fd();
    // SAFETY: clone3 without CLONE_VM: the child gets a copy of this address space and only
    // calls async-signal-safe functions (dup2, execve, _exit) on memory prepared before.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut ca as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        0 => {
            // SAFETY: as above; the child never returns.
            unsafe {
                libc::dup2(out, 1);
                libc::execve(ptrs[0], ptrs.as_ptr(), envp.as_ptr());
                libc::_exit(127);
            }
        }
        r if r > 0 => Some(r as i32),
        _ => {
            let e = std::io::Error::last_os_error();
            assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "clone3: {e}");
            None
        }
    }
}

#[test]
fn a_process_that_reuses_the_pid_of_an_earlier_target_is_judged() {
    let _root = root_target();
    let (ns, tmp, policy, name) = by_name("pr");
    let bin = ollama_egress_tests::named_copy(&ollama_egress_tests::probe_bin(), tmp.path(), &name);
    let d = process_daemon(&name, &policy);
    // A first target runs long enough for the daemon to see it, then ends.
    let mut first = Command::new(&bin)
        .args([
            "--netns",
            &ns.name,
            "--delay-ms",
            "800",
            "tcp",
            "192.0.2.1:8080",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn the first target");
    let pid = i32::try_from(first.id()).expect("pid");
    first.wait().expect("first target ends");
    // A second target gets the same pid at once, before the next scan.
    let (rd, wr) = nix::unistd::pipe().expect("pipe");
    let bin_s = bin.display().to_string();
    let argv = [
        bin_s.as_str(),
        "--netns",
        &ns.name,
        "--listen",
        LISTEN[1],
        "--delay-ms",
        "1000",
        "tcp",
        "203.0.113.7:8080",
    ];
    let Some(second) = spawn_with_pid(pid, &argv, std::os::fd::AsFd::as_fd(&wr)) else {
        panic!("pid {pid} was taken by another process before the test could reuse it");
    };
    drop(wr);
    let mut text = String::new();
    std::io::Read::read_to_string(&mut fs::File::from(rd), &mut text).expect("read output");
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(second), None);
    assert_eq!(second, pid, "the second target reuses the pid");
    let json: serde_json::Value =
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("probe output {text:?}: {e}"));
    assert_refused(&json, "a target with a reused pid connected unjudged", &d);
}

#[test]
fn status_lists_marked_processes_and_a_restarted_daemon_keeps_the_marks() {
    let _root = root_target();
    let (ns, tmp, policy, name) = by_name("rs");
    let bin = ollama_egress_tests::named_copy(&ollama_egress_tests::probe_bin(), tmp.path(), &name);
    let mut d = process_daemon(&name, &policy);
    // A target that runs across a crash and a restart of the daemon.
    let long = Command::new(&bin)
        .args([
            "--netns",
            &ns.name,
            "--listen",
            LISTEN[1],
            "--delay-ms",
            "2500",
            "tcp",
            "203.0.113.7:8080",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the named copy");
    std::thread::sleep(Duration::from_millis(300));
    let status_of = |d: &ollama_egress_tests::Daemon| {
        let out = d.status_output(&["--json"]);
        (
            out.status.success(),
            serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("status json"),
        )
    };
    let (ok, st) = status_of(&d);
    assert!(ok, "{st:#}");
    assert!(
        st["marked"]
            .as_array()
            .is_some_and(|m| m.iter().any(|p| p.as_u64() == Some(u64::from(long.id())))),
        "status lists the marked process {}: {st:#}",
        long.id()
    );
    d.kill9();
    let args = [
        "--enforce",
        "--process",
        name.as_str(),
        "--policy",
        policy.to_str().expect("utf8"),
    ];
    let second = d.restart(&args);
    let json = probe_json(&long.wait_with_output().expect("probe output"));
    assert_refused(&json, "the target running across the restart", &second);
    let out = Command::new(&bin)
        .args([
            "--netns",
            &ns.name,
            "--listen",
            LISTEN[1],
            "tcp",
            "203.0.113.7:8080",
        ])
        .output()
        .expect("run the named copy");
    assert_eq!(
        probe_json(&out)["errno"].as_i64(),
        Some(i64::from(libc::EPERM)),
        "a new target after the restart"
    );
    let (ok, st) = status_of(&second);
    assert!(ok, "{st:#}");
    assert!(
        st["marking"]
            .as_array()
            .is_some_and(|m| m.len() == ollama_egress::loader::MARK_LINKS.len()
                && m.iter().all(|l| l[1] == true)),
        "{st:#}"
    );
}

#[test]
fn sockets_a_running_target_made_before_the_daemon_are_judged_by_the_packet_backstop() {
    let _root = root_target();
    let (ns, tmp, policy, name) = by_name("rw");
    let bin = ollama_egress_tests::named_copy(&ollama_egress_tests::probe_bin(), tmp.path(), &name);
    let (go, made) = (tmp.path().join("go"), tmp.path().join("go.made"));
    // Control: with no daemon the echo is answered.
    let out = Command::new(&bin)
        .args(["--netns", &ns.name, "raw-ping", "203.0.113.7"])
        .output()
        .expect("run the named copy");
    assert_eq!(
        probe_json(&out)["ok"],
        true,
        "the echo works without a daemon"
    );
    // A raw socket (which no sock_addr hook sees) made before the daemon, used after.
    let early = Command::new(&bin)
        .args([
            "--netns",
            &ns.name,
            "raw-ping",
            "203.0.113.7",
            "--go-file",
            go.to_str().expect("utf-8"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the named copy");
    wait_for_file(&made, "the probe made its raw socket");
    let d = process_daemon(&name, &policy);
    fs::write(&go, b"").expect("go");
    let json = probe_json(&early.wait_with_output().expect("probe output"));
    assert_eq!(
        json["ok"],
        false,
        "an echo on a raw socket made before the daemon reached the denied host: {json}\n{}",
        d.stderr_text()
    );
}

#[test]
fn monitor_mode_by_name_records_only_the_target_and_leaves_nothing_on_the_root() {
    let _root = root_target();
    let (ns, tmp, policy, name) = by_name("mo");
    let bin = ollama_egress_tests::named_copy(&ollama_egress_tests::probe_bin(), tmp.path(), &name);
    let mut d = ollama_egress_tests::Daemon::start(&[
        "--monitor",
        "--process",
        &name,
        "--policy",
        policy.to_str().expect("utf8"),
    ]);
    let out = Command::new(&bin)
        .args([
            "--netns",
            &ns.name,
            "--listen",
            LISTEN[1],
            "tcp",
            "203.0.113.7:8080",
        ])
        .output()
        .expect("run the named copy");
    let target = probe_json(&out);
    assert_eq!(target["ok"], true, "monitor mode lets it through: {target}");
    let other = probe(&[
        "--netns",
        &ns.name,
        "--listen",
        LISTEN[1],
        "tcp",
        "203.0.113.7:8080",
    ]);
    other.assert_ok("another process");
    let evs = d.wait_events(1, |e| {
        e["verdict"] == "would_block" && e["comm"] == name.as_str()
    });
    assert_eq!(
        evs.len(),
        1,
        "one would_block event for the target: {evs:#?}"
    );
    assert!(
        d.events()
            .iter()
            .all(|e| e["pid"].as_u64() != Some(other.pid())),
        "no event for a process of another name: {:#?}",
        d.events()
    );
    let ids: Vec<u32> = d.state().programs.iter().map(|(_, id)| *id).collect();
    let mount = ollama_egress::targeting::cgroup2_mount().expect("cgroup2");
    assert!(d.stop(), "SIGTERM");
    for p in AttachPoint::ALL {
        let on_root = attached_program_ids(&mount, p).expect("query the root");
        assert!(
            !on_root.iter().any(|id| ids.contains(id)),
            "{p:?}: a program of the stopped monitor daemon is still on the root: {on_root:?}"
        );
    }
    assert!(!d.pin_dir.exists(), "monitor mode pins nothing");
}

#[test]
fn a_process_that_takes_the_name_after_exec_is_judged_with_no_daemon() {
    let _root = root_target();
    let (ns, _tmp, policy, name) = by_name("rn");
    let mut d = process_daemon(&name, &policy);
    assert!(d.stop(), "SIGTERM");
    // The probe runs under its own name and renames itself (prctl) before connecting.
    let p = probe(&[
        "--netns",
        &ns.name,
        "--listen",
        LISTEN[1],
        "--comm",
        &name,
        "tcp",
        "203.0.113.7:8080",
    ]);
    p.assert_eperm("a process that took the target name after exec");
}

/// Waits (at most 30 s) until `path` exists.
fn wait_for_file(path: &std::path::Path, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
