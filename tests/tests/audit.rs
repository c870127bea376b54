//! `ollama-egress audit` against a real target: a process in a cgroup the test makes, inside a
//! network namespace the test makes, listening on 0.0.0.0:11434 (then on 127.0.0.1:11434),
//! running as an unprivileged user with `OLLAMA_NO_CLOUD=1`, beside a decoy listener of another
//! process in the same namespace; enforcement pinned by a daemon run.

use std::{
    ffi::CString,
    fs,
    net::SocketAddrV4,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use ollama_egress_tests::{
    Daemon, NetNs, SpawnRetryingBusy as _, TestCgroup, daemon_bin, probe, require_root, unique,
    write_policy,
};
use serde_json::Value;

/// The unprivileged user the server runs as (`nobody`).
const NOBODY: u32 = 65534;

/// A process that listens on one TCP address in a namespace (optionally in a cgroup, as a user),
/// with a given environment; killed on drop.
struct Listener {
    child: Child,
}

impl Listener {
    /// Enters `ns` (and `cgroup`), binds and listens on `addr`, becomes `uid`, then execs
    /// `sleep`, which keeps the listening socket (the kernel completes connections into its
    /// backlog).
    fn start(
        ns: &NetNs,
        cgroup: Option<&Path>,
        addr: SocketAddrV4,
        env: &[(&str, &str)],
        uid: u32,
    ) -> Self {
        Self::start_as(Path::new("sleep"), ns, cgroup, addr, env, uid)
    }

    /// [`Listener::start`] with another `sleep` executable (a copy under another name).
    fn start_as(
        program: &Path,
        ns: &NetNs,
        cgroup: Option<&Path>,
        addr: SocketAddrV4,
        env: &[(&str, &str)],
        uid: u32,
    ) -> Self {
        let netns = fs::File::open(format!("/run/netns/{}", ns.name))
            .unwrap_or_else(|e| panic!("netns {}: {e}", ns.name));
        let procs = cgroup
            .map(|cg| CString::new(cg.join("cgroup.procs").display().to_string()).expect("path"));
        let ns_fd = netns.as_raw_fd();
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(addr.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let mut cmd = Command::new(program);
        cmd.arg("600")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: between fork and exec the closure only makes raw system calls on memory
        // prepared before the fork (no allocation, no locks).
        unsafe {
            cmd.pre_exec(move || {
                let err = || Err(std::io::Error::last_os_error());
                if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                    return err();
                }
                if let Some(p) = &procs {
                    let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 || libc::write(fd, b"0\n".as_ptr().cast(), 2) != 2 {
                        return err();
                    }
                    libc::close(fd);
                }
                // Not close-on-exec: `sleep` inherits it.
                let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                let one: libc::c_int = 1;
                if s < 0
                    || libc::setsockopt(
                        s,
                        libc::SOL_SOCKET,
                        libc::SO_REUSEADDR,
                        (&one as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    ) != 0
                    || libc::bind(
                        s,
                        (&sin as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    ) != 0
                    || libc::listen(s, 16) != 0
                {
                    return err();
                }
                if uid != 0
                    && (libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(uid) != 0
                        || libc::setuid(uid) != 0)
                {
                    return err();
                }
                Ok(())
            });
        }
        let child = cmd.spawn_retrying_busy();
        let l = Self { child };
        // Listening: a client in the namespace connects.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let p = probe(&[
                "--netns".to_owned(),
                ns.name.clone(),
                "tcp".to_owned(),
                SocketAddrV4::new([127, 0, 0, 1].into(), addr.port()).to_string(),
            ]);
            if p.ok() {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "nothing listens on {addr}: {}",
                p.json
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn audit(args: &[&str]) -> Output {
    Command::new(daemon_bin())
        .arg("audit")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ollama-egress audit")
}

/// `audit --json ARGS`: the exit status and the document.
fn audit_json(args: &[&str]) -> (i32, Value) {
    let out = audit(&[&["--json"], args].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let doc: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "audit --json printed no JSON document ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().expect("exit status"), doc)
}

fn findings<'a>(doc: &'a Value, id: &str) -> Vec<&'a Value> {
    doc["findings"]
        .as_array()
        .expect("findings array")
        .iter()
        .filter(|f| f["id"] == id)
        .collect()
}

#[test]
fn audit_reports_the_all_addresses_listener_until_it_binds_loopback() {
    require_root();
    let ns = NetNs::new("oe-audit", &[]);
    let cg = TestCgroup::new("oe-audit");
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = write_policy(
        tmp.path(),
        "default = \"deny\"\n[allow]\ncidrs = [\"127.0.0.0/8\", \"::1/128\"]\n",
    );
    let cgroup = cg.path.display().to_string();
    let policy_arg = policy.display().to_string();
    let no_pins = format!("/sys/fs/bpf/{}", unique("oe-audit-none"));
    // Another process in the same namespace, outside the target: not the target's socket.
    let _decoy = Listener::start(&ns, None, "0.0.0.0:11435".parse().expect("addr"), &[], 0);
    let mut server = Listener::start(
        &ns,
        Some(&cg.path),
        "0.0.0.0:11434".parse().expect("addr"),
        &[("OLLAMA_HOST", "0.0.0.0:11434"), ("OLLAMA_NO_CLOUD", "1")],
        NOBODY,
    );
    let base = ["--cgroup", &cgroup, "--policy", &policy_arg];

    // Exposed, nothing enforced.
    let (code, doc) = audit_json(&[&base[..], &["--pin-dir", &no_pins]].concat());
    assert_eq!(code, 1, "a high finding exits 1: {doc:#}");
    let listen = findings(&doc, "listen.all-addresses");
    assert_eq!(listen.len(), 1, "{doc:#}");
    assert_eq!(listen[0]["severity"], "high");
    assert!(
        listen[0]["seen"]
            .as_str()
            .expect("seen")
            .contains("0.0.0.0:11434"),
        "{doc:#}"
    );
    assert!(
        listen[0]["fix"]
            .as_str()
            .expect("fix")
            .contains("127.0.0.1")
    );
    let addrs: Vec<&str> = doc["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .map(|l| l["addr"].as_str().expect("addr"))
        .collect();
    assert_eq!(
        addrs,
        ["0.0.0.0:11434"],
        "the decoy on :11435 is not the target's"
    );
    assert_eq!(doc["processes"][0]["uid"], NOBODY, "{doc:#}");
    assert_eq!(findings(&doc, "env.ollama-host-all").len(), 1, "{doc:#}");
    assert_eq!(findings(&doc, "inbound.none")[0]["severity"], "medium");
    assert_eq!(findings(&doc, "enforcement.not-pinned").len(), 1, "{doc:#}");
    assert!(findings(&doc, "process.root").is_empty(), "{doc:#}");
    assert!(findings(&doc, "env.cloud-on").is_empty(), "{doc:#}");
    assert!(findings(&doc, "policy.default-allow").is_empty(), "{doc:#}");
    assert_eq!(
        doc["summary"]["high"].as_u64(),
        Some(2),
        "the listener and OLLAMA_HOST: {doc:#}"
    );
    assert_eq!(doc["summary"]["exit"], 1);

    // Enforcement pinned by a daemon run.
    let daemon = Daemon::start(&["--enforce", "--cgroup", &cgroup, "--policy", &policy_arg]);
    let pins = daemon.pin_dir.display().to_string();
    let with_pins = [&base[..], &["--pin-dir", &pins]].concat();
    let out = audit(&with_pins);
    let before = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("audit, exposed:\n{before}");
    assert_eq!(out.status.code(), Some(1), "{before}");
    let high = before.find("\nHIGH\n").expect("a HIGH group");
    let listen = before.find("listen.all-addresses").expect("the listener");
    assert!(
        high < listen && before.contains("0.0.0.0:11434"),
        "{before}"
    );
    assert!(!before.contains("enforcement.not-pinned"), "{before}");

    // Bound to loopback: not reported, nothing high, exit 0.
    drop(server);
    server = Listener::start(
        &ns,
        Some(&cg.path),
        "127.0.0.1:11434".parse().expect("addr"),
        &[("OLLAMA_HOST", "127.0.0.1:11434"), ("OLLAMA_NO_CLOUD", "1")],
        NOBODY,
    );
    let (code, doc) = audit_json(&with_pins);
    assert!(findings(&doc, "listen.all-addresses").is_empty(), "{doc:#}");
    assert!(findings(&doc, "env.ollama-host-all").is_empty(), "{doc:#}");
    assert_eq!(doc["summary"]["high"], 0, "{doc:#}");
    assert_eq!(code, 0, "no high finding exits 0: {doc:#}");
    assert_eq!(doc["listeners"][0]["addr"], "127.0.0.1:11434", "{doc:#}");
    assert_eq!(findings(&doc, "inbound.none")[0]["severity"], "low");
    // With an [inbound] section (read by the audit; the daemon keeps its own file).
    let guarded = tmp.path().join("guarded.toml");
    fs::write(
        &guarded,
        "default = \"deny\"\n[allow]\ncidrs = [\"127.0.0.0/8\"]\n[inbound]\ndefault = \"deny\"\n[inbound.allow]\ncidrs = [\"127.0.0.0/8\", \"::1/128\"]\n",
    )
    .expect("write policy");
    let guarded = guarded.display().to_string();
    let (code, doc) = audit_json(&[
        "--cgroup",
        &cgroup,
        "--policy",
        &guarded,
        "--pin-dir",
        &pins,
    ]);
    assert!(findings(&doc, "inbound.none").is_empty(), "{doc:#}");
    assert_eq!(code, 0, "{doc:#}");
    let out = audit(&with_pins);
    let after = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("audit, hardened:\n{after}");
    assert_eq!(out.status.code(), Some(0), "{after}");
    assert!(!after.contains("HIGH"), "{after}");
    drop(server);
    drop(daemon);
}

#[test]
fn audit_errors_exit_2() {
    require_root();
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("no-such-cgroup");
    let out = audit(&["--cgroup", &missing.display().to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no target") && err.contains("does not exist"),
        "{err}"
    );

    let cg = TestCgroup::new("oe-audit-empty");
    let cgroup = cg.path.display().to_string();
    let out = audit(&["--cgroup", &cgroup]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no process runs in the target"), "{err}");

    // A target with a process, and a policy that does not parse.
    let ns = NetNs::new("oe-audit-bad", &[]);
    let _server = Listener::start(
        &ns,
        Some(&cg.path),
        "127.0.0.1:11434".parse().expect("addr"),
        &[],
        NOBODY,
    );
    let bad = write_policy(tmp.path(), "default = \"sometimes\"\n");
    let out = audit(&["--cgroup", &cgroup, "--policy", &bad.display().to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("sometimes") && err.contains("line 1"), "{err}");
    assert!(out.stdout.is_empty(), "no report on an error");
}

#[test]
fn audit_by_process_name() {
    require_root();
    let ns = NetNs::new("oe-audit-proc", &[]);
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    // A name no other process has (the kernel keeps 15 bytes of it).
    let name = format!("oe-aud-{}", std::process::id() % 100_000);
    let program = tmp.path().join(&name);
    fs::copy("/bin/sleep", &program).expect("copy sleep");
    let _server = Listener::start_as(
        &program,
        &ns,
        None,
        "0.0.0.0:11434".parse().expect("addr"),
        &[("OLLAMA_NO_CLOUD", "1")],
        NOBODY,
    );
    let no_pins = format!("/sys/fs/bpf/{}", unique("oe-audit-none"));
    let (code, doc) = audit_json(&["--process", &name, "--pin-dir", &no_pins]);
    assert_eq!(code, 1, "{doc:#}");
    assert_eq!(doc["target"], format!("processes named {name}"), "{doc:#}");
    assert_eq!(
        doc["processes"].as_array().map(Vec::len),
        Some(1),
        "{doc:#}"
    );
    assert_eq!(doc["processes"][0]["comm"], name.as_str());
    assert_eq!(doc["listeners"][0]["addr"], "0.0.0.0:11434", "{doc:#}");
    assert_eq!(
        findings(&doc, "listen.all-addresses")[0]["severity"],
        "high"
    );

    let out = audit(&["--process", "oe-aud-nothing", "--pin-dir", &no_pins]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no process runs in the target"), "{err}");
}
