use ollama_egress_common::{
    EVENT_KIND_CONNECT, EventHeader, FAMILY_IPV6, HOOK_CONNECT4, MODE_ENFORCE, VERDICT_BLOCKED,
    VERDICT_WOULD_BLOCK,
};

use super::*;

fn event() -> ConnectEvent {
    let mut comm = [0u8; COMM_LEN];
    comm[..6].copy_from_slice(b"ollama");
    let mut daddr = [0u8; 16];
    daddr[..4].copy_from_slice(&[203, 0, 113, 7]);
    ConnectEvent {
        header: EventHeader {
            ts_boot_ns: 1_500_000,
            kind: EVENT_KIND_CONNECT,
            size: ConnectEvent::SIZE as u32,
        },
        tid: 4243,
        pid: 4242,
        uid: 0,
        gid: 0,
        comm,
        family: FAMILY_IPV4,
        protocol: 6,
        dport: 443,
        verdict: VERDICT_BLOCKED,
        rule_id: 1,
        generation: 3,
        hook: HOOK_CONNECT4,
        v4_form: 0,
        daddr,
        mode: MODE_ENFORCE,
        direction: 0,
        lport: 0,
        reserved: 0,
    }
}

fn decoder() -> Decoder {
    let mut d = Decoder::new(BootClock::with_offset(1_795_000_000_000_000_000), None);
    d.push_generation(GenerationInfo {
        generation: 3,
        rules: Arc::new(vec!["default".into(), "deny.cidrs:203.0.113.0/24".into()]),
        mode: Mode::Enforce,
    });
    d
}

#[test]
fn decodes_a_blocked_ipv4_connect() {
    let ev = event();
    let bytes = ev.as_bytes().to_vec();
    let back = ConnectEvent::from_bytes(&bytes).expect("decodes");
    let rec = decoder()
        .decode(&back, Some("/usr/bin/ollama".into()))
        .expect("decodes");
    assert_eq!(rec.verdict, Verdict::Blocked);
    assert_eq!(rec.mode, Mode::Enforce);
    assert_eq!(rec.pid, 4242);
    assert_eq!(rec.tid, 4243);
    assert_eq!(rec.comm, "ollama");
    assert_eq!(rec.proto, "tcp");
    assert_eq!(rec.family, Family::Ipv4);
    assert_eq!(rec.dst, "203.0.113.7".parse::<IpAddr>().expect("ip"));
    assert_eq!(rec.dport, 443);
    assert_eq!(rec.rule, "deny.cidrs:203.0.113.0/24");
    assert_eq!(rec.exe.as_deref(), Some("/usr/bin/ollama"));
    assert_eq!(rec.ts.unix_timestamp_nanos(), 1_795_000_000_001_500_000);
    assert_eq!(rec.country, None);
}

#[test]
fn decodes_ipv6_udp_would_block() {
    let mut ev = event();
    ev.family = FAMILY_IPV6;
    ev.daddr = "2001:db8::5".parse::<Ipv6Addr>().expect("ip").octets();
    ev.protocol = 17;
    ev.verdict = VERDICT_WOULD_BLOCK;
    ev.mode = ollama_egress_common::MODE_MONITOR;
    ev.rule_id = 0;
    let rec = decoder().decode(&ev, None).expect("decodes");
    assert_eq!(rec.verdict, Verdict::WouldBlock);
    assert_eq!(rec.mode, Mode::Monitor);
    assert_eq!(rec.family, Family::Ipv6);
    assert_eq!(rec.dst.to_string(), "2001:db8::5");
    assert_eq!(rec.proto, "udp");
    assert_eq!(rec.rule, "default");
}

#[test]
fn unknown_generation_and_rule_are_named_not_guessed() {
    let mut ev = event();
    ev.generation = 99;
    assert_eq!(
        decoder().decode(&ev, None).expect("decodes").rule,
        "rule#1@99"
    );
    ev.generation = 3;
    ev.rule_id = 7;
    assert_eq!(decoder().decode(&ev, None).expect("decodes").rule, "rule#7");
    ev.rule_id = ollama_egress_common::RULE_IPV6_ROUTING_HEADER;
    assert_eq!(
        decoder().decode(&ev, None).expect("decodes").rule,
        "ipv6-routing-header"
    );
    ev.rule_id = ollama_egress_common::RULE_IPV4_SOURCE_ROUTE;
    assert_eq!(
        decoder().decode(&ev, None).expect("decodes").rule,
        "ipv4-source-route"
    );
    ev.generation = 99;
    assert_eq!(
        decoder().decode(&ev, None).expect("decodes").rule,
        "ipv4-source-route"
    );
}

#[test]
fn an_unknown_verdict_is_an_error_not_blocked() {
    let mut ev = event();
    ev.verdict = 7;
    let err = decoder()
        .decode(&ev, None)
        .expect_err("verdict 7 is not a verdict");
    assert_eq!((err.what, err.value), ("verdict", 7), "{err}");
}

