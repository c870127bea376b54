//! Log query checks: the query engine (line readers, raw prefilter, backwards scan under a
//! limit, rotated files) against a naive reference that parses every line.
//!
//! Input format (text, so seeds are easy to write by hand):
//!
//! ```text
//! verdict=blocked since=1h until=... country=CN dst=203.0.113.0/24 port=443 comm=ollama rule=deny.* limit=2 pad=70000
//! {"ts":"2026-11-22T10:00:00.123456Z",...}
//! --rotate--
//! {"ts":...}
//! ```
//!
//! The first line is the filter (`key=value` words; unknown words and unparsable values are
//! ignored); `since`/`until` go through `parse_since`/`parse_until` with [`crate::NOW`].
//! The rest is the log: lines `--rotate--` split it into files, oldest first
//! (`events.jsonl.N` … `events.jsonl.1`, `events.jsonl`). `pad=N` pads log line `padline=K`
//! (default 0, the first) with spaces to N bytes (up to 200,000), to reach the 64 KiB line
//! limit and the read blocks.

use std::path::Path;

use ipnet::IpNet;
use ollama_egress::logstore::{EVENTS_FILE, EventRecord, Filter, parse_since, parse_until, query};
use ollama_egress::model::Verdict;

/// Lines longer than this are skipped as malformed (`logstore::lines::MAX_LINE`).
pub const MAX_LINE: usize = 64 * 1024;

/// The line that separates rotated files in the input.
pub const ROTATE: &[u8] = b"--rotate--";

/// Which log line to pad, and to how many bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pad {
    /// Index of the line (counting every line of the log part of the input).
    pub line: usize,
    /// Length to pad it to.
    pub len: usize,
}

/// The filter of the first line, and the padding asked for.
pub fn parse_filter(line: &str) -> (Filter, Pad) {
    let mut f = Filter::default();
    let mut pad = Pad::default();
    for word in line.split_ascii_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        match key {
            "verdict" => f.verdict = value.parse::<Verdict>().ok(),
            "since" => f.since = parse_since(value, crate::NOW).ok(),
            "until" => f.until = parse_until(value, crate::NOW).ok(),
            "country" => f.country = Some(value.to_owned()),
            "dst" => f.dst = value.parse::<IpNet>().ok(),
            "port" => f.port = value.parse().ok(),
            "comm" => f.comm = Some(value.to_owned()),
            "rule" => f.rule = Some(value.to_owned()),
            "limit" => f.limit = value.parse::<usize>().ok().map(|n| n.min(64)),
            "pad" => pad.len = value.parse::<usize>().unwrap_or(0).min(200_000),
            "padline" => pad.line = value.parse::<usize>().unwrap_or(0),
            _ => {}
        }
    }
    (f, pad)
}

/// The files of the log, oldest first.
pub fn split_files(log: &[u8], pad: Pad) -> Vec<Vec<u8>> {
    let mut files = vec![Vec::new()];
    for (i, line) in log.split_inclusive(|&b| b == b'\n').enumerate() {
        let bare = line.strip_suffix(b"\n").unwrap_or(line);
        if bare == ROTATE {
            files.push(Vec::new());
            continue;
        }
        let file = files.last_mut().expect("never empty");
        if i == pad.line && pad.len > bare.len() {
            file.extend_from_slice(bare);
            file.resize(file.len() + pad.len - bare.len(), b' ');
            file.extend_from_slice(&line[bare.len()..]);
        } else {
            file.extend_from_slice(line);
        }
    }
    files.truncate(6);
    files
}

/// What a query must return: every line, oldest file first, that is not blank, not longer
/// than [`MAX_LINE`], valid UTF-8, parses as a record and matches (`limit` aside).
pub struct Expected {
    /// The matching records.
    pub records: Vec<EventRecord>,
    /// Non-blank lines, overlong ones included.
    pub lines: u64,
    /// Files whose last line is unterminated and overlong. The forward reader drops such a
    /// line without counting it in `QueryStats::lines`/`malformed` (the backward reader counts
    /// it); reported, and accepted either way here.
    pub overlong_tails: u64,
}

