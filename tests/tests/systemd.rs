//! The package's unit, as shipped (hardening included), under a real systemd booted in an overlay
//! of the Debian root with the `.deb` installed, guarding a stand-in `ollama.service` (bash that
//! connects at once at start to a denied and an allowed address on loopback, then waits):
//!
//! - `systemctl start ollama-egress` returns only when enforcing: a connection from
//!   `ollama.slice` right after it is denied;
//! - `systemctl restart ollama` stays enforced from the new process's first connection (EPERM,
//!   and the event says blocked, with the new pid);
//! - enabled, `systemctl start ollama` starts the daemon first: Ollama's first connection is
//!   judged with nothing pinned before;
//! - `systemctl reload ollama-egress` applies a changed policy; a bad one is refused and the old
//!   one stays;
//! - `systemctl stop ollama-egress` leaves enforcement pinned: Ollama restarted with no daemon
//!   is still denied (the programs are on the slice), and `status` says so;
//! - an Ollama outside its slice is followed at its own cgroup with a warning naming the
//!   drop-in, the package's postinst says it must be restarted, and `systemctl restart
//!   ollama-egress ollama` brings both back to the slice, Ollama judged from its first
//!   connection.
//!
//! One boot for the whole file (one test, in steps). Needs `OLLAMA_EGRESS_DEB` and
//! `OLLAMA_EGRESS_DEBIAN_ROOT` (`cargo xtask test` sets both).

use std::{
    fs,
    net::TcpListener,
    time::{Duration, Instant},
};

use ollama_egress_tests::{debian, systemd::Systemd};
use serde_json::Value;

/// bash, not a real Ollama: one connection per `HOST:PORT` argument at once at start, each
/// recorded as `TAG PID HOST:PORT ok|<error>`, then it waits (or, with ONCE=1, exits).
const STANDIN: &str = r#"#!/bin/bash
mkdir -p /var/lib/standin
for a in "$@"; do
    if { exec 3<>"/dev/tcp/${a%:*}/${a##*:}"; } 2>/tmp/standin.err; then
        exec 3<&-
        r=ok
    else
        r=$(tr '\n' ' ' </tmp/standin.err)
    fi
    echo "${TAG:-main} $$ $a $r" >>/var/lib/standin/results
done
[ "${ONCE:-0}" = 1 ] && exit 0
exec sleep infinity
"#;

const EPERM: &str = "Operation not permitted";

struct Rig {
    // Dropped in this order: systemd, then the overlay it runs in.
    sd: Systemd,
    _ov: debian::Overlay,
    denied: String,
    allowed: String,
    _listeners: [TcpListener; 2],
}

impl Rig {
    fn results(&self) -> Vec<(String, u32, String, String)> {
        fs::read_to_string(self.sd.path("/var/lib/standin/results"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(4, ' ');
                Some((
                    f.next()?.to_owned(),
                    f.next()?.parse().ok()?,
                    f.next()?.to_owned(),
                    f.next().unwrap_or("").trim().to_owned(),
                ))
            })
            .collect()
    }

    /// Ollama's main pid now.
    fn ollama_pid(&self) -> u32 {
        let pid = self.sd.ok("systemctl show -P MainPID ollama.service");
        pid.trim().parse().expect("MainPID")
    }

