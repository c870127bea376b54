//! Writes the generated seed files of the corpora (run once, from `fuzz/`:
//! `cargo run --example gen_seeds`; the output is checked in). The policy seeds are
//! hand-written files in `corpus/policy/` and are left alone.
//!
//! * `corpus/event_decode/`: ring-buffer events as the kernel writes them (valid and not),
//!   some followed by bytes that set up the decoder's generations.
//! * `corpus/log_query/`: a filter line, then log lines as the daemon writes them, with
//!   rotated files, odd formatting and malformed lines.
//! * `corpus/policy_structured/`: pseudo-random bytes for the structured policy target.

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
