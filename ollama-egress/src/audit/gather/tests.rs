//! The gatherer over a fixture `/proc` tree, and the systemd facts through a fake [`Host`].

use std::{fs, os::unix::fs::symlink, path::Path};

use super::*;

const TCP: &str = include_str!("../procnet/tcp.txt");
const TCP6: &str = include_str!("../procnet/tcp6.txt");

/// `/proc/PID` with a status (effective uid), environ, comm, fd links and a namespace link.
fn process(root: &Path, pid: u32, uid: u32, environ: &[u8], fds: &[&str], ns: &str) {
    let dir = root.join(pid.to_string());
    fs::create_dir_all(dir.join("fd")).expect("mkdir");
    fs::create_dir_all(dir.join("ns")).expect("mkdir");
    fs::create_dir_all(dir.join("net")).expect("mkdir");
    fs::write(
        dir.join("status"),
        format!("Name:\tollama\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"),
    )
    .expect("status");
    fs::write(dir.join("environ"), environ).expect("environ");
    fs::write(dir.join("comm"), "ollama\n").expect("comm");
    for (i, target) in fds.iter().enumerate() {
        symlink(target, dir.join("fd").join(i.to_string())).expect("fd link");
    }
    symlink(ns, dir.join("ns/net")).expect("ns link");
    fs::write(dir.join("net/tcp"), TCP).expect("tcp");
    fs::write(dir.join("net/tcp6"), TCP6).expect("tcp6");
}

fn fixture() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    let root = d.path();
    // The server: 0.0.0.0:11434 and [::]:11434, a pipe and a file.
    process(
        root,
        42,
        998,
        b"OLLAMA_HOST=0.0.0.0\0HOME=/var/lib/ollama\0",
        &[
            "socket:[135361]",
            "socket:[135364]",
            "pipe:[77]",
            "/dev/null",
        ],
        "net:[4026531840]",
    );
    // A runner in the same namespace: 127.0.0.1:11435, and the server's [::] socket inherited.
    process(
        root,
        43,
        0,
        b"OLLAMA_NO_CLOUD=1\0",
        &["socket:[135362]", "socket:[135364]"],
        "net:[4026531840]",
    );
    // In another namespace: the established connection only (not listening).
    process(root, 44, 998, b"", &["socket:[135368]"], "net:[4026532999]");
    d
}

#[test]
fn processes_from_proc() {
    let d = fixture();
    let g = Gatherer::new(d.path());
    // 45 does not exist (exited meanwhile): skipped.
    let ps = g.processes(&[42, 43, 45]).expect("reads");
    assert_eq!(ps.len(), 2, "{ps:?}");
    assert_eq!(
        (ps[0].pid, ps[0].uid, ps[0].comm.as_str()),
        (42, 998, "ollama")
    );
    assert_eq!(
        ps[0].env.get("OLLAMA_HOST").map(String::as_str),
        Some("0.0.0.0")
    );
    assert!(
        !ps[0].env.contains_key("HOME"),
        "only the audited variables"
    );
    assert_eq!(ps[1].uid, 0);
    assert_eq!(
        ps[1].env.get("OLLAMA_NO_CLOUD").map(String::as_str),
        Some("1")
    );
}

#[test]
fn listeners_are_the_targets_listening_sockets() {
    let d = fixture();
    let g = Gatherer::new(d.path());
    let ls = g.listeners(&[42, 43, 44, 45]).expect("reads");
    let got: Vec<(String, u64, Vec<u32>)> = ls
        .iter()
        .map(|l| (l.addr.to_string(), l.inode, l.pids.clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("0.0.0.0:11434".to_owned(), 135_361, vec![42]),
            ("127.0.0.1:11435".to_owned(), 135_362, vec![43]),
            ("[::]:11434".to_owned(), 135_364, vec![42, 43]),
        ],
        "sockets of other processes (192.0.2.7:8080, [2001:db8::5]:80, ...) and established ones are not listed"
    );
    assert_eq!(g.listeners(&[44]).expect("reads"), []);
}

#[test]
fn socket_inodes_of_a_process() {
    let d = fixture();
    let g = Gatherer::new(d.path());
    let mut inodes = g.socket_inodes(42).expect("reads").expect("exists");
    inodes.sort_unstable();
    assert_eq!(inodes, [135_361, 135_364]);
    assert_eq!(g.socket_inodes(45).expect("gone is no error"), None);
}

#[test]
fn show_output() {
    let props = parse_show(
        "NoNewPrivileges=no\nProtectSystem=strict\nUser=\nCapabilityBoundingSet=cap_net_bind_service cap_x\n",
    );
    assert_eq!(props["NoNewPrivileges"], "no");
    assert_eq!(props["ProtectSystem"], "strict");
    assert_eq!(props["User"], "");
    assert_eq!(props["CapabilityBoundingSet"], "cap_net_bind_service cap_x");
}

#[test]
fn which_targets_are_units() {
    let cg = Path::new("/sys/fs/cgroup/system.slice/ollama.service");
    assert_eq!(
        unit_of(&TargetSpec::Unit("ollama".into()), cg).as_deref(),
        Some("ollama.service")
    );
    assert_eq!(
        unit_of(&TargetSpec::Unit("ollama.service".into()), cg).as_deref(),
        Some("ollama.service")
    );
    assert_eq!(
        unit_of(&TargetSpec::Cgroup(cg.to_owned()), cg).as_deref(),
        Some("ollama.service")
    );
    let other = Path::new("/sys/fs/cgroup/ollama");
    assert_eq!(unit_of(&TargetSpec::Cgroup(other.to_owned()), other), None);
    assert_eq!(unit_of(&TargetSpec::Process("ollama".into()), other), None);
}

/// A host whose systemd answers from a fixture.
struct FakeHost {
    running: bool,
    show: Result<&'static str, &'static str>,
}

impl Host for FakeHost {
    fn systemd_running(&self) -> bool {
        self.running
    }
    fn systemctl_show(&self, unit: &str, props: &[&str]) -> Result<String, String> {
        assert_eq!(unit, "ollama.service");
        assert!(props.contains(&"NoNewPrivileges") && props.contains(&"ProtectSystem"));
        self.show.map(str::to_owned).map_err(str::to_owned)
    }
    fn enforcement(&self, _: &Path, _: &Path) -> Enforcement {
        Enforcement::default()
    }
    fn now(&self) -> u64 {
        0
    }
}

#[test]
fn systemd_facts_through_the_host() {
    let host = |running, show| FakeHost { running, show };
    assert_eq!(
        systemd_facts(&host(false, Ok("")), Some("ollama.service")),
        Systemd::NotRunning
    );
    assert_eq!(systemd_facts(&host(true, Ok("")), None), Systemd::NotAUnit);
    let Systemd::Unit { unit, props } = systemd_facts(
        &host(true, Ok("NoNewPrivileges=yes\nProtectSystem=full\n")),
        Some("ollama.service"),
    ) else {
        panic!("a unit")
    };
    assert_eq!(unit, "ollama.service");
    assert_eq!(props["ProtectSystem"], "full");
    assert_eq!(
        systemd_facts(&host(true, Err("no such unit")), Some("ollama.service")),
        Systemd::Failed {
            unit: "ollama.service".into(),
            detail: "no such unit".into()
        }
    );
}