    /// What the process `pid` got for `addr`, once it has tried (within 5 s).
    fn outcome(&self, pid: u32, addr: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(r) = self
                .results()
                .into_iter()
                .find(|(_, p, a, _)| *p == pid && a == addr)
            {
                return r.3;
            }
            assert!(
                Instant::now() < deadline,
                "process {pid} recorded nothing for {addr}: {:?}\n{}",
                self.results(),
                self.sd.journal()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asserts Ollama's current process was denied the denied address and reached the allowed
    /// one (or was denied both, when `both`).
    fn assert_ollama(&self, what: &str, both: bool) -> u32 {
        let pid = self.ollama_pid();
        assert_ne!(pid, 0, "{what}: ollama.service has no main process");
        let d = self.outcome(pid, &self.denied);
        assert!(d.contains(EPERM), "{what}: denied address gave {d:?}");
        let a = self.outcome(pid, &self.allowed);
        if both {
            assert!(
                a.contains(EPERM),
                "{what}: the newly denied address gave {a:?}"
            );
        } else {
            assert_eq!(a, "ok", "{what}: allowed address");
        }
        pid
    }

    fn events(&self) -> Vec<Value> {
        fs::read_to_string(self.sd.path("/var/lib/ollama-egress/events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for the event of `pid`'s connection to the denied address; asserts it is blocked.
    fn assert_blocked_event(&self, ns_pid: u32, what: &str) {
        let pid = self.sd.host_pid(ns_pid).expect("the process runs");
        let port: u64 = self
            .denied
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(e) = self
                .events()
                .into_iter()
                .find(|e| e["pid"] == u64::from(pid) && e["dport"] == port)
            {
                assert_eq!(e["verdict"], "blocked", "{what}: {e}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: no event for pid {pid} ({ns_pid} in the namespace) in 5 s: {:?}\n{}",
                self.events(),
                self.sd.journal()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn generation(&self) -> u64 {
        let text = fs::read_to_string(self.sd.path("/var/lib/ollama-egress/state.json"))
            .expect("state.json");
        let st: Value = serde_json::from_str(&text).expect("state json");
        st["generation"].as_u64().expect("generation")
    }

    /// Waits (3 s at most) until the daemon's state names a cgroup ending in `suffix` and says
    /// restarts are `restarts` there.
    fn wait_target(&self, suffix: &str, restarts: &str) {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let text = fs::read_to_string(self.sd.path("/var/lib/ollama-egress/state.json"))
                .unwrap_or_default();
            let st: Value = serde_json::from_str(&text).unwrap_or_default();
            if st["cgroup"].as_str().is_some_and(|c| c.ends_with(suffix))
                && st["restarts"] == restarts
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon is not on …{suffix} ({restarts}) after 3 s: {st}\n{}",
                self.sd.journal()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn write_policy(&self, text: &str) {
        fs::write(self.sd.path("/etc/ollama-egress/policy.toml"), text).expect("write policy");
    }
}

fn policy(denied: &[&str]) -> String {
    let cidrs: Vec<String> = denied
        .iter()
        .map(|a| format!("\"{}/32\"", a.split(':').next().unwrap_or(a)))
        .collect();
    format!(
        "default = \"allow\"\n\n[deny]\ncidrs = [{}]\n",
        cidrs.join(", ")
    )
}

fn rig() -> Rig {
    let ov = debian::installed();
    // Loopback listeners on the host (the namespace shares its network): without enforcement
    // both connections succeed.
    let l_denied = TcpListener::bind("127.0.0.3:0").expect("listen on 127.0.0.3");
    let l_allowed = TcpListener::bind("127.0.0.2:0").expect("listen on 127.0.0.2");
    let denied = l_denied.local_addr().expect("addr").to_string();
    let allowed = l_allowed.local_addr().expect("addr").to_string();
    let root = ov.root();
    fs::write(root.join("usr/local/bin/ollama-standin"), STANDIN).expect("stand-in");
    ov.ok("chmod 0755 /usr/local/bin/ollama-standin");
    fs::write(
        root.join("etc/systemd/system/ollama.service"),
        format!(
            "[Unit]\nDescription=Stand-in for Ollama\n\
             # The test restarts it more often than the default start limit allows.\n\
             StartLimitIntervalSec=0\n\n[Service]\n\
             ExecStart=/usr/local/bin/ollama-standin {denied} {allowed}\n"
        ),
    )
    .expect("ollama.service");
    fs::write(
        root.join("etc/ollama-egress/policy.toml"),
        policy(&[&denied]),
    )
    .expect("policy");
    let sd = Systemd::boot(&ov);
    Rig {
        sd,
        _ov: ov,
        denied,
        allowed,
        _listeners: [l_denied, l_allowed],
    }
}

#[test]
fn the_shipped_unit_under_systemd_keeps_ollama_enforced_across_restarts_reloads_and_stops() {
    let r = rig();
    let sd = &r.sd;
    // The drop-in is in force: Ollama's slice is ollama.slice.
    assert_eq!(
        sd.ok("systemctl show -P Slice ollama.service").trim(),
        "ollama.slice"
    );

    // 1. start returns only when enforcing: a process in ollama.slice started right after it
    //    is judged from its first connection.
    sd.ok(&format!(
        "systemctl start ollama-egress && \
         systemd-run --quiet --wait --slice=ollama.slice -E TAG=first -E ONCE=1 \
         /usr/local/bin/ollama-standin {}",
        r.denied
    ));
    let first = r
        .results()
        .into_iter()
        .find(|x| x.0 == "first")
        .expect("the first probe recorded its outcome");
    assert!(
        first.3.contains(EPERM),
        "right after start: {first:?}\n{}",
        sd.journal()
    );
    let status = sd.ok("ollama-egress status");
    assert!(
        status.contains("ollama.slice") && status.contains("restarts:  covered"),
        "status under systemd:\n{status}"
    );

    // 2. Ollama starts and restarts: each new process is denied at once, and the daemon
    //    records it as blocked.
    sd.ok("systemctl start ollama");
    let mut pids = vec![r.assert_ollama("first start", false)];
    for round in 0..3 {
        sd.ok("systemctl restart ollama");
        let pid = r.assert_ollama(&format!("restart {round}"), false);
        assert!(
            !pids.contains(&pid),
            "restart {round}: the same process {pid}"
        );
        r.assert_blocked_event(pid, &format!("restart {round}"));
        pids.push(pid);
    }
    assert_eq!(
        sd.ok("systemctl is-active ollama-egress").trim(),
        "active",
        "the daemon runs across Ollama's restarts"
    );

    // 3. Reload: a changed policy applies; a bad one is refused and the old one stays.
    let before = r.generation();
    r.write_policy(&policy(&[&r.denied, &r.allowed]));
    sd.ok("systemctl reload ollama-egress");
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.generation() == before {
        assert!(
            Instant::now() < deadline,
            "reload not applied in 10 s\n{}",
            sd.journal()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    sd.ok("systemctl restart ollama");
    r.assert_ollama("after the reload", true);
    let applied = r.generation();
    r.write_policy("default = \"allow\"\n[deny]\ncidrs = [\"not an address\"]\n");
    sd.ok("systemctl reload ollama-egress");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sd.journal().contains("policy reload failed") {
        assert!(
            Instant::now() < deadline,
            "the bad policy was not refused\n{}",
            sd.journal()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        r.generation(),
        applied,
        "a bad policy changed the generation"
    );
    sd.ok("systemctl restart ollama");
    r.assert_ollama("after the refused reload", true);
    assert_eq!(sd.ok("systemctl is-active ollama-egress").trim(), "active");

    // 4. Stopped (and disabled, so Ollama's start does not start it again): enforcement stays
    //    pinned on the slice, restarts included.
    r.write_policy(&policy(&[&r.denied]));
    sd.ok("systemctl reload ollama-egress");
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.generation() == applied {
        assert!(
            Instant::now() < deadline,
            "reload not applied in 10 s\n{}",
            sd.journal()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    sd.ok("systemctl disable ollama-egress 2>/dev/null; systemctl stop ollama-egress");
    for round in 0..2 {
        sd.ok("systemctl restart ollama");
        r.assert_ollama(&format!("restart {round} with the daemon stopped"), false);
    }
    let out = sd.sh("systemctl is-active ollama-egress");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "inactive");
    let status = sd.ok("ollama-egress status");
    assert!(
        status.contains("ENFORCING WITHOUT A DAEMON") && status.contains("restarts:  covered"),
        "status with the daemon stopped:\n{status}"
    );

    // 5. Boot order with nothing pinned: detached, Ollama stopped, the daemon enabled; starting
    //    Ollama starts the daemon first, so Ollama's first connection is judged.
    sd.ok("systemctl stop ollama && ollama-egress detach");
    sd.ok("systemctl enable ollama-egress 2>/dev/null");
    sd.ok("systemctl start ollama");
    assert_eq!(sd.ok("systemctl is-active ollama-egress").trim(), "active");
    let pid = r.assert_ollama(
        "Ollama started with the daemon enabled, nothing pinned",
        false,
    );
    r.assert_blocked_event(pid, "first start after detach");

    // 6. An Ollama outside its slice (an override of the administrator's): the daemon follows it
    //    to its own cgroup and warns, naming the drop-in; installing the package says Ollama
    //    must be restarted once; restarted into the slice, the daemon moves back there.
    let dir = sd.path("/etc/systemd/system/ollama.service.d");
    fs::create_dir_all(&dir).expect("mkdir the override directory");
    fs::write(
        dir.join("zz-outside.conf"),
        "[Service]\nSlice=system.slice\n",
    )
    .expect("override");
    sd.ok("systemctl daemon-reload && systemctl restart ollama");
    r.wait_target("/system.slice/ollama.service", "followed");
    let journal = sd.journal();
    assert!(
        journal.contains("not in ollama.slice")
            && journal.contains("/usr/lib/systemd/system/ollama.service.d/ollama-egress.conf"),
        "no warning naming the drop-in:\n{journal}"
    );
    fs::copy(debian::deb(), sd.path("/root/ollama-egress.deb")).expect("copy the package in");
    let said = sd.ok("dpkg -i /root/ollama-egress.deb 2>&1");
    assert!(
        said.contains("Ollama runs outside ollama.slice until it is restarted once"),
        "postinst said nothing about the slice:\n{said}"
    );
    // What the postinst says to run: the daemon restarts first (Ollama stopped, it attaches to
    // the slice), then Ollama starts in the slice, judged from its first connection.
    fs::remove_file(dir.join("zz-outside.conf")).expect("remove the override");
    sd.ok("systemctl daemon-reload && systemctl restart ollama-egress ollama");
    r.wait_target("/ollama.slice", "covered");
    r.assert_ollama("back in the slice", false);
    let said = sd.ok("dpkg -i /root/ollama-egress.deb 2>&1");
    assert!(!said.contains("outside ollama.slice"), "{said}");
}
