//! Tests of the trie keys and of the DNS answer walker.
#![allow(clippy::unwrap_used)]

use super::parse::PHASE_DONE;
use super::*;

/// Longest-prefix match over `rules` the way the kernel's trie does it.
fn most_specific<'a>(rules: &[(&'a str, bool)], name: &str) -> Option<&'a str> {
    let (_, want) = lookup_key(name.as_bytes()).expect("a name");
    rules
        .iter()
        .filter_map(|&(r, wild)| {
            let (bits, key) = domain_key(r.as_bytes(), wild).expect("a rule");
            let n = bits as usize / 8;
            (key[..n] == want[..n]).then_some((n, r))
        })
        .max_by_key(|&(n, _)| n)
        .map(|(_, r)| r)
}

#[test]
fn exact_beats_suffix_and_longer_suffix_beats_shorter() {
    let rules = [("ollama.com", false), ("ollama.com", true), ("com", true)];
    assert_eq!(most_specific(&rules, "ollama.com"), Some("ollama.com"));
    assert_eq!(most_specific(&rules, "a.ollama.com"), Some("ollama.com"));
    assert_eq!(most_specific(&rules, "example.com"), Some("com"));
    assert_eq!(most_specific(&rules, "com"), None);
}

#[test]
fn a_suffix_matches_at_a_label_boundary_only() {
    let rules = [("example.com", true)];
    assert_eq!(most_specific(&rules, "badexample.com"), None);
    assert_eq!(most_specific(&rules, "example.com"), None);
    assert_eq!(most_specific(&rules, "x.example.com"), Some("example.com"));
    assert_eq!(
        most_specific(&rules, "x.y.example.com"),
        Some("example.com")
    );
}

#[test]
fn keys_are_bounded() {
    assert!(domain_key(b"", false).is_none());
    let long = [b'a'; NAME_MAX + 1];
    assert!(domain_key(&long, false).is_none());
    let (bits, key) = domain_key(&long[..NAME_MAX], true).expect("253 bytes");
    assert_eq!(bits, 254 * 8);
    assert_eq!(key[NAME_MAX], b'.');
}

/// A DNS message built by hand.
struct Msg(Vec<u8>);

impl Msg {
    /// A response (flags 0x8180) with one question for `name` and `ancount` answers announced.
    fn response(name: &str, ancount: u16) -> Self {
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1];
        m.extend_from_slice(&ancount.to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        let mut msg = Msg(m);
        msg.name(name);
        msg.0.extend_from_slice(&[0, 1, 0, 1]);
        msg
    }

    fn name(&mut self, name: &str) -> &mut Self {
        for label in name.split('.').filter(|l| !l.is_empty()) {
            self.0.push(label.len() as u8);
            self.0.extend_from_slice(label.as_bytes());
        }
        self.0.push(0);
        self
    }

    /// A record with owner `owner` (a pointer to the question when `None`).
    fn record(
        &mut self,
        owner: Option<&str>,
        rtype: u16,
        class: u16,
        ttl: u32,
        data: &[u8],
    ) -> &mut Self {
        match owner {
            None => self.0.extend_from_slice(&[0xc0, 12]),
            Some(o) => {
                self.name(o);
            }
        }
        self.0.extend_from_slice(&rtype.to_be_bytes());
        self.0.extend_from_slice(&class.to_be_bytes());
        self.0.extend_from_slice(&ttl.to_be_bytes());
        self.0.extend_from_slice(&(data.len() as u16).to_be_bytes());
        self.0.extend_from_slice(data);
        self
    }

    fn a(&mut self, ip: [u8; 4], ttl: u32) -> &mut Self {
        self.record(None, TYPE_A, CLASS_IN, ttl, &ip)
    }

    fn walk(&self) -> (Result<(), DnsError>, Box<DnsWalk>) {
        let mut w = Box::new(DnsWalk::new(&self.0));
        (w.run(), w)
    }
}

fn v4s(w: &DnsWalk) -> Vec<([u8; 4], u32)> {
    w.addrs()
        .iter()
        .filter(|a| a.family == crate::FAMILY_IPV4)
        .map(|a| ([a.addr[0], a.addr[1], a.addr[2], a.addr[3]], a.ttl_s))
        .collect()
}

#[test]
fn a_valid_answer_yields_the_name_its_key_and_addresses() {
    let mut m = Msg::response("Registry.Ollama.AI", 2);
    m.a([192, 0, 2, 7], 300);
    let v6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    m.record(None, TYPE_AAAA, CLASS_IN, 60, &v6);
    let (r, w) = m.walk();
    assert_eq!(r, Ok(()));
    assert_eq!(w.name(), b"registry.ollama.ai");
    assert_eq!(v4s(&w), vec![([192, 0, 2, 7], 300)]);
    assert_eq!(w.addrs().len(), 2);
    assert_eq!(w.addrs()[1].family, crate::FAMILY_IPV6);
    assert_eq!(w.addrs()[1].addr, v6);
    assert_eq!(w.addrs()[1].ttl_s, 60);
    let (bits, key) = lookup_key(b"registry.ollama.ai").expect("a name");
    assert_eq!(w.key.prefix_len, bits);
    assert_eq!(w.key.data, key);
    assert!(w.event.name[w.name().len()..].iter().all(|&b| b == 0));
}

