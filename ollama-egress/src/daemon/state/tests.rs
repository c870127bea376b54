use std::os::unix::fs::PermissionsExt as _;

use super::*;

#[test]
fn round_trip_and_remove() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(DaemonState::read(dir.path()).expect("read"), None);
    let st = DaemonState {
        pid: std::process::id(),
        mode: "enforce".into(),
        target: "cgroup /x".into(),
        cgroup: "/x".into(),
        policy: "built-in".into(),
        generation: 2,
        programs: vec![("egress".into(), 7)],
        started: "2026-11-22T10:00:00Z".into(),
        geo_db: None,
        asn_db: None,
        rules: 3,
        prefixes: PrefixTotals::default(),
        metrics_addr: Some("127.0.0.1:9464".into()),
        counters: Counters {
            connections: VerdictCounts {
                blocked: 2,
                ..VerdictCounts::default()
            },
            ..Counters::default()
        },
        restarts: Some(crate::targeting::unit::Restarts::Covered),
    };
    st.write(dir.path()).expect("write");
    let back = DaemonState::read(dir.path())
        .expect("read")
        .expect("present");
    assert_eq!(back, st);
    assert!(back.daemon_alive());
    let mode = fs::metadata(dir.path().join(STATE_FILE))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    DaemonState::remove(dir.path()).expect("remove");
    DaemonState::remove(dir.path()).expect("remove twice");
    assert_eq!(DaemonState::read(dir.path()).expect("read"), None);
}

#[test]
fn counters_keep_their_names_on_disk() {
    // A file of an older daemon: a flat map, some keys missing, one unknown.
    let old = r#"{"connections.allowed":3,"packets.egress.blocked":5,"bytes.ingress.would_block":7,"events_lost":1,"log_dropped":2,"something.else":9}"#;
    let c: Counters = serde_json::from_str(old).expect("old counters");
    assert_eq!(c.connections.allowed, 3);
    assert_eq!(c.connections.blocked, 0);
    assert_eq!(c.packets.egress.blocked, 5);
    assert_eq!(c.bytes.ingress.would_block, 7);
    assert_eq!((c.events_lost, c.log_dropped), (1, 2));
    let keys: Vec<String> = c.entries().into_keys().collect();
    let mut expected = vec!["events_lost".to_owned(), "log_dropped".to_owned()];
    for v in ["allowed", "blocked", "would_block"] {
        expected.push(format!("connections.{v}"));
        for d in ["egress", "ingress"] {
            expected.push(format!("packets.{d}.{v}"));
            expected.push(format!("bytes.{d}.{v}"));
        }
    }
    expected.sort();
    assert_eq!(keys, expected);
    let back: Counters =
        serde_json::from_slice(&serde_json::to_vec(&c).expect("write")).expect("read");
    assert_eq!(back, c);
}
