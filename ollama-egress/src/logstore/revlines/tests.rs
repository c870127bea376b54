//! Tests of `revlines`.

#![allow(clippy::unwrap_used)]

use super::*;
use std::io::Write;

fn lines_of(content: &[u8]) -> Vec<(ReadStatus, String)> {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(content).unwrap();
    let mut rev = RevLines::new(&f, content.len() as u64);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    loop {
        let st = rev.prev_line(&mut buf).unwrap();
        if st == ReadStatus::Eof {
            break;
        }
        out.push((st, String::from_utf8_lossy(&buf).into_owned()));
    }
    out
}

#[test]
fn backwards_across_blocks() {
    let mut content = String::new();
    for i in 0..20_000 {
        content += &format!("line {i}\n");
    }
    let got = lines_of(content.as_bytes());
    assert_eq!(got.len(), 20_001);
    assert_eq!(got[0], (ReadStatus::Line, String::new()));
    assert_eq!(got[1].1, "line 19999");
    assert_eq!(got[20_000].1, "line 0");
    assert!(
        got[1..]
            .iter()
            .enumerate()
            .all(|(k, (_, l))| *l == format!("line {}", 19_999 - k))
    );
}

#[test]
fn partial_tail_and_overlong() {
    let long = "x".repeat(MAX_LINE + BLOCK + 10);
    let content = format!("a\n{long}\nb\npart");
    let got = lines_of(content.as_bytes());
    let st: Vec<_> = got.iter().map(|(s, l)| (*s, l.as_str())).collect();
    assert_eq!(
        st,
        [
            (ReadStatus::Line, "part"),
            (ReadStatus::Line, "b"),
            (ReadStatus::Overlong, ""),
            (ReadStatus::Line, "a")
        ]
    );
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(content.as_bytes()).unwrap();
    let mut rev = RevLines::new(&f, content.len() as u64);
    assert_eq!(rev.drop_partial_tail().unwrap(), content.len() as u64 - 4);
    let mut buf = Vec::new();
    assert_eq!(rev.prev_line(&mut buf).unwrap(), ReadStatus::Line);
    assert!(buf.is_empty());
    rev.prev_line(&mut buf).unwrap();
    assert_eq!(buf, b"b");
    let mut rev = RevLines::new(&f, 3);
    assert_eq!(rev.drop_partial_tail().unwrap(), 2);
    let mut rev = RevLines::new(&f, 1);
    assert_eq!(rev.drop_partial_tail().unwrap(), 0);
}