#[test]
fn a_cname_chain_binds_to_the_question_name() {
    let mut m = Msg::response("ollama.com", 3);
    let mut target = vec![3u8];
    target.extend_from_slice(b"cdn");
    target.extend_from_slice(&[7]);
    target.extend_from_slice(b"example");
    target.extend_from_slice(&[3]);
    target.extend_from_slice(b"net");
    target.push(0);
    m.record(None, 5, CLASS_IN, 30, &target);
    // The next owner is the CNAME target, spelled out, then one as a pointer into it.
    m.record(
        Some("cdn.example.net"),
        TYPE_A,
        CLASS_IN,
        20,
        &[198, 51, 100, 1],
    );
    let ptr_target = (m.0.len() - 14 - 17) as u8; // where the spelled-out owner starts
    m.record(None, TYPE_A, CLASS_IN, 20, &[198, 51, 100, 2]);
    let last = m.0.len() - 16;
    m.0[last + 1] = ptr_target;
    let (r, w) = m.walk();
    assert_eq!(r, Ok(()));
    assert_eq!(w.name(), b"ollama.com");
    assert_eq!(
        v4s(&w),
        vec![([198, 51, 100, 1], 20), ([198, 51, 100, 2], 20)]
    );
}

#[test]
fn other_types_and_classes_are_skipped() {
    let mut m = Msg::response("example.com", 4);
    m.record(None, 16, CLASS_IN, 5, b"\x05hello");
    m.record(None, TYPE_A, 3, 5, &[192, 0, 2, 1]); // class CH
    m.record(None, 99, CLASS_IN, 5, &[]);
    m.a([192, 0, 2, 2], 5);
    let (r, w) = m.walk();
    assert_eq!(r, Ok(()));
    assert_eq!(v4s(&w), vec![([192, 0, 2, 2], 5)]);
}

#[test]
fn many_answers_stop_at_the_limit() {
    let mut m = Msg::response("many.example", 40);
    for i in 0..40u8 {
        m.a([203, 0, 113, i], 1);
    }
    let (r, w) = m.walk();
    assert_eq!(r, Ok(()));
    assert_eq!(w.addrs().len(), DNS_MAX_ADDRS);
    assert_eq!(v4s(&w)[31].0, [203, 0, 113, 31]);
}

#[test]
fn a_huge_count_ends_with_the_message() {
    let mut m = Msg::response("count.example", u16::MAX);
    m.a([192, 0, 2, 9], 1);
    let (r, w) = m.walk();
    assert_eq!(r, Ok(()));
    assert_eq!(v4s(&w), vec![([192, 0, 2, 9], 1)]);
}

#[test]
fn truncation_keeps_the_whole_records_before_the_cut() {
    let mut m = Msg::response("trunc.example", 3);
    m.a([192, 0, 2, 1], 1)
        .a([192, 0, 2, 2], 1)
        .a([192, 0, 2, 3], 1);
    let full = m.0.clone();
    for cut in 0..full.len() {
        let mut w = Box::new(DnsWalk::new(&full[..cut]));
        let r = w.run();
        let whole = if cut < 12 + 15 + 4 {
            assert!(r.is_err(), "cut {cut}: {r:?}");
            continue;
        } else {
            (cut - 31) / 16
        };
        assert_eq!(r, Ok(()), "cut {cut}");
        assert_eq!(w.addrs().len(), whole, "cut {cut}");
    }
}

#[test]
fn past_the_examined_bytes_nothing_is_learned() {
    let mut m = Msg::response("big.example", 100);
    for i in 0..100u8 {
        m.record(None, 16, CLASS_IN, 1, &[1, b'x']);
        if i == 90 {
            m.a([192, 0, 2, 1], 1);
        }
    }
    assert!(m.0.len() > DNS_MSG_MAX);
    let (r, w) = m.walk();
    assert_eq!(r, Ok(()));
    assert!(w.addrs().is_empty());
}

#[test]
fn the_header_must_be_a_response_with_one_question() {
    let mut m = Msg::response("example.com", 1);
    m.a([192, 0, 2, 1], 1);
    let good = m.0.clone();
    let mut query = good.clone();
    query[2] &= 0x7f;
    let mut opcode = good.clone();
    opcode[2] |= 0x10;
    let mut two = good.clone();
    two[5] = 2;
    let mut none = good.clone();
    none[5] = 0;
    for bad in [query, opcode, two, none] {
        assert_eq!(DnsWalk::new(&bad).run(), Err(DnsError::Header));
    }
    assert_eq!(DnsWalk::new(&good[..11]).run(), Err(DnsError::Short));
}

