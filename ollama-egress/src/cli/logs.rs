//! `ollama-egress logs`: [`LogsArgs`], [`run`] and [`run_until`]: the arguments, the table
//! and JSON output over [`crate::logstore`]'s [`query`] and [`follow`].

use std::io::{self, Write};
use std::path::PathBuf;

use ipnet::IpNet;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::defaults;
use crate::logstore::{
    EVENTS_FILE, EventRecord, Filter, LogError, QueryStats, SINCE_FORMS, UNTIL_FORMS, check_dir,
    follow, parse_since, parse_until, query,
};
use crate::model::{CountryCode, Direction, Verdict};
use crate::policy::DomainPattern;
use crate::terminal::escape_json;

/// Query the event log the daemon writes (`<log-dir>/events.jsonl` and its rotated files).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct LogsArgs {
    /// Directory holding events.jsonl: the daemon's --log-dir.
    #[arg(long, value_name = "DIR", default_value = defaults::LOG_DIR)]
    pub log_dir: PathBuf,
    /// Only events with this verdict (blocked is enforce mode, would_block monitor mode).
    #[arg(long, value_name = "V")]
    pub verdict: Option<Verdict>,
    /// Only events of this direction: outbound (the target connects out) or inbound
    /// (connections and datagrams arriving at the target; the inbound guard).
    #[arg(long, value_name = "D")]
    pub direction: Option<Direction>,
    /// Only events at or after this time: a duration ago (90s, 15m, 1h, 2d, 1h30m) or an
    /// RFC 3339 time (2026-11-22T10:00:00Z).
    #[arg(long, value_name = "DUR|TIME", value_parser = since_arg)]
    pub since: Option<OffsetDateTime>,
    /// Only events at or before this RFC 3339 time (a duration ago works too).
    #[arg(long, value_name = "TIME", value_parser = until_arg)]
    pub until: Option<OffsetDateTime>,
    /// Only destinations in this country (ISO 3166 alpha-2 code, e.g. CN; any case).
    #[arg(long, value_name = "CC", value_parser = country_arg)]
    pub country: Option<String>,
    /// Only destinations in this network (203.0.113.0/24, 2001:db8::/32) or this address.
    #[arg(long, value_name = "CIDR", value_parser = cidr_arg)]
    pub dst: Option<IpNet>,
    /// Only connections to this host name (registry.ollama.ai), or to names under a suffix
    /// (*.r2.cloudflarestorage.com; not the suffix itself), as learned from DNS answers; any
    /// case, a trailing dot ignored. Events without a host never match.
    #[arg(long, value_name = "NAME|*.SUFFIX", value_parser = host_arg)]
    pub host: Option<DomainPattern>,
    /// Only this destination port.
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// Only this process command name (exact, e.g. ollama).
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,
    /// Only events decided by this rule id (deny.countries:CN); end it with * for a prefix
    /// (deny.*).
    #[arg(long, value_name = "ID")]
    pub rule: Option<String>,
    /// Show only the newest N matching events (with --follow: N existing ones first,
    /// default 10).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Print one JSON object per line in the file's schema (for jq); control and
    /// bidirectional-override characters are written as \uXXXX escapes.
    #[arg(long)]
    pub json: bool,
    /// Keep running and print new events as they are logged (until Ctrl-C).
    #[arg(long, short = 'f')]
    pub follow: bool,
}

impl LogsArgs {
    /// The arguments for `dir` with no filter: what `ollama-egress logs --log-dir DIR` parses to.
    pub fn new(dir: impl Into<PathBuf>) -> LogsArgs {
        LogsArgs {
            log_dir: dir.into(),
            verdict: None,
            direction: None,
            since: None,
            until: None,
            country: None,
            dst: None,
            host: None,
            port: None,
            comm: None,
            rule: None,
            limit: None,
            json: false,
            follow: false,
        }
    }

    /// The query these arguments ask for.
    pub fn filter(&self) -> Filter {
        Filter {
            verdict: self.verdict,
            direction: self.direction,
            since: self.since,
            until: self.until,
            country: self.country.clone(),
            dst: self.dst,
            host: self.host.clone(),
            port: self.port,
            comm: self.comm.clone(),
            rule: self.rule.clone(),
            limit: self.limit,
        }
    }
}

