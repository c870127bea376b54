//! Writes the generated seed files of the corpora (run once, from `fuzz/`:
//! `cargo run --example gen_seeds`; the output is checked in). The policy seeds are
//! hand-written files in `corpus/policy/` and are left alone.
//!
//! * `corpus/event_decode/`: ring-buffer events as the kernel writes them (valid and not),
//!   some followed by bytes that set up the decoder's generations.
//! * `corpus/log_query/`: a filter line, then log lines as the daemon writes them, with
//!   rotated files, odd formatting and malformed lines.
//! * `corpus/policy_structured/`: pseudo-random bytes for the structured policy target.
//! * `corpus/dns/`: DNS responses built with hickory (answers, CNAME chains, many answers,
//!   other sections) and by hand (queries, compressed or odd question names, cut-off and
//!   malformed records).

use std::fs;
use std::path::Path;

use ollama_egress::logstore::EventRecord;
use ollama_egress::model::{Family, Mode, Verdict};
use ollama_egress_common::{
    COMM_LEN, ConnectEvent, FAMILY_IPV6, RULE_IPV6_ROUTING_HEADER, VERDICT_ALLOWED,
    VERDICT_BLOCKED, VERDICT_WOULD_BLOCK,
};
use ollama_egress_fuzz::event::sample_event;
use time::macros::datetime;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    events(&root.join("event_decode"));
    logs(&root.join("log_query"));
    structured(&root.join("policy_structured"));
    dns(&root.join("dns"));
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).expect("creating a corpus directory");
    fs::write(dir.join(name), bytes).expect("writing a seed");
}

/// A small deterministic byte stream (xorshift64*).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

fn events(dir: &Path) {
    let with_tail = |ev: &ConnectEvent, tail: &[u8]| {
        let mut b = ev.as_bytes().to_vec();
        b.extend_from_slice(tail);
        b
    };
    let v4 = sample_event(false, VERDICT_BLOCKED, 1, 3);
    write(dir, "v4-blocked.bin", v4.as_bytes());
    write(dir, "v4-blocked-setup.bin", &with_tail(&v4, &noise(1, 64)));
    let v6 = sample_event(true, VERDICT_WOULD_BLOCK, 0, 1);
    write(
        dir,
        "v6-udp-would-block.bin",
        &with_tail(&v6, &noise(2, 48)),
    );

    let mut allowed = sample_event(true, VERDICT_ALLOWED, 2, 7);
    allowed.daddr = "::ffff:198.51.100.1"
        .parse::<std::net::Ipv6Addr>()
        .expect("address")
        .octets();
    allowed.v4_form = 1;
    write(
        dir,
        "v6-mapped-allowed.bin",
        &with_tail(&allowed, &noise(3, 96)),
    );

    let mut rh = sample_event(true, VERDICT_BLOCKED, RULE_IPV6_ROUTING_HEADER, 2);
    rh.family = FAMILY_IPV6;
    write(dir, "v6-routing-header.bin", &with_tail(&rh, &noise(4, 32)));

    let mut odd = sample_event(false, 9, 77, 0xffff_ffff);
    odd.comm = *b"\xff\xfe\"quoted\\\n\x01abcd";
    odd.dport = 70_000;
    odd.protocol = 300;
    odd.family = 99;
    odd.header.ts_boot_ns = u64::MAX;
    write(dir, "odd-values.bin", odd.as_bytes());

    let mut full_comm = sample_event(false, VERDICT_ALLOWED, 0, 0);
    full_comm.comm = [b'x'; COMM_LEN];
    write(dir, "comm-no-nul.bin", full_comm.as_bytes());

    // Refused by from_bytes: short, another kind, another size.
    write(dir, "short.bin", &v4.as_bytes()[..40]);
    let mut kind = v4;
    kind.header.kind = 2;
    write(dir, "other-kind.bin", kind.as_bytes());
    let mut size = v4;
    size.header.size = 95;
    write(dir, "other-size.bin", size.as_bytes());
}

