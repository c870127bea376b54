//! Tests of `ollama-egress logs`: argument parsing and output.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use clap::{CommandFactory, Parser};
use time::macros::datetime;

use super::*;
use crate::defaults::LOG_DIR as DEFAULT_LOG_DIR;
use crate::logstore::sample;
use crate::model::{Family, Mode};

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    logs: LogsArgs,
}

fn parse(args: &[&str]) -> Result<LogsArgs, String> {
    Cli::try_parse_from(std::iter::once("logs").chain(args.iter().copied()))
        .map(|c| c.logs)
        .map_err(|e| e.to_string())
}

fn records() -> Vec<EventRecord> {
    let t0 = datetime!(2026-11-22 10:00:00.123456 UTC);
    let mut a = sample(t0);
    a.host = Some("x.r2.cloudflarestorage.com".into());
    let mut b = sample(t0 + time::Duration::seconds(1));
    b.verdict = Verdict::WouldBlock;
    b.mode = Mode::Monitor;
    b.pid = 7;
    b.comm = "ollama_llama_se".into();
    b.dst = "2001:db8::1234".parse().unwrap();
    b.family = Family::Ipv6;
    b.dport = 8443;
    b.country = None;
    b.rule = "default".into();
    let mut c = sample(t0 + time::Duration::seconds(2));
    c.pid = 123456;
    c.comm = "evil\x1b[2J\u{202e}".into();
    vec![a, b, c]
}

fn write_log(dir: &Path, recs: &[EventRecord]) -> String {
    let text: String = recs
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    fs::write(dir.join(EVENTS_FILE), &text).unwrap();
    text
}

fn run_to_string(args: &LogsArgs) -> String {
    let mut out = Vec::new();
    run(args, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn command_is_well_formed() {
    Cli::command().debug_assert();
}

#[test]
fn parses_every_flag() {
    let a = parse(&[]).unwrap();
    assert_eq!(a, LogsArgs::new(DEFAULT_LOG_DIR));
    let a = parse(&[
        "--log-dir",
        "/tmp/x",
        "--verdict",
        "would_block",
        "--since",
        "2026-11-22T10:00:00Z",
        "--until",
        "2026-11-22T11:00:00+01:00",
        "--country",
        "cn",
        "--dst",
        "203.0.113.7",
        "--port",
        "443",
        "--comm",
        "ollama",
        "--rule",
        "deny.*",
        "--limit",
        "5",
        "--json",
        "--follow",
    ])
    .unwrap();
    let f = a.filter();
    assert_eq!(a.log_dir, PathBuf::from("/tmp/x"));
    assert_eq!(f.verdict, Some(Verdict::WouldBlock));
    assert_eq!(f.since, Some(datetime!(2026-11-22 10:00:00 UTC)));
    assert_eq!(f.until, Some(datetime!(2026-11-22 10:00:00 UTC)));
    assert_eq!(f.country.as_deref(), Some("CN"));
    assert_eq!(f.dst, Some("203.0.113.7/32".parse().unwrap()));
    assert_eq!((f.port, f.limit), (Some(443), Some(5)));
    assert_eq!(
        (f.comm.as_deref(), f.rule.as_deref()),
        (Some("ollama"), Some("deny.*"))
    );
    assert!(a.json && a.follow);
    let since = parse(&["--since", "1h"]).unwrap().since.unwrap();
    let ago = OffsetDateTime::now_utc() - since;
    assert!(
        ago >= time::Duration::minutes(59) && ago <= time::Duration::minutes(61),
        "{ago}"
    );
}

#[test]
fn bad_flags_say_what_is_accepted() {
    let e = parse(&["--verdict", "block"]).unwrap_err();
    assert!(e.contains("allowed") && e.contains("would_block"), "{e}");
    let e = parse(&["--since", "yesterday"]).unwrap_err();
    assert!(
        e.contains("yesterday") && e.contains("1h30m") && e.contains("RFC 3339"),
        "{e}"
    );
    let e = parse(&["--until", "x"]).unwrap_err();
    assert!(e.contains("RFC 3339"), "{e}");
    let e = parse(&["--country", "China"]).unwrap_err();
    assert!(e.contains("alpha-2"), "{e}");
    let e = parse(&["--dst", "10.0.0.0/33"]).unwrap_err();
    assert!(e.contains("CIDR"), "{e}");
    assert!(parse(&["--port", "70000"]).is_err());
}

#[test]
fn table_output() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), &records());
    let out = run_to_string(&LogsArgs::new(tmp.path()));
    let expected = "\
TIME                      VERDICT      PID     COMM             PROTO  DESTINATION            HOST                        COUNTRY  RULE
2026-11-22T10:00:00.123Z  blocked      4242    ollama           tcp    203.0.113.7:443        x.r2.cloudflarestorage.com  CN       deny.countries:CN
2026-11-22T10:00:01.123Z  would_block  7       ollama_llama_se  tcp    [2001:db8::1234]:8443  -                           -        default
2026-11-22T10:00:02.123Z  blocked      123456  evil?[2J?        tcp    203.0.113.7:443        -                           CN       deny.countries:CN
3 events (2 blocked, 1 would_block)
";
    assert_eq!(out, expected);
    let mut args = LogsArgs::new(tmp.path());
    args.limit = Some(1);
    let out = run_to_string(&args);
    assert!(
        out.ends_with("1 event (1 blocked); older matching events not shown (--limit)\n"),
        "{out}"
    );
}

