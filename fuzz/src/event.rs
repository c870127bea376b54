//! Event decoder checks: ring-buffer bytes → record → log line → back.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use ipnet::IpNet;
use ollama_egress::logstore::{EventRecord, Filter, LogWriter, RotateOptions, query};
use ollama_egress::model::{Family, Mode, Verdict};
use ollama_egress::pipeline::{BootClock, Decoder, GenerationInfo};
use ollama_egress_common::{
    COMM_LEN, ConnectEvent, EVENT_KIND_CONNECT, FAMILY_IPV4, VERDICT_ALLOWED, VERDICT_WOULD_BLOCK,
};

/// The daemon state the bytes after the event set up.
#[derive(Debug, Arbitrary)]
pub struct Setup {
    /// Wall-clock ns at boot, shifted right by 2 (up to ~2116; the kernel stamp adds at most
    /// ~584 years, so every time stays in the years the log format writes).
    pub clock: u64,
    /// Policy generations pushed, oldest first.
    pub generations: Vec<(u32, Vec<String>, bool)>,
    /// The executable path.
    pub exe: Option<String>,
}

/// Decodes `data` as the pipeline does and checks the record, its JSON line, and that the log
/// store finds it by its own values.
pub fn check(data: &[u8]) {
    let ev = ConnectEvent::from_bytes(data);
    let header_ok = data.len() >= ConnectEvent::SIZE
        && u32::from_ne_bytes(data[8..12].try_into().expect("4 bytes")) == EVENT_KIND_CONNECT
        && u32::from_ne_bytes(data[12..16].try_into().expect("4 bytes"))
            == ConnectEvent::SIZE as u32;
    assert_eq!(
        ev.is_some(),
        header_ok,
        "from_bytes accepted/refused the wrong header"
    );
    let Some(ev) = ev else { return };
    assert_eq!(
        ev.as_bytes(),
        &data[..ConnectEvent::SIZE],
        "as_bytes(from_bytes(b)) != b"
    );

    let setup =
        Setup::arbitrary(&mut Unstructured::new(&data[ConnectEvent::SIZE..])).unwrap_or(Setup {
            clock: 0,
            generations: Vec::new(),
            exe: None,
        });
    let mut decoder = Decoder::new(BootClock::with_offset(i128::from(setup.clock >> 2)), None);
    for (generation, rules, enforce) in &setup.generations {
        decoder.push_generation(GenerationInfo {
            generation: *generation,
            rules: Arc::new(rules.clone()),
            mode: if *enforce {
                Mode::Enforce
            } else {
                Mode::Monitor
            },
        });
    }
    let rec = match decoder.decode(&ev, setup.exe.clone()) {
        Ok(rec) => rec,
        Err(e) => {
            use ollama_egress::model::{Direction, Hook, Mode, Verdict, Via};
            let known = Verdict::from_kernel(ev.verdict).is_ok()
                && Mode::from_kernel(ev.mode).is_ok()
                && Direction::from_kernel(ev.direction).is_ok()
                && Hook::from_kernel(ev.hook).is_ok()
                && Via::from_kernel(ev.v4_form).is_ok();
            assert!(!known, "an event of known values was refused: {e}");
            return;
        }
    };
    check_record(&ev, &setup, &rec);

    // The log line and back.
    let line = serde_json::to_string(&rec).expect("a record serialises");
    assert!(!line.contains('\n'), "a record is one line: {line}");
    let back: EventRecord = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("the log line does not parse back: {e}\n{line}"));
    let mut want = rec.clone();
    let nanos = want.ts.nanosecond();
    want.ts = want
        .ts
        .replace_nanosecond(nanos - nanos % 1000)
        .expect("a valid nanosecond");
    assert_eq!(back, want, "log line round trip\n{line}");

    // Written by the daemon's writer, found by a query for its own values.
    let dir = crate::scratch_dir("event");
    let _ = std::fs::remove_file(dir.join(ollama_egress::logstore::EVENTS_FILE));
    let mut w = LogWriter::open(&dir, RotateOptions::default()).expect("opening the log");
    w.write(&rec).expect("writing the record");
    w.flush().expect("flushing the log");
    drop(w);
    let filter = Filter {
        verdict: Some(back.verdict),
        direction: Some(back.direction),
        since: Some(back.ts),
        until: Some(back.ts),
        country: back.country.clone(),
        dst: Some(IpNet::from(back.dst)),
        host: None,
        port: Some(back.dport),
        comm: Some(back.comm.clone()),
        rule: Some(back.rule.clone()),
        limit: None,
    };
    assert!(
        filter.matches(&back),
        "a filter of the record's own values rejects it"
    );
    for limit in [None, Some(1)] {
        let f = Filter {
            limit,
            ..filter.clone()
        };
        let mut found = Vec::new();
        query(&dir, &f, |r| {
            found.push(r.clone());
            Ok(())
        })
        .expect("querying the log");
        assert_eq!(
            found,
            std::slice::from_ref(&back),
            "query {f:?} for the record's own values\n{line}"
        );
    }
}