fn record(verdict: Verdict, dst: &str, country: Option<&str>, rule: &str) -> EventRecord {
    let dst: std::net::IpAddr = dst.parse().expect("address");
    EventRecord {
        ts: datetime!(2026-11-22 09:30:00.123456 UTC),
        verdict,
        mode: if verdict == Verdict::WouldBlock {
            Mode::Monitor
        } else {
            Mode::Enforce
        },
        direction: ollama_egress::model::Direction::Outbound,
        pid: 4242,
        tid: 4243,
        comm: "ollama".into(),
        exe: Some("/usr/bin/ollama".into()),
        uid: 998,
        gid: 0,
        proto: "tcp".into(),
        family: Family::of(&dst),
        dst,
        dport: 443,
        host: None,
        country: country.map(str::to_owned),
        asn: country.map(|_| 45102),
        as_org: country.map(|_| "Example".to_owned()),
        rule: rule.into(),
        container: None,
        hook: None,
        via: None,
        src: None,
        sport: None,
    }
}

fn logs(dir: &Path) {
    let blocked = record(
        Verdict::Blocked,
        "203.0.113.7",
        Some("CN"),
        "deny.countries:CN",
    );
    let allowed = record(Verdict::Allowed, "198.51.100.1", Some("US"), "default");
    let mut mapped = record(
        Verdict::WouldBlock,
        "::ffff:203.0.113.9",
        None,
        "deny.cidrs:203.0.113.0/24",
    );
    mapped.comm = "a\"b".into();
    mapped.dport = 53;
    mapped.proto = "udp".into();
    let mut later = blocked.clone();
    later.ts = datetime!(2026-11-22 09:59:59.999999 UTC);
    later.dst = "2001:db8::7".parse().expect("address");
    later.family = Family::Ipv6;
    later.country = Some("DE".into());
    later.rule = "deny.countries:DE".into();

    let line = |r: &EventRecord| serde_json::to_string(r).expect("serialises");
    let lines = [&blocked, &allowed, &mapped, &later].map(line).join("\n");

    let seeds: [(&str, String); 11] = [
        ("all.txt", format!("\n{lines}\n")),
        (
            "verdict-limit.txt",
            format!("verdict=blocked limit=1\n{lines}\n"),
        ),
        (
            "country-since.txt",
            format!("country=cn since=1h\n{lines}\n"),
        ),
        (
            "dst-mapped.txt",
            format!("dst=203.0.113.0/24 port=53\n{lines}"),
        ),
        (
            "comm-escaped.txt",
            format!("comm=a\"b rule=deny.*\n{lines}\n"),
        ),
        (
            "until-rfc3339.txt",
            format!("until=2026-11-22T09:30:00.123456Z verdict=allowed\n{lines}\r\n\n  \n"),
        ),
        (
            "rotated.txt",
            format!(
                "rule=deny.countries:* limit=2\n{}\n--rotate--\n{}\n--rotate--\n{}\n",
                line(&blocked),
                line(&allowed),
                line(&later)
            ),
        ),
        (
            "pretty-and-malformed.txt",
            format!(
                "port=443\n{}\n{{\"ts\":\"yesterday\"}}\nnot json\n{}",
                serde_json::to_string_pretty(&blocked)
                    .expect("serialises")
                    .replace('\n', " "),
                line(&allowed)
            ),
        ),
        (
            "padded-overlong.txt",
            format!("pad=70000 verdict=blocked\n{lines}\n"),
        ),
        (
            "padded-middle.txt",
            format!("pad=70000 padline=1 limit=1\n{lines}\n"),
        ),
        (
            "dst-v6-net-v4-record.txt",
            format!("dst=::ffff:203.0.113.0/120\n{lines}\n"),
        ),
    ];
    for (name, text) in seeds {
        write(dir, name, text.as_bytes());
    }
}

fn structured(dir: &Path) {
    for (i, len) in [(1u64, 64usize), (2, 128), (3, 256), (4, 512), (5, 1024)] {
        write(dir, &format!("noise-{len}.bin"), &noise(i * 7919, len));
    }
}

/// A response to `name` (type A) with `answers`, as hickory writes it (names compressed).
fn hickory_response(name: &str, answers: Vec<hickory_proto::rr::Record>) -> Vec<u8> {
    use hickory_proto::op::{Message, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut m = Message::response(0x4242, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii(name).expect("name"),
        RecordType::A,
    ));
    m.add_answers(answers);
    m.to_vec().expect("encoding a response")
}

fn a(owner: &str, ttl: u32, ip: [u8; 4]) -> hickory_proto::rr::Record {
    use hickory_proto::rr::{Name, RData, Record, rdata::A};
    Record::from_rdata(
        Name::from_ascii(owner).expect("name"),
        ttl,
        RData::A(A(ip.into())),
    )
}