#[test]
fn questions_that_are_not_canonical_are_refused() {
    // A compressed question (pointer to itself).
    let mut m = Msg::response("x", 0);
    m.0.truncate(12);
    m.0.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(DnsWalk::new(&m.0).run(), Err(DnsError::Name));
    // A label then a pointer.
    let mut m = Msg::response("x", 0);
    m.0.truncate(12);
    m.0.extend_from_slice(&[1, b'a', 0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(DnsWalk::new(&m.0).run(), Err(DnsError::Name));
    // The root name.
    let mut m = Msg::response("x", 0);
    m.0.truncate(12);
    m.0.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(DnsWalk::new(&m.0).run(), Err(DnsError::Name));
    for bad in [
        "a b.example",
        "a*.example",
        "xn--\u{e9}.example",
        "a\0.example",
        "semi;colon.com",
    ] {
        assert_eq!(
            Msg::response(bad, 0).walk().0,
            Err(DnsError::Name),
            "{bad:?}"
        );
    }
    // A dot inside a label is not a separator.
    let mut m = Msg::response("x", 0);
    m.0.truncate(12);
    m.0.extend_from_slice(&[3, b'a', b'.', b'b', 0, 0, 1, 0, 1]);
    assert_eq!(DnsWalk::new(&m.0).run(), Err(DnsError::Name));
    // Reserved label types.
    for t in [0x40u8, 0x80] {
        let mut m = Msg::response("x", 0);
        m.0.truncate(12);
        m.0.extend_from_slice(&[t, 0, 0, 1, 0, 1]);
        assert_eq!(DnsWalk::new(&m.0).run(), Err(DnsError::Name));
    }
}

#[test]
fn names_are_bounded() {
    let label = "a".repeat(63);
    let ok = [label.as_str(); 3].join(".") + "." + &"b".repeat(61); // 253 bytes
    assert_eq!(ok.len(), NAME_MAX);
    let (r, w) = Msg::response(&ok, 0).walk();
    assert_eq!(r, Ok(()));
    assert_eq!(w.name(), ok.as_bytes());
    let long = ok.clone() + "c";
    let long = long.replace(&"b".repeat(61), &"b".repeat(62));
    assert_eq!(Msg::response(&long, 0).walk().0, Err(DnsError::Name));
    let tiny = vec!["a"; 127].join(".");
    assert_eq!(tiny.len(), 253);
    assert_eq!(Msg::response(&tiny, 0).walk().0, Ok(()));
}

#[test]
fn wrong_lengths_of_address_records_refuse_the_answer() {
    let mut m = Msg::response("example.com", 2);
    m.a([192, 0, 2, 1], 1);
    m.record(None, TYPE_A, CLASS_IN, 1, &[192, 0, 2, 2, 0]);
    assert_eq!(m.walk().0, Err(DnsError::Record));
    let mut m = Msg::response("example.com", 1);
    m.record(None, TYPE_AAAA, CLASS_IN, 1, &[0; 4]);
    assert_eq!(m.walk().0, Err(DnsError::Record));
}

#[test]
fn a_walk_reused_forgets_the_earlier_answer() {
    let mut m = Msg::response("long-name.example.com", 2);
    m.a([192, 0, 2, 1], 1).a([192, 0, 2, 2], 1);
    let mut w = Box::new(DnsWalk::new(&m.0));
    assert_eq!(w.run(), Ok(()));
    let mut m2 = Msg::response("b.example", 1);
    m2.a([198, 51, 100, 9], 2);
    w.msg[..m2.0.len()].copy_from_slice(&m2.0);
    w.reset(m2.0.len() as u32);
    assert_eq!(w.run(), Ok(()));
    assert_eq!(w.name(), b"b.example");
    assert!(w.event.name[9..].iter().all(|&b| b == 0));
    assert_eq!(w.key.data, lookup_key(b"b.example").expect("a name").1);
    assert_eq!(v4s(&w), vec![([198, 51, 100, 9], 2)]);
    assert!(w.event.addrs[1..].iter().all(|a| *a == DnsAddr::default()));
}

#[test]
fn every_walk_ends_within_the_step_bound() {
    // Owner names of one-byte labels make the most steps per byte.
    let mut m = Msg::response(&vec!["a"; 127].join("."), u16::MAX);
    while m.0.len() < DNS_MSG_MAX {
        m.0.extend_from_slice(&[1, b'z']);
    }
    let mut w = Box::new(DnsWalk::new(&m.0));
    let mut steps = 0;
    while w.step() == Step::Continue {
        steps += 1;
    }
    assert!(steps < WALK_MAX_STEPS, "{steps}");
}

#[test]
fn arbitrary_bytes_never_panic_and_always_end() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 1200) as usize;
        let mut m = Msg::response("seed.example", (x >> 16) as u16);
        let mut y = x;
        while m.0.len() < len {
            y = y
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            m.0.push((y >> 56) as u8);
        }
        if round % 3 == 0 && m.0.len() > 20 {
            let i = (y as usize) % m.0.len();
            m.0[i] ^= (y >> 8) as u8;
        }
        let mut w = Box::new(DnsWalk::new(&m.0));
        let _ = w.run();
        assert_eq!(w.phase, PHASE_DONE);
        assert!(w.addrs().len() <= DNS_MAX_ADDRS);
        assert!(w.name().iter().all(|&b| is_name_byte(b) || b == b'.'));
    }
}
