//! Every check on fixture facts: a hardened setup has no finding; each weakness, alone, gives
//! exactly its finding.

use std::{collections::BTreeMap, path::PathBuf};

use super::*;
use crate::audit::facts::{Enforcement, GeoDbFacts, Listener, PolicyFacts};

const NOW: u64 = 1_800_000_000;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn listener(addr: &str, pid: u32) -> Listener {
    Listener {
        addr: addr.parse().expect("socket address"),
        inode: 1000 + u64::from(pid),
        pids: vec![pid],
    }
}

/// Ollama bound to loopback, its own user, no cloud, a sandboxed unit, a deny policy with an
/// inbound section, pinned enforcement, fresh geo databases.
fn hardened() -> Facts {
    let good: BTreeMap<String, String> = [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "read-only"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("User", "ollama"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    Facts {
        target: "unit ollama.service".into(),
        cgroup: PathBuf::from("/sys/fs/cgroup/system.slice/ollama.service"),
        unit: Some("ollama.service".into()),
        processes: vec![ProcessFacts {
            pid: 42,
            comm: "ollama".into(),
            uid: 998,
            env: env(&[
                ("OLLAMA_HOST", "127.0.0.1:11434"),
                ("OLLAMA_NO_CLOUD", "1"),
                ("OLLAMA_ORIGINS", "http://localhost:3000"),
            ]),
        }],
        listeners: vec![listener("127.0.0.1:11434", 42), listener("[::1]:38001", 42)],
        policy: PolicyFacts {
            origin: "/etc/ollama-egress/policy.toml".into(),
            default: Action::Deny,
            inbound: true,
            uses_geo: true,
        },
        enforcement: Enforcement {
            pin_dir: PathBuf::from("/sys/fs/bpf/ollama-egress"),
            pinned: HOOKS.to_vec(),
            attached: HOOKS.to_vec(),
            error: None,
        },
        systemd: Systemd::Unit {
            unit: "ollama.service".into(),
            props: good,
        },
        geo: vec![GeoDbFacts {
            kind: "country",
            path: PathBuf::from("/var/lib/ollama-egress/geo/country.mmdb"),
            built: NOW - 3 * 86_400,
        }],
        now: NOW,
    }
}

fn ids(f: &Facts) -> Vec<(&'static str, Severity)> {
    all(f).into_iter().map(|x| (x.id, x.severity)).collect()
}

fn only(f: &Facts) -> Finding {
    let found = all(f);
    assert_eq!(found.len(), 1, "{found:#?}");
    found.into_iter().next().expect("one")
}

#[test]
fn hardened_setup_has_no_finding() {
    assert_eq!(all(&hardened()), []);
}

#[test]
fn listening_on_all_addresses_is_high() {
    for addr in ["0.0.0.0:11434", "[::]:11434", "[::ffff:0.0.0.0]:11434"] {
        let mut f = hardened();
        f.listeners = vec![listener(addr, 42)];
        let found = all(&f);
        let x = found
            .iter()
            .find(|x| x.id == "listen.all-addresses")
            .unwrap_or_else(|| panic!("{addr}: {found:#?}"));
        assert_eq!(x.severity, Severity::High);
        assert!(
            x.seen.contains(addr) && x.seen.contains("pid 42"),
            "{}",
            x.seen
        );
        assert!(x.fix.contains("OLLAMA_HOST=127.0.0.1:11434"), "{}", x.fix);
        // With an [inbound] section that is the only finding.
        assert_eq!(found.len(), 1, "{found:#?}");
    }
}

#[test]
fn listening_on_one_lan_address_is_medium() {
    let mut f = hardened();
    f.listeners = vec![listener("192.168.1.5:11434", 42)];
    let x = only(&f);
    assert_eq!(
        (x.id, x.severity),
        ("listen.non-loopback", Severity::Medium)
    );
    assert!(x.seen.contains("192.168.1.5:11434"), "{}", x.seen);
}

#[test]
fn loopback_listeners_and_mapped_loopback_are_fine() {
    let mut f = hardened();
    f.listeners = vec![
        listener("127.0.0.53:11434", 42),
        listener("[::ffff:127.0.0.1]:11434", 43),
    ];
    assert_eq!(all(&f), []);
}

#[test]
fn no_listener_is_info() {
    let mut f = hardened();
    f.listeners.clear();
    assert_eq!(ids(&f), [("listen.none", Severity::Info)]);
}

#[test]
fn no_inbound_section_is_medium_when_exposed_and_low_otherwise() {
    let mut f = hardened();
    f.policy.inbound = false;
    let x = only(&f);
    assert_eq!((x.id, x.severity), ("inbound.none", Severity::Low));
    f.listeners.push(listener("0.0.0.0:11434", 42));
    let found = ids(&f);
    assert!(
        found.contains(&("inbound.none", Severity::Medium)),
        "{found:?}"
    );
    assert!(
        found.contains(&("listen.all-addresses", Severity::High)),
        "{found:?}"
    );
    assert_eq!(found.len(), 2, "{found:?}");
}

#[test]
fn ollama_host_values() {
    let cases: [(&str, Option<(&str, Severity)>); 14] = [
        ("0.0.0.0", Some(("env.ollama-host-all", Severity::High))),
        (
            "0.0.0.0:11434",
            Some(("env.ollama-host-all", Severity::High)),
        ),
        (
            "http://0.0.0.0:11434",
            Some(("env.ollama-host-all", Severity::High)),
        ),
        (":11434", Some(("env.ollama-host-all", Severity::High))),
        ("[::]:11434", Some(("env.ollama-host-all", Severity::High))),
        ("::", Some(("env.ollama-host-all", Severity::High))),
        (
            "192.168.1.5:11434",
            Some(("env.ollama-host-remote", Severity::Medium)),
        ),
        (
            "https://ollama.lan",
            Some(("env.ollama-host-remote", Severity::Medium)),
        ),
        ("127.0.0.1", None),
        ("127.0.0.1:8080", None),
        ("localhost:11434", None),
        ("[::1]:11434", None),
        ("", None),
        ("  ", None),
    ];
    for (value, want) in cases {
        let mut f = hardened();
        f.processes[0]
            .env
            .insert("OLLAMA_HOST".into(), value.into());
        let got: Vec<_> = ids(&f);
        assert_eq!(
            got,
            want.into_iter().collect::<Vec<_>>(),
            "OLLAMA_HOST={value:?}"
        );
    }
    // Unset: Ollama's default, loopback.
    let mut f = hardened();
    f.processes[0].env.remove("OLLAMA_HOST");
    assert_eq!(all(&f), []);
}

#[test]
fn host_part_as_ollama_reads_it() {
    assert_eq!(ollama_host_part("http://[::]:11434/"), "::");
    assert_eq!(ollama_host_part("0.0.0.0"), "0.0.0.0");
    assert_eq!(ollama_host_part(":11434"), "");
    assert_eq!(ollama_host_part("2001:db8::1"), "2001:db8::1");
    assert_eq!(ollama_host_part("ollama.lan:80"), "ollama.lan");
}

#[test]
fn origins() {
    let mut f = hardened();
    f.processes[0]
        .env
        .insert("OLLAMA_ORIGINS".into(), "http://localhost:3000, *".into());
    let x = only(&f);
    assert_eq!((x.id, x.severity), ("env.origins-any", Severity::High));
    assert!(x.seen.contains("any web page"), "{}", x.seen);
    f.processes[0]
        .env
        .insert("OLLAMA_ORIGINS".into(), "chrome-extension://*".into());
    assert_eq!(ids(&f), [("env.origins-wildcard", Severity::Medium)]);
}

#[test]
fn cloud_features() {
    for (value, on) in [
        (None, true),
        (Some(""), true),
        (Some("0"), true),
        (Some("false"), true),
        (Some("1"), false),
        (Some("true"), false),
        (Some("yes"), false),
    ] {
        let mut f = hardened();
        match value {
            Some(v) => f.processes[0]
                .env
                .insert("OLLAMA_NO_CLOUD".into(), v.into()),
            None => f.processes[0].env.remove("OLLAMA_NO_CLOUD"),
        };
        let want: Vec<_> = on
            .then_some(("env.cloud-on", Severity::Medium))
            .into_iter()
            .collect();
        assert_eq!(ids(&f), want, "OLLAMA_NO_CLOUD={value:?}");
    }
}

#[test]
fn root_is_high_and_names_the_pids() {
    let mut f = hardened();
    let mut runner = f.processes[0].clone();
    runner.pid = 43;
    f.processes.push(runner);
    f.processes[0].uid = 0;
    let x = only(&f);
    assert_eq!((x.id, x.severity), ("process.root", Severity::High));
    assert!(x.seen.starts_with("pid 42 runs"), "{}", x.seen);
    f.processes[1].uid = 0;
    assert!(only(&f).seen.starts_with("pids 42, 43 run"));
}

#[test]
fn systemd_sandbox() {
    let mut f = hardened();
    let Systemd::Unit { props, .. } = &mut f.systemd else {
        unreachable!()
    };
    props.insert("NoNewPrivileges".into(), "no".into());
    props.remove("ProtectSystem");
    props.insert("PrivateTmp".into(), "no".into());
    let found = all(&f);
    let seen: Vec<(&str, Severity, &str)> = found
        .iter()
        .map(|x| (x.id, x.severity, x.seen.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "systemd.sandbox",
                Severity::Medium,
                "ollama.service: NoNewPrivileges=no"
            ),
            (
                "systemd.sandbox",
                Severity::Medium,
                "ollama.service: ProtectSystem=unset"
            ),
            (
                "systemd.sandbox",
                Severity::Low,
                "ollama.service: PrivateTmp=no"
            ),
        ]
    );
    assert!(found[0].fix.contains("systemctl edit ollama.service"));
}

#[test]
fn systemd_not_running_is_info_and_not_a_unit_is_nothing() {
    let mut f = hardened();
    f.systemd = Systemd::NotRunning;
    assert_eq!(ids(&f), [("systemd.not-running", Severity::Info)]);
    f.systemd = Systemd::NotAUnit;
    assert_eq!(all(&f), []);
    f.systemd = Systemd::Failed {
        unit: "ollama.service".into(),
        detail: "Unit ollama.service could not be found.".into(),
    };
    assert_eq!(ids(&f), [("systemd.unreadable", Severity::Low)]);
}

#[test]
fn outbound_default_allow_is_medium() {
    let mut f = hardened();
    f.policy.default = Action::Allow;
    let x = only(&f);
    assert_eq!(
        (x.id, x.severity),
        ("policy.default-allow", Severity::Medium)
    );
    assert!(
        x.seen.contains("/etc/ollama-egress/policy.toml"),
        "{}",
        x.seen
    );
}

#[test]
fn enforcement_states() {
    let mut f = hardened();
    f.enforcement.pinned.clear();
    f.enforcement.attached.clear();
    let x = only(&f);
    assert_eq!(
        (x.id, x.severity),
        ("enforcement.not-pinned", Severity::Medium)
    );
    assert!(x.seen.contains("nothing is enforced"), "{}", x.seen);

    f.enforcement.attached = HOOKS.to_vec();
    assert!(only(&f).seen.contains("monitor mode"));

    f.enforcement.pinned = vec!["egress", "ingress"];
    let seen = only(&f).seen;
    assert!(
        seen.contains("without connect4, connect6, sendmsg4, sendmsg6"),
        "{seen}"
    );

    f.enforcement.error = Some("Operation not permitted".into());
    assert_eq!(ids(&f), [("enforcement.unknown", Severity::Medium)]);
}

#[test]
fn stale_geo_databases() {
    let mut f = hardened();
    f.geo[0].built = NOW - 31 * 86_400;
    let x = only(&f);
    assert_eq!((x.id, x.severity), ("geo.stale", Severity::Medium));
    assert!(x.seen.contains("31 days"), "{}", x.seen);
    f.policy.uses_geo = false;
    assert_eq!(ids(&f), [("geo.stale", Severity::Low)]);
    f.geo[0].built = NOW - 29 * 86_400;
    assert_eq!(all(&f), []);
    f.geo.clear();
    assert_eq!(all(&f), []);
}