impl clap::ValueEnum for Verdict {
    fn value_variants<'a>() -> &'a [Self] {
        Verdict::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

pub(crate) fn since_arg(s: &str) -> Result<OffsetDateTime, String> {
    parse_since(s, OffsetDateTime::now_utc()).map_err(|_| format!("expected {SINCE_FORMS}"))
}

fn until_arg(s: &str) -> Result<OffsetDateTime, String> {
    parse_until(s, OffsetDateTime::now_utc()).map_err(|_| format!("expected {UNTIL_FORMS}"))
}

fn country_arg(s: &str) -> Result<String, String> {
    CountryCode::parse(s)
        .map(String::from)
        .map_err(|_| "expected an ISO 3166 alpha-2 country code such as CN or US".to_owned())
}

fn host_arg(s: &str) -> Result<DomainPattern, String> {
    DomainPattern::parse(s).map_err(|reason| format!("not a host name or *.suffix: {reason}"))
}

fn cidr_arg(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| {
            "expected an address or a network in CIDR form (203.0.113.0/24, 2001:db8::/32)"
                .to_owned()
        })
}

/// Runs `ollama-egress logs`, writing to `out`. With `--follow` it runs until killed; use
/// [`run_until`] to stop it cleanly.
pub fn run(args: &LogsArgs, out: &mut impl Write) -> Result<QueryStats, LogError> {
    run_until(args, out, || false)
}

/// Runs `ollama-egress logs`, writing to `out`; with `--follow`, until `stop()` returns true
/// (checked every [`POLL_INTERVAL`](crate::logstore::POLL_INTERVAL)).
///
/// The default output is an aligned table and a summary line (`3 events (2 blocked,
/// 1 would_block)`, or `no matching events in <dir>/events.jsonl`); `--json` prints the
/// matching records in the file's own schema and nothing else. Neither writes a control or
/// bidirectional-override character from the data raw: the table shows `?`, JSON `\uXXXX`. A closed output pipe
/// (`logs | head`) ends the run quietly with `Ok`. The caller prints
/// [`QueryStats::warning`] (malformed lines skipped) on stderr.
pub fn run_until(
    args: &LogsArgs,
    out: &mut impl Write,
    stop: impl Fn() -> bool,
) -> Result<QueryStats, LogError> {
    let filter = args.filter();
    let mut printer = Printer::new(args.json, args.follow);
    let result = if args.follow {
        // Fail before printing the header.
        check_dir(&args.log_dir)?;
        printer
            .start(out)
            .map_err(|source| LogError::Output { source })?;
        follow(
            &args.log_dir,
            &filter,
            |r| {
                printer.push(out, r)?;
                out.flush()
            },
            stop,
        )
    } else {
        query(&args.log_dir, &filter, |r| printer.push(out, r))
    };
    let stats = match result {
        Ok(stats) => stats,
        Err(LogError::Output { source }) if source.kind() == io::ErrorKind::BrokenPipe => {
            return Ok(QueryStats {
                emitted: printer.total,
                ..QueryStats::default()
            });
        }
        Err(e) => return Err(e),
    };
    let done = printer
        .finish(
            out,
            &stats,
            &args.log_dir.join(EVENTS_FILE).display().to_string(),
        )
        .and_then(|()| out.flush());
    match done {
        Ok(()) => Ok(stats),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(stats),
        Err(source) => Err(LogError::Output { source }),
    }
}

/// Table columns.
const HEADERS: [&str; 9] = [
    "TIME",
    "VERDICT",
    "PID",
    "COMM",
    "PROTO",
    "DESTINATION",
    "HOST",
    "COUNTRY",
    "RULE",
];

/// Column widths for a table that cannot look ahead (`--follow`): the longest time, verdict
/// and comm, typical pids, IPv4 destinations and host names.
const STREAM_WIDTHS: [usize; 9] = [24, 11, 7, 15, 5, 21, 24, 7, 0];

/// Rows buffered to size the columns before the table starts printing.
const SAMPLE_ROWS: usize = 1000;

/// Writes records as JSON lines or as a table, counting them per verdict.
struct Printer {
    json: bool,
    /// `--follow`: fixed widths, no note about older matches.
    streaming: bool,
    widths: Option<[usize; 9]>,
    pending: Vec<[String; 9]>,
    /// Reused buffer for a JSON line.
    line: Vec<u8>,
    total: u64,
    by_verdict: [u64; 3],
}

impl Printer {
    fn new(json: bool, streaming: bool) -> Printer {
        Printer {
            json,
            streaming,
            widths: streaming.then_some(STREAM_WIDTHS),
            pending: Vec::new(),
            line: Vec::new(),
            total: 0,
            by_verdict: [0; 3],
        }
    }