/// The record says what the event says.
fn check_record(ev: &ConnectEvent, setup: &Setup, rec: &EventRecord) {
    assert_eq!(
        (rec.pid, rec.tid, rec.uid, rec.gid),
        (ev.pid, ev.tid, ev.uid, ev.gid)
    );
    assert_eq!(rec.exe, setup.exe);
    assert_eq!(
        u32::from(rec.dport),
        if ev.dport > 0xffff { 0 } else { ev.dport }
    );
    match ev.protocol {
        6 => assert_eq!(rec.proto, "tcp"),
        17 => assert_eq!(rec.proto, "udp"),
        p => assert_eq!(rec.proto, p.min(255).to_string()),
    }
    let want_dst = if ev.family == FAMILY_IPV4 {
        IpAddr::V4(Ipv4Addr::new(
            ev.daddr[0],
            ev.daddr[1],
            ev.daddr[2],
            ev.daddr[3],
        ))
    } else {
        IpAddr::V6(Ipv6Addr::from(ev.daddr))
    };
    assert_eq!(rec.dst, want_dst);
    assert_eq!(rec.family, Family::of(&rec.dst));
    // No geo database: nothing is made up.
    assert_eq!((&rec.country, rec.asn, &rec.as_org), (&None, None, &None));

    let comm_end = ev.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    assert_eq!(rec.comm, String::from_utf8_lossy(&ev.comm[..comm_end]));

    // Every kernel verdict decodes to itself (any other number was refused above).
    let verdict = match ev.verdict {
        VERDICT_ALLOWED => Verdict::Allowed,
        VERDICT_WOULD_BLOCK => Verdict::WouldBlock,
        _ => Verdict::Blocked,
    };
    assert_eq!(rec.verdict, verdict);

    // The newest generation of that number among the last eight names the rule.
    let kept = &setup.generations[setup.generations.len().saturating_sub(8)..];
    let generation = kept.iter().rev().find(|g| g.0 == ev.generation);
    // The mode is the one the kernel reported.
    assert_eq!(rec.mode.to_kernel(), ev.mode);
    // The kernel's own rules are named whatever the generation; the policy's by the
    // generation that decided, else by id and generation.
    let rule = match (
        ollama_egress_common::reserved_rule_name(ev.rule_id),
        generation,
    ) {
        (Some(name), _) => name.to_owned(),
        (None, Some(g)) => {
            g.1.get(ev.rule_id as usize)
                .cloned()
                .unwrap_or_else(|| format!("rule#{}", ev.rule_id))
        }
        (None, None) => format!("rule#{}@{}", ev.rule_id, ev.generation),
    };
    assert_eq!(rec.rule, rule);

    // The clock: wall = offset + boot stamp.
    let want_ns = i128::from(setup.clock >> 2) + i128::from(ev.header.ts_boot_ns);
    assert_eq!(rec.ts.unix_timestamp_nanos(), want_ns);
}

/// A valid event for the seed generator.
pub fn sample_event(v6: bool, verdict: u32, rule_id: u32, generation: u32) -> ConnectEvent {
    let mut comm = [0u8; COMM_LEN];
    comm[..6].copy_from_slice(b"ollama");
    let mut daddr = [0u8; 16];
    let family = if v6 {
        daddr = "2001:db8::7".parse::<Ipv6Addr>().expect("address").octets();
        ollama_egress_common::FAMILY_IPV6
    } else {
        daddr[..4].copy_from_slice(&[203, 0, 113, 7]);
        FAMILY_IPV4
    };
    ConnectEvent {
        header: ollama_egress_common::EventHeader {
            ts_boot_ns: 1_500_000_123,
            kind: EVENT_KIND_CONNECT,
            size: ConnectEvent::SIZE as u32,
        },
        tid: 4243,
        pid: 4242,
        uid: 1000,
        gid: 1000,
        comm,
        family,
        protocol: if v6 { 17 } else { 6 },
        dport: 443,
        verdict,
        rule_id,
        generation,
        hook: if v6 {
            ollama_egress_common::HOOK_SENDMSG6
        } else {
            ollama_egress_common::HOOK_CONNECT4
        },
        v4_form: 0,
        daddr,
        mode: if verdict == ollama_egress_common::VERDICT_BLOCKED {
            ollama_egress_common::MODE_ENFORCE
        } else {
            ollama_egress_common::MODE_MONITOR
        },
        direction: ollama_egress_common::DIRECTION_EGRESS,
        lport: 0,
        reserved: 0,
    }
}