#[test]
fn hook_group_and_embedded_form_are_decoded() {
    let mut ev = event();
    ev.gid = 1001;
    ev.hook = ollama_egress_common::HOOK_CONNECT6;
    ev.v4_form = ollama_egress_common::V4_FORM_NAT64;
    let rec = decoder().decode(&ev, None).expect("decodes");
    assert_eq!(rec.gid, 1001);
    assert_eq!(rec.hook, Some(Hook::Connect6));
    assert_eq!(rec.via, Some(Via::Nat64));
    assert_eq!(rec.direction, Direction::Outbound);
    let line = serde_json::to_string(&rec).expect("serialises");
    assert!(
        line.contains(r#""hook":"connect6""#) && line.contains(r#""via":"nat64""#),
        "{line}"
    );
}

#[test]
fn unknown_mode_hook_form_or_direction_are_errors() {
    for (what, set) in [
        (
            "mode",
            (|e: &mut ConnectEvent| e.mode = 9) as fn(&mut ConnectEvent),
        ),
        ("hook", |e| e.hook = 99),
        ("via", |e| e.v4_form = 42),
        ("direction", |e| e.direction = 5),
    ] {
        let mut ev = event();
        set(&mut ev);
        let err = decoder().decode(&ev, None).expect_err(what);
        assert_eq!(err.what, what, "{err}");
    }
}

#[test]
fn rejects_short_or_foreign_bytes() {
    let ev = event();
    assert!(ConnectEvent::from_bytes(&ev.as_bytes()[..40]).is_none());
    let mut other = ev;
    other.header.kind = 77;
    assert!(ConnectEvent::from_bytes(other.as_bytes()).is_none());
}

#[test]
fn connect_events_get_the_host_their_address_was_bound_to() {
    let mut d = decoder();
    d.push_generation(GenerationInfo {
        generation: 4,
        rules: Arc::new(vec![
            "default".into(),
            "allow.domains:*.r2.cloudflarestorage.com".into(),
        ]),
        mode: Mode::Enforce,
    });
    let ip: IpAddr = "203.0.113.7".parse().expect("ip");
    let learn = |d: &mut Decoder, at: u64, name: &str| {
        d.learn(&LearnedAnswer {
            at_boot_ns: at,
            name: name.into(),
            addrs: vec![(ip, 60)],
        })
    };
    // Nothing learned: no host.
    assert_eq!(d.decode(&event(), None).expect("decodes").host, None);
    learn(&mut d, 1_000_000, "bucket.r2.cloudflarestorage.com");
    learn(&mut d, 1_200_000, "ollama.com");
    let rec = d.decode(&event(), None).expect("decodes");
    assert_eq!(rec.host.as_deref(), Some("ollama.com"));
    // Decided by a domain rule: the name the rule matches.
    let mut ev = event();
    ev.generation = 4;
    let rec = d.decode(&ev, None).expect("decodes");
    assert_eq!(rec.rule, "allow.domains:*.r2.cloudflarestorage.com");
    assert_eq!(rec.host.as_deref(), Some("bucket.r2.cloudflarestorage.com"));
    let line = serde_json::to_string(&rec).expect("serialises");
    assert!(
        line.contains(r#""host":"bucket.r2.cloudflarestorage.com""#),
        "{line}"
    );
    // After the TTL the name is gone.
    ev.header.ts_boot_ns = 1_200_000 + 61_000_000_000;
    assert_eq!(d.decode(&ev, None).expect("decodes").host, None);
    assert_eq!(d.names().live_pairs(ev.header.ts_boot_ns), 0);
}

#[test]
fn comm_without_nul_uses_all_bytes() {
    let mut comm = "a longer name kept from before".to_owned();
    set_comm(&mut comm, b"0123456789abcdef");
    assert_eq!(comm, "0123456789abcdef");
    set_comm(&mut comm, b"ab\xff\0\0\0\0\0\0\0\0\0\0\0\0\0");
    assert_eq!(comm, "ab\u{fffd}");
}

/// Every field that can be set, set: an inbound IPv6 event from a geo-tagged source, with
/// an executable and a container.
fn busy_event() -> ConnectEvent {
    let mut ev = event();
    ev.family = FAMILY_IPV6;
    ev.daddr = "2001:db8::5".parse::<Ipv6Addr>().expect("ip").octets();
    ev.direction = ollama_egress_common::DIRECTION_INGRESS;
    ev.hook = ollama_egress_common::HOOK_SKB_INGRESS;
    ev.dport = 40123;
    ev.lport = 11434;
    ev.v4_form = ollama_egress_common::V4_FORM_MAPPED;
    ev.comm = *b"a-much-longer-n\0";
    ev.rule_id = 999;
    ev.generation = 77;
    ev
}

#[test]
fn a_kept_record_takes_every_field_of_the_next_event_and_nothing_of_the_last() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (country, asn) = ollama_egress_geo::fixture::documentation_fixture()
        .write_to(dir.path())
        .expect("fixture");
    let geo = Arc::new(GeoDb::open(Some(&country), Some(&asn)).expect("geo"));
    let tagged = |container: Option<&str>| {
        let mut d = decoder().with_container(container.map(str::to_owned));
        d.set_geo(Some(Arc::clone(&geo)));
        d
    };
    let ip: IpAddr = "203.0.113.7".parse().expect("ip");
    let mut named = tagged(None);
    named.learn(&LearnedAnswer {
        at_boot_ns: 1_000_000,
        name: "ollama.com".into(),
        addrs: vec![(ip, 60)],
    });
    // An outbound event to a named, tagged address without exe or container; an inbound one
    // with everything else; one the geo database does not know; and without a database.
    let quiet = (&named, event(), None);
    let busy_decoder = tagged(Some("docker:0123456789ab"));
    let busy = (&busy_decoder, busy_event(), Some("/usr/local/bin/ollama"));
    let mut unknown_ev = event();
    unknown_ev.daddr[..4].copy_from_slice(&[10, 1, 2, 3]);
    let unknown = (&named, unknown_ev, Some("/x"));
    let bare_decoder = decoder();
    let bare = (&bare_decoder, event(), None);
    let cases = [quiet, busy, unknown, bare];
    for (d1, ev1, exe1) in &cases {
        for (d2, ev2, exe2) in &cases {
            let mut kept = d1.decode(ev1, exe1.map(str::to_owned)).expect("decodes");
            d2.decode_into(ev2, *exe2, &mut kept).expect("decodes");
            let fresh = d2.decode(ev2, exe2.map(str::to_owned)).expect("decodes");
            assert_eq!(kept, fresh, "a kept record differs from a fresh one");
        }
    }
    // The cases are what they claim to be.
    let rec = named.decode(&event(), None).expect("decodes");
    assert_eq!(
        (rec.host.as_deref(), rec.country.as_deref(), rec.asn),
        (Some("ollama.com"), Some("CN"), Some(64500))
    );
    let rec = busy_decoder
        .decode(&busy_event(), Some("/e".into()))
        .expect("decodes");
    assert_eq!(
        (
            rec.country.as_deref(),
            rec.as_org.as_deref(),
            rec.src.is_some()
        ),
        (Some("DE"), Some("Example DE Net"), true)
    );
    assert_eq!(rec.rule, "rule#999@77");
}

#[test]
fn events_name_the_target_container() {
    let ev = event();
    let none = decoder().decode(&ev, None).expect("decodes");
    assert_eq!(none.container, None);
    let rec = decoder()
        .with_container(Some("ollama".into()))
        .decode(&ev, None)
        .expect("decodes");
    assert_eq!(rec.container.as_deref(), Some("ollama"));
    let line = serde_json::to_string(&rec).expect("serializes");
    assert!(line.contains(r#""container":"ollama""#), "{line}");
}

#[test]
fn an_inbound_event_names_the_source_and_the_targets_port() {
    let mut ev = event();
    ev.direction = ollama_egress_common::DIRECTION_INGRESS;
    ev.hook = ollama_egress_common::HOOK_SKB_INGRESS;
    ev.dport = 40123; // the peer's port
    ev.lport = 11434; // Ollama's
    ev.rule_id = ollama_egress_common::RULE_INBOUND_DEFAULT;
    let rec = decoder().decode(&ev, None).expect("decodes");
    assert_eq!(rec.direction, Direction::Inbound);
    assert_eq!(rec.hook, Some(Hook::SkbIngress));
    assert_eq!(rec.src, Some("203.0.113.7".parse().expect("ip")));
    assert_eq!(rec.sport, Some(40123));
    assert_eq!(rec.dport, 11434);
    assert_eq!(rec.dst, rec.src.expect("src"));
    assert_eq!(rec.host, None);
    assert_eq!(rec.rule, "inbound.default");
    let line = serde_json::to_string(&rec).expect("serialises");
    assert!(
        line.contains(r#""direction":"inbound""#)
            && line.contains(r#""src":"203.0.113.7","sport":40123"#),
        "{line}"
    );
}

#[test]
fn the_wall_clock_matches_the_nanosecond_conversion_on_both_sides_of_every_edge() {
    let ns = 1_000_000_000_i128;
    for offset in [
        0,
        1_795_000_000_123_456_789,
        -1,
        -ns,
        -ns - 1,
        -86_400 * ns + 7,
        i128::from(i64::MAX) - 5 * ns,
        i128::from(i64::MAX),
        i128::from(i64::MIN),
        i128::from(i64::MAX) + 1,
        i128::from(i64::MIN) - 3 * ns - 1,
    ] {
        for boot in [
            0,
            1,
            999_999_999,
            1_000_000_000,
            86_400 * 1_000_000_000 + 5,
            u64::MAX,
        ] {
            let clock = BootClock::with_offset(offset);
            let expected = OffsetDateTime::from_unix_timestamp_nanos(offset + i128::from(boot))
                .unwrap_or(OffsetDateTime::UNIX_EPOCH);
            assert_eq!(clock.wall(boot), expected, "offset {offset}, boot {boot}");
        }
    }
}