fn aaaa(owner: &str, ttl: u32, ip: std::net::Ipv6Addr) -> hickory_proto::rr::Record {
    use hickory_proto::rr::{Name, RData, Record, rdata::AAAA};
    Record::from_rdata(
        Name::from_ascii(owner).expect("name"),
        ttl,
        RData::AAAA(AAAA(ip)),
    )
}

fn cname(owner: &str, ttl: u32, target: &str) -> hickory_proto::rr::Record {
    use hickory_proto::rr::{Name, RData, Record, rdata::CNAME};
    Record::from_rdata(
        Name::from_ascii(owner).expect("name"),
        ttl,
        RData::CNAME(CNAME(Name::from_ascii(target).expect("name"))),
    )
}

fn txt(owner: &str, text: &str) -> hickory_proto::rr::Record {
    use hickory_proto::rr::{Name, RData, Record, rdata::TXT};
    Record::from_rdata(
        Name::from_ascii(owner).expect("name"),
        30,
        RData::TXT(TXT::new(vec![text.to_owned()])),
    )
}

/// A response by hand: header with `ancount`, the question bytes `question` (name, type, class).
fn by_hand(flags: [u8; 2], qdcount: u16, ancount: u16, question: &[u8]) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, flags[0], flags[1]];
    m.extend_from_slice(&qdcount.to_be_bytes());
    m.extend_from_slice(&ancount.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.extend_from_slice(question);
    m
}

/// An A record with its owner a pointer to the question, TTL 60.
fn a_rr(ip: [u8; 4]) -> Vec<u8> {
    let mut r = vec![0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4];
    r.extend_from_slice(&ip);
    r
}

const Q_EXAMPLE: &[u8] = b"\x07example\x03com\x00\x00\x01\x00\x01";

