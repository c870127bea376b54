//! The report: order, summary, exit status, and both renderings.

use std::path::PathBuf;

use super::{
    facts::{Listener, ProcessFacts, Systemd},
    *,
};

fn facts() -> Facts {
    Facts {
        target: "cgroup /sys/fs/cgroup/ollama".into(),
        cgroup: PathBuf::from("/sys/fs/cgroup/ollama"),
        processes: vec![ProcessFacts {
            pid: 42,
            comm: "oll\u{1b}[31mama".into(),
            uid: 0,
            env: [("OLLAMA_HOST".to_owned(), "evil\u{7}:11434".to_owned())].into(),
        }],
        listeners: vec![Listener {
            addr: "0.0.0.0:11434".parse().expect("addr"),
            inode: 7,
            pids: vec![42],
        }],
        systemd: Systemd::NotRunning,
        ..Facts::default()
    }
}

#[test]
fn findings_sorted_worst_first_with_exit_one_on_high() {
    let r = Report::new(facts());
    let sev: Vec<Severity> = r.findings.iter().map(|f| f.severity).collect();
    let mut sorted = sev.clone();
    sorted.sort();
    assert_eq!(sev, sorted);
    let s = r.summary();
    assert_eq!(s.high, 2, "{:#?}", r.findings); // the listener, root
    assert!(s.medium >= 2 && s.info == 1, "{s:?}");
    assert_eq!(r.exit_code(), 1);
}

#[test]
fn no_high_exits_zero() {
    let mut f = facts();
    f.processes[0].uid = 998;
    f.processes[0].env.clear();
    f.listeners[0].addr = "127.0.0.1:11434".parse().expect("addr");
    let r = Report::new(f);
    assert_eq!(r.summary().high, 0, "{:#?}", r.findings);
    assert_eq!(r.exit_code(), 0);
}

#[test]
fn json_schema() {
    let r = Report::new(facts());
    let mut out = Vec::new();
    render::json(&r, &mut out).expect("write");
    let text = String::from_utf8(out).expect("utf-8");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text}"
    );
    let v: serde_json::Value = serde_json::from_str(&text).expect("one JSON document");
    assert_eq!(v["version"], render::SCHEMA_VERSION);
    assert_eq!(v["target"], "cgroup /sys/fs/cgroup/ollama");
    assert_eq!(v["cgroup"], "/sys/fs/cgroup/ollama");
    assert_eq!(v["listeners"][0]["addr"], "0.0.0.0:11434");
    assert_eq!(v["listeners"][0]["pids"][0], 42);
    assert_eq!(v["processes"][0]["uid"], 0);
    let first = &v["findings"][0];
    assert_eq!(first["severity"], "high");
    for key in ["id", "seen", "fix"] {
        assert!(first[key].is_string(), "{key}: {first}");
    }
    assert_eq!(v["summary"]["high"], 2);
    assert_eq!(v["summary"]["exit"], 1);
    let n = v["findings"].as_array().expect("array").len() as u64;
    let s = &v["summary"];
    let total: u64 = ["high", "medium", "low", "info"]
        .iter()
        .map(|k| s[*k].as_u64().expect("count"))
        .sum();
    assert_eq!(total, n);
}

#[test]
fn text_table_groups_by_severity() {
    let r = Report::new(facts());
    let mut out = Vec::new();
    render::text(&r, &mut out).expect("write");
    let text = String::from_utf8(out).expect("utf-8");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text}"
    );
    let high = text.find("\nHIGH\n").expect("HIGH group");
    let medium = text.find("\nMEDIUM\n").expect("MEDIUM group");
    let info = text.find("\nINFO\n").expect("INFO group");
    assert!(high < medium && medium < info, "{text}");
    let listen = text.find("listen.all-addresses").expect("the listener");
    assert!(high < listen && listen < medium, "{text}");
    assert!(text.contains("fix: bind Ollama to loopback"), "{text}");
    let s = r.summary();
    let last = format!(
        "{} high, {} medium, {} low, {} info",
        s.high, s.medium, s.low, s.info
    );
    assert!(text.trim_end().ends_with(&last), "{text}");
}
