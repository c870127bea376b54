use ollama_egress_common::{EVENT_KIND_CONNECT, dns::DnsEvent};

use super::*;

#[test]
fn records_are_dispatched_by_their_header_kind() {
    let header = |kind: u32, size: usize| {
        let h = EventHeader {
            ts_boot_ns: 5,
            kind,
            size: size as u32,
        };
        // SAFETY: `EventHeader` is plain old data without padding.
        unsafe {
            std::slice::from_raw_parts(
                (&h as *const EventHeader).cast::<u8>(),
                size_of::<EventHeader>(),
            )
        }
        .to_vec()
    };
    assert_eq!(
        event_kind(&header(EVENT_KIND_DNS, DnsEvent::SIZE)),
        Some(EVENT_KIND_DNS)
    );
    assert_eq!(
        event_kind(&header(EVENT_KIND_CONNECT, ConnectEvent::SIZE)),
        Some(EVENT_KIND_CONNECT)
    );
    assert_eq!(event_kind(&[0u8; 11]), None);
}

/// A task name the cache has not seen for a pid (an exec renamed the task, or the pid now
/// belongs to another program) is looked up afresh, not answered from the old entry.
#[test]
fn the_exe_cache_looks_up_a_pid_again_under_a_new_task_name() {
    let pid = std::process::id();
    let name = |s: &str| {
        let mut c = [0u8; COMM_LEN];
        c[..s.len()].copy_from_slice(s.as_bytes());
        c
    };
    let mut exes = ExeCache::default();
    let now = Instant::now();
    exes.entries.insert(
        (pid, name("old-program")),
        (now, Some("/old/program".to_owned())),
    );
    assert_eq!(
        exes.get(pid, name("old-program"), now),
        Some("/old/program")
    );
    let real = exe_of(pid);
    assert!(
        real.is_some(),
        "this test's own /proc/self/exe is unreadable"
    );
    assert_eq!(exes.get(pid, name("new-program"), now), real.as_deref());
}

/// An entry older than the cache's second, by the time the caller passes, is looked up again.
#[test]
fn the_exe_cache_looks_up_a_pid_again_after_its_second() {
    let pid = std::process::id();
    let comm = [b'x'; COMM_LEN];
    let mut exes = ExeCache::default();
    let then = Instant::now();
    exes.entries
        .insert((pid, comm), (then, Some("/old/program".to_owned())));
    let almost = then + ExeCache::TTL - Duration::from_millis(1);
    assert_eq!(
        exes.get(pid, comm, almost),
        Some("/old/program"),
        "an entry younger than a second was looked up again"
    );
    let real = exe_of(pid);
    assert!(
        real.is_some(),
        "this test's own /proc/self/exe is unreadable"
    );
    assert_eq!(
        exes.get(pid, comm, then + ExeCache::TTL),
        real.as_deref(),
        "an entry a second old was still answered from the cache"
    );
}