/// The reference result for `files`.
pub fn reference(files: &[Vec<u8>], filter: &Filter) -> Expected {
    let mut out = Expected {
        records: Vec::new(),
        lines: 0,
        overlong_tails: 0,
    };
    for file in files {
        if let Some(tail) = file.rsplit(|&b| b == b'\n').next()
            && tail.len() > MAX_LINE
        {
            out.overlong_tails += 1;
        }
        for line in file.split(|&b| b == b'\n') {
            if line.len() > MAX_LINE {
                out.lines += 1;
                continue;
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            out.lines += 1;
            let Ok(text) = std::str::from_utf8(line) else {
                continue;
            };
            if let Ok(r) = serde_json::from_str::<EventRecord>(text)
                && filter.matches(&r)
            {
                out.records.push(r);
            }
        }
    }
    out
}

/// Writes the files into `dir` (after removing any earlier log there).
pub fn write_files(dir: &Path, files: &[Vec<u8>]) {
    for entry in std::fs::read_dir(dir).expect("reading the scratch directory") {
        let path = entry.expect("a directory entry").path();
        std::fs::remove_file(&path).expect("removing an old log file");
    }
    let n = files.len();
    for (i, content) in files.iter().enumerate() {
        let rotated = n - 1 - i;
        let name = if rotated == 0 {
            EVENTS_FILE.to_owned()
        } else {
            format!("{EVENTS_FILE}.{rotated}")
        };
        std::fs::write(dir.join(name), content).expect("writing a log file");
    }
}

/// Runs the query of `data` forwards and backwards and compares both with the reference.
pub fn check(data: &[u8]) {
    let (first, log) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let (filter, pad) = parse_filter(&String::from_utf8_lossy(first));
    let files = split_files(log, pad);
    let expected = reference(&files, &filter);
    let want = &expected.records;

    let dir = crate::scratch_dir("log");
    write_files(&dir, &files);

    // Forwards: every match, in order.
    let forward = Filter {
        limit: None,
        ..filter.clone()
    };
    let mut got = Vec::new();
    let stats = query(&dir, &forward, |r| {
        got.push(r.clone());
        Ok(())
    })
    .unwrap_or_else(|e| panic!("query failed: {e}"));
    assert_eq!(&got, want, "forward query {forward:?}");
    assert_eq!(stats.matched, want.len() as u64, "stats.matched");
    assert_eq!(stats.emitted, want.len() as u64, "stats.emitted");
    assert!(
        stats.lines == expected.lines || stats.lines == expected.lines - expected.overlong_tails,
        "stats.lines: {} of {} ({} unterminated overlong)",
        stats.lines,
        expected.lines,
        expected.overlong_tails
    );
    assert_eq!(stats.files, files.len(), "stats.files");
    let bytes: usize = files.iter().map(Vec::len).sum();
    assert_eq!(stats.bytes, bytes as u64, "stats.bytes");
    assert!(stats.prefiltered + stats.malformed + stats.matched <= stats.lines);

    // Backwards: the newest `limit` matches, oldest first.
    let limit = filter.limit.unwrap_or(3);
    let backward = Filter {
        limit: Some(limit),
        ..filter
    };
    let mut got = Vec::new();
    let stats = query(&dir, &backward, |r| {
        got.push(r.clone());
        Ok(())
    })
    .unwrap_or_else(|e| panic!("query failed: {e}"));
    let newest = &want[want.len().saturating_sub(limit)..];
    assert_eq!(got, newest, "query with limit {limit}: {backward:?}");
    // `--limit 0` returns at once and does not look for matches.
    if limit > 0 {
        assert_eq!(stats.more, want.len() > limit, "stats.more");
    }
    assert_eq!(
        stats.emitted,
        newest.len() as u64,
        "stats.emitted under a limit"
    );
}