#[test]
fn host_filter_matches_names_and_suffixes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut recs = records();
    recs[1].host = Some("r2.cloudflarestorage.com".into());
    write_log(tmp.path(), &recs);
    let pids = |host: &str| {
        let args = parse(&[
            "--log-dir",
            tmp.path().to_str().unwrap(),
            "--host",
            host,
            "--json",
        ])
        .unwrap();
        run_to_string(&args)
            .lines()
            .map(|l| serde_json::from_str::<EventRecord>(l).unwrap().pid)
            .collect::<Vec<_>>()
    };
    assert_eq!(pids("X.R2.cloudflarestorage.com."), [4242]);
    // A suffix matches names under it, not itself; events without a host never match.
    assert_eq!(pids("*.r2.cloudflarestorage.com"), [4242]);
    assert_eq!(pids("r2.cloudflarestorage.com"), [7]);
    assert_eq!(pids("*.cloudflarestorage.com"), [4242, 7]);
    assert!(pids("*.ollama.com").is_empty());
    let e = parse(&["--host", "a..b"]).unwrap_err();
    assert!(e.contains("not a host name"), "{e}");
}

#[test]
fn json_output_is_the_file_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let text = write_log(tmp.path(), &records());
    let mut args = LogsArgs::new(tmp.path());
    args.json = true;
    // The same lines, with the control and bidi characters of the third record escaped.
    let escaped: String = text
        .lines()
        .map(|l| crate::terminal::escape_json(l).into_owned() + "\n")
        .collect();
    assert_ne!(escaped, text);
    assert_eq!(run_to_string(&args), escaped);
    args.verdict = Some(Verdict::WouldBlock);
    let out = run_to_string(&args);
    assert_eq!(out, text.lines().nth(1).unwrap().to_owned() + "\n");
    args.verdict = Some(Verdict::Allowed);
    assert_eq!(run_to_string(&args), "");
}

/// `--json` writes controls and bidi characters from the data as `\uXXXX`: the output holds
/// none raw, is valid JSON, and reads back as the same records.
#[test]
fn json_output_escapes_terminal_controls() {
    let tmp = tempfile::tempdir().unwrap();
    let mut recs = records();
    recs[0].comm = "a\u{9b}31m\u{85}b\u{202e}c\u{2066}\u{1b}".into();
    recs[1].rule = "rule\u{200f}\u{7f}".into();
    write_log(tmp.path(), &recs);
    let mut args = LogsArgs::new(tmp.path());
    args.json = true;
    for follow in [false, true] {
        args.follow = follow;
        let mut out = Vec::new();
        let stop = std::cell::Cell::new(0);
        run_until(&args, &mut out, || {
            stop.set(stop.get() + 1);
            stop.get() > 1
        })
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            !out.chars()
                .any(|c| c != '\n' && crate::terminal::is_unsafe(c)),
            "raw control or bidi character in --json output (follow: {follow}): {out:?}"
        );
        assert!(out.contains("\\u009b") && out.contains("\\u202e"), "{out}");
        let back: Vec<EventRecord> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(back, recs, "follow: {follow}");
    }
}

#[test]
fn no_matches_and_missing_log() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = LogsArgs::new(tmp.path());
    let err = run(&args, &mut Vec::new()).unwrap_err().to_string();
    assert!(err.contains("ollama-egress run"), "{err}");
    let mut missing = LogsArgs::new(tmp.path().join("nope"));
    missing.follow = true;
    let mut out = Vec::new();
    let err = run(&missing, &mut out).unwrap_err().to_string();
    assert!(
        err.starts_with("log directory ") && err.contains("does not exist"),
        "{err}"
    );
    assert!(out.is_empty());
    write_log(tmp.path(), &records());
    args.port = Some(1);
    let out = run_to_string(&args);
    assert_eq!(
        out,
        format!(
            "no matching events in {}\n",
            tmp.path().join("events.jsonl").display()
        )
    );
}

#[test]
fn follow_prints_backlog_and_stops() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), &records());
    let mut args = LogsArgs::new(tmp.path());
    args.follow = true;
    args.limit = Some(2);
    let mut out = Vec::new();
    let stats = run_until(&args, &mut out, || true).unwrap();
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].starts_with("TIME ") && lines[1].contains("would_block"),
        "{out}"
    );
    assert_eq!(lines[3], "2 events (1 blocked, 1 would_block)");
    assert_eq!(stats.emitted, 2);
}

/// A writer whose reader went away, like `logs | head -1`.
struct ClosedPipe;

impl Write for ClosedPipe {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::BrokenPipe.into())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn closed_pipe_ends_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path(), &records());
    let mut args = LogsArgs::new(tmp.path());
    args.json = true;
    assert!(run(&args, &mut ClosedPipe).is_ok());
    args.json = false;
    assert!(run(&args, &mut ClosedPipe).is_ok());
}
