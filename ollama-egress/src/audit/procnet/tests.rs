//! The `/proc` parsers on text as this kernel writes it (x86_64, little-endian): a network
//! namespace with listeners on 0.0.0.0:11434, 127.0.0.1:11435, 192.0.2.7:8080, [::]:11434,
//! [::1]:11436, [2001:db8::5]:80 and [::ffff:127.0.0.1]:11437, and one established
//! connection.

use super::*;

const TCP: &str = include_str!("tcp.txt");
const TCP6: &str = include_str!("tcp6.txt");

fn listening(text: &str) -> Vec<(String, u64)> {
    parse_tcp(text)
        .into_iter()
        .filter(TcpRow::listening)
        .map(|r| (r.local.to_string(), r.inode))
        .collect()
}

#[test]
fn ipv4_rows() {
    assert_eq!(
        listening(TCP),
        [
            ("192.0.2.7:8080".to_owned(), 135_363),
            ("127.0.0.1:11435".to_owned(), 135_362),
            ("0.0.0.0:11434".to_owned(), 135_361),
        ]
    );
    let all = parse_tcp(TCP);
    assert_eq!(all.len(), 5, "the header is skipped, every row read");
    assert_eq!(all[3].state, 0x01, "established");
    assert_eq!(all[3].local.to_string(), "192.0.2.7:49780");
    assert_eq!(all[4].inode, 135_369);
}

#[test]
fn ipv6_rows() {
    assert_eq!(
        listening(TCP6),
        [
            ("[::ffff:127.0.0.1]:11437".to_owned(), 135_367),
            ("[::]:11434".to_owned(), 135_364),
            ("[2001:db8::5]:80".to_owned(), 135_366),
            ("[::1]:11436".to_owned(), 135_365),
        ]
    );
}

#[test]
fn malformed_rows_are_skipped() {
    let text = "header\n   0: 0100007F:2CAB 00000000:0000 0A\n   1: 0100007:2CAB 00000000:0000 0A 0:0 0:0 0 0 0 7\n   2: 0100007F:2CAB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1\n";
    let rows = parse_tcp(text);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].inode, 99);
    assert!(parse_tcp("").is_empty());
}

#[test]
fn socket_links() {
    assert_eq!(socket_inode("socket:[135361]"), Some(135_361));
    assert_eq!(socket_inode("pipe:[135361]"), None);
    assert_eq!(socket_inode("/dev/null"), None);
    assert_eq!(socket_inode("socket:[x]"), None);
    assert_eq!(socket_inode("socket:[12"), None);
}

#[test]
fn environment_keeps_only_the_audited_variables() {
    let raw = b"PATH=/usr/bin\0OLLAMA_HOST=0.0.0.0:11434\0SECRET=hunter2\0OLLAMA_ORIGINS=*\0OLLAMA_HOST=127.0.0.1\0NOEQUALS\0OLLAMA_NO_CLOUD=\0";
    let env = environ(raw, &["OLLAMA_HOST", "OLLAMA_ORIGINS", "OLLAMA_NO_CLOUD"]);
    assert_eq!(env.len(), 3, "{env:?}");
    assert_eq!(env["OLLAMA_HOST"], "0.0.0.0:11434", "the first one counts");
    assert_eq!(env["OLLAMA_ORIGINS"], "*");
    assert_eq!(env["OLLAMA_NO_CLOUD"], "", "set, empty");
    assert!(!env.contains_key("SECRET"));
}

#[test]
fn effective_uid_from_status() {
    let status = "Name:\tollama\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t0\t998\t998\t998\nGid:\t0\t0\t0\t0\n";
    assert_eq!(effective_uid(status), Some(998));
    assert_eq!(effective_uid("Uid:\t0\t0\t0\t0\n"), Some(0));
    assert_eq!(effective_uid("Name:\tx\n"), None);
    assert_eq!(effective_uid("Uid:\t5\n"), None);
}