    /// Prints the header now when the widths are fixed.
    fn start(&mut self, out: &mut impl Write) -> io::Result<()> {
        match self.widths {
            Some(widths) if !self.json => write_row(out, &widths, &HEADERS.map(str::to_owned)),
            _ => Ok(()),
        }
    }

    fn push(&mut self, out: &mut impl Write, r: &EventRecord) -> io::Result<()> {
        self.total += 1;
        self.by_verdict[Verdict::ALL
            .iter()
            .position(|v| *v == r.verdict)
            .unwrap_or(0)] += 1;
        if self.json {
            self.line.clear();
            serde_json::to_writer(&mut self.line, r).map_err(io::Error::other)?;
            let text = std::str::from_utf8(&self.line).map_err(io::Error::other)?;
            let text = escape_json(text);
            out.write_all(text.as_bytes())?;
            return out.write_all(b"\n");
        }
        let row = cells(r);
        match self.widths {
            Some(widths) => write_row(out, &widths, &row),
            None => {
                self.pending.push(row);
                if self.pending.len() >= SAMPLE_ROWS {
                    self.flush_pending(out)?;
                }
                Ok(())
            }
        }
    }

    /// Sizes the columns from the buffered rows and prints the header and the rows.
    fn flush_pending(&mut self, out: &mut impl Write) -> io::Result<()> {
        let widths = match self.widths {
            Some(w) => w,
            None => {
                let mut w = HEADERS.map(|h| h.chars().count());
                for row in &self.pending {
                    for (width, cell) in w.iter_mut().zip(row) {
                        *width = (*width).max(cell.chars().count());
                    }
                }
                self.widths = Some(w);
                write_row(out, &w, &HEADERS.map(str::to_owned))?;
                w
            }
        };
        for row in self.pending.drain(..) {
            write_row(out, &widths, &row)?;
        }
        Ok(())
    }

    /// Prints what is buffered and the summary line (table only).
    fn finish(&mut self, out: &mut impl Write, stats: &QueryStats, log: &str) -> io::Result<()> {
        if self.json {
            return Ok(());
        }
        if !self.pending.is_empty() {
            self.flush_pending(out)?;
        }
        if self.total == 0 {
            return writeln!(out, "no matching events in {log}");
        }
        let parts: Vec<String> = Verdict::ALL
            .iter()
            .zip(self.by_verdict)
            .filter(|(_, n)| *n > 0)
            .map(|(v, n)| format!("{n} {v}"))
            .collect();
        let noun = if self.total == 1 { "event" } else { "events" };
        write!(out, "{} {noun} ({})", self.total, parts.join(", "))?;
        if !self.streaming && stats.more {
            write!(out, "; older matching events not shown (--limit)")?;
        }
        writeln!(out)
    }
}

fn write_row(out: &mut impl Write, widths: &[usize; 9], row: &[String; 9]) -> io::Result<()> {
    let mut line = String::with_capacity(128);
    for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
        if i + 1 == row.len() {
            line.push_str(cell);
        } else {
            line.push_str(cell);
            let pad = width.saturating_sub(cell.chars().count()) + 2;
            line.extend(std::iter::repeat_n(' ', pad));
        }
    }
    line.push('\n');
    out.write_all(line.as_bytes())
}

/// The table cells of a record, with terminal control characters neutralised (a process
/// chooses its own comm).
fn cells(r: &EventRecord) -> [String; 9] {
    let time =
        r.ts.to_offset(time::UtcOffset::UTC)
            .format(format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .unwrap_or_else(|_| r.ts.to_string());
    [
        time,
        r.verdict.as_str().to_owned(),
        r.pid.to_string(),
        printable(&r.comm),
        printable(&r.proto.as_str()),
        r.destination(),
        r.host.as_deref().map_or_else(|| "-".to_owned(), printable),
        r.country
            .as_deref()
            .map_or_else(|| "-".to_owned(), printable),
        printable(&r.rule),
    ]
}

/// `s` for a table cell: see [`crate::terminal::printable`].
fn printable(s: &str) -> String {
    crate::terminal::printable(s).into_owned()
}

#[cfg(test)]
mod tests;