fn dns(dir: &Path) {
    let v6: std::net::Ipv6Addr = "2001:db8::7".parse().expect("address");
    let mapped: std::net::Ipv6Addr = "::ffff:192.0.2.9".parse().expect("address");
    write(
        dir,
        "a.bin",
        &hickory_response(
            "registry.ollama.ai.",
            vec![a("registry.ollama.ai.", 300, [192, 0, 2, 7])],
        ),
    );
    write(
        dir,
        "a-aaaa-mapped.bin",
        &hickory_response(
            "ollama.com.",
            vec![
                a("ollama.com.", 60, [192, 0, 2, 1]),
                aaaa("ollama.com.", 60, v6),
                aaaa("ollama.com.", 60, mapped),
            ],
        ),
    );
    write(
        dir,
        "cname-chain.bin",
        &hickory_response(
            "models.ollama.ai.",
            vec![
                cname("models.ollama.ai.", 30, "edge.cdn.example.net."),
                cname("edge.cdn.example.net.", 30, "x1.r2.cloudflarestorage.com."),
                a("x1.r2.cloudflarestorage.com.", 20, [198, 51, 100, 1]),
                a("x1.r2.cloudflarestorage.com.", 20, [198, 51, 100, 2]),
            ],
        ),
    );
    write(
        dir,
        "many.bin",
        &hickory_response(
            "many.example.",
            (0..40u8)
                .map(|i| a("many.example.", 5, [203, 0, 113, i]))
                .collect(),
        ),
    );
    write(
        dir,
        "mixed-types.bin",
        &hickory_response(
            "Mixed.EXAMPLE.org.",
            vec![
                txt("mixed.example.org.", "v=spf1 -all"),
                a("mixed.example.org.", 7, [192, 0, 2, 77]),
                txt("other.example.org.", "x"),
            ],
        ),
    );
    write(
        dir,
        "nxdomain.bin",
        &hickory_response("nothing.example.", vec![]),
    );
    {
        use hickory_proto::op::{Edns, Message, OpCode, Query};
        use hickory_proto::rr::{Name, RecordType};
        let mut m = Message::response(7, OpCode::Query);
        m.add_query(Query::query(
            Name::from_ascii("sections.example.").expect("name"),
            RecordType::AAAA,
        ));
        m.add_answer(aaaa("sections.example.", 99, v6));
        m.add_authority(txt("example.", "authority"));
        m.add_additional(a("ns.example.", 99, [192, 0, 2, 53]));
        m.set_edns(Edns::new());
        write(dir, "sections-edns.bin", &m.to_vec().expect("encoding"));
    }
    // Past the examined bytes: 60 TXT records, then an A record.
    let mut big: Vec<_> = (0..60)
        .map(|i| txt("big.example.", &format!("padding record {i:03}")))
        .collect();
    big.push(a("big.example.", 5, [192, 0, 2, 250]));
    write(
        dir,
        "past-examined-bytes.bin",
        &hickory_response("big.example.", big),
    );

    // By hand.
    let mut m = by_hand([0x81, 0x80], 1, 2, Q_EXAMPLE);
    m.extend(a_rr([192, 0, 2, 1]));
    m.extend(a_rr([192, 0, 2, 2]));
    write(dir, "hand-two-a.bin", &m);
    for cut in [m.len() - 1, m.len() - 5, m.len() - 14, 29, 11] {
        write(dir, &format!("hand-cut-{cut}.bin"), &m[..cut]);
    }
    let mut q = m.clone();
    q[2] = 0x01;
    write(dir, "hand-query.bin", &q);
    let mut op = m.clone();
    op[2] = 0x81 | (2 << 3);
    write(dir, "hand-opcode-status.bin", &op);
    let mut two = by_hand([0x81, 0x80], 2, 1, Q_EXAMPLE);
    two.extend_from_slice(Q_EXAMPLE);
    two.extend(a_rr([192, 0, 2, 3]));
    write(dir, "hand-two-questions.bin", &two);
    let mut comp = by_hand([0x81, 0x80], 1, 1, b"\x01a\xc0\x0c\x00\x01\x00\x01");
    comp.extend(a_rr([192, 0, 2, 4]));
    write(dir, "hand-compressed-question.bin", &comp);
    let mut odd = by_hand([0x81, 0x80], 1, 1, b"\x05a b_c\x03com\x00\x00\x01\x00\x01");
    odd.extend(a_rr([192, 0, 2, 5]));
    write(dir, "hand-space-in-name.bin", &odd);
    let mut root = by_hand([0x81, 0x80], 1, 1, b"\x00\x00\x01\x00\x01");
    root.extend(a_rr([192, 0, 2, 6]));
    write(dir, "hand-root-question.bin", &root);
    let mut long_rr = by_hand([0x81, 0x80], 1, 2, Q_EXAMPLE);
    long_rr.extend(a_rr([192, 0, 2, 7]));
    long_rr.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 5, 192, 0, 2, 8, 0]);
    write(dir, "hand-a-length-5.bin", &long_rr);
    let mut garbage_ptr = by_hand([0x81, 0x80], 1, 2, Q_EXAMPLE);
    garbage_ptr.extend(a_rr([192, 0, 2, 9]));
    let mut r = a_rr([192, 0, 2, 10]);
    r[1] = 0xff; // points past the message
    garbage_ptr.extend(r);
    write(dir, "hand-owner-pointer-garbage.bin", &garbage_ptr);
    let mut spelled = by_hand([0x81, 0x80], 1, 1, Q_EXAMPLE);
    spelled.extend_from_slice(
        b"\x03www\x07example\x03com\x00\x00\x01\x00\x01\x00\x00\x00\x01\x00\x04",
    );
    spelled.extend_from_slice(&[192, 0, 2, 11]);
    write(dir, "hand-owner-spelled-out.bin", &spelled);
    let mut reserved = by_hand([0x81, 0x80], 1, 1, Q_EXAMPLE);
    reserved.extend_from_slice(&[0x41, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 192, 0, 2, 12]);
    write(dir, "hand-owner-reserved-label.bin", &reserved);
    let mut huge = by_hand([0x81, 0x80], 1, 0xffff, Q_EXAMPLE);
    huge.extend(a_rr([192, 0, 2, 13]));
    write(dir, "hand-huge-count.bin", &huge);
    let mut upper = by_hand(
        [0x81, 0x83],
        1,
        1,
        b"\x07EXAMPLE\x03Com\x00\x00\x1c\x00\x01",
    );
    upper.extend_from_slice(&[0xc0, 12, 0, 28, 0, 1, 0, 0, 1, 0, 0, 16]);
    upper.extend_from_slice(&v6.octets());
    write(dir, "hand-uppercase-aaaa.bin", &upper);
    let chaos = {
        let mut c = by_hand([0x81, 0x80], 1, 1, Q_EXAMPLE);
        c.extend_from_slice(&[0xc0, 12, 0, 1, 0, 3, 0, 0, 0, 1, 0, 4, 192, 0, 2, 14]);
        c
    };
    write(dir, "hand-class-chaos.bin", &chaos);
    write(dir, "empty.bin", &[]);
    write(dir, "noise.bin", &noise(53, 200));
}
