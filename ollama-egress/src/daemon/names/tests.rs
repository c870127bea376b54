use super::*;
use crate::pipeline::BootClock;

#[test]
fn the_snapshot_round_trips_and_a_restart_learns_it_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let decoder = Mutex::new(Decoder::new(BootClock::now(), None));
    let now = boot_now_ns();
    decoder.lock().expect("lock").learn(&LearnedAnswer {
        at_boot_ns: now,
        name: "registry.ollama.ai".into(),
        addrs: vec![("198.51.100.7".parse().expect("ip"), 600)],
    });
    let mut w = SnapshotWriter::default();
    assert_eq!(w.refresh(&decoder, dir.path()), (1, 0));
    let snap = NamesSnapshot::read(dir.path())
        .expect("read")
        .expect("written");
    assert_eq!(snap.bindings.len(), 1);
    assert_eq!(snap.bindings[0].name, "registry.ollama.ai");
    let live = snap.live_now();
    assert_eq!(live.len(), 1);
    assert!(live[0].expires_in_s <= 600 && live[0].expires_in_s >= 590);

    let mut d = Decoder::new(BootClock::now(), None);
    assert_eq!(restore(&mut d, dir.path()), 1);
    assert_eq!(
        d.names().host(
            "198.51.100.7".parse().expect("ip"),
            "default",
            boot_now_ns()
        ),
        Some("registry.ollama.ai")
    );
}

#[test]
fn another_boot_or_an_expired_binding_restores_nothing() {
    let mut snap = NamesSnapshot {
        boot_id: "not-this-boot".into(),
        written_boot_ns: boot_now_ns(),
        evicted: 0,
        truncated: false,
        bindings: vec![NameBinding {
            addr: "198.51.100.7".parse().expect("ip"),
            name: "a.example".into(),
            expires_in_s: 100,
        }],
    };
    assert!(snap.live_now().is_empty());
    snap.boot_id = boot_id();
    assert_eq!(snap.live_now().len(), 1);
    snap.written_boot_ns = boot_now_ns().saturating_sub(200 * 1_000_000_000);
    assert!(snap.live_now().is_empty());
}
