//! The report as text (a table grouped by severity, each finding with its fix) or as JSON
//! (schema [`SCHEMA_VERSION`], documented in the README's "Audit" section).

use std::io::{self, Write};

use serde::Serialize;

use super::{Finding, Report, Severity, Summary};
use crate::terminal::{escape_json, printable};

/// The `version` field of the JSON output; raised only when a field changes meaning (fields
/// are only ever added).
pub const SCHEMA_VERSION: u32 = 1;

/// One process in the JSON output.
#[derive(Serialize)]
struct JsonProcess<'a> {
    pid: u32,
    comm: &'a str,
    uid: u32,
}

/// One listener in the JSON output.
#[derive(Serialize)]
struct JsonListener<'a> {
    addr: String,
    pids: &'a [u32],
}

/// The summary in the JSON output.
#[derive(Serialize)]
struct JsonSummary {
    #[serde(flatten)]
    counts: Summary,
    exit: u8,
}

/// The JSON document.
#[derive(Serialize)]
struct JsonReport<'a> {
    version: u32,
    target: &'a str,
    cgroup: String,
    unit: Option<&'a str>,
    policy: &'a str,
    processes: Vec<JsonProcess<'a>>,
    listeners: Vec<JsonListener<'a>>,
    findings: &'a [Finding],
    summary: JsonSummary,
}

/// Writes the report as one JSON document on one line; control characters from the data
/// are escaped.
pub fn json(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let f = &report.facts;
    let doc = JsonReport {
        version: SCHEMA_VERSION,
        target: &f.target,
        cgroup: f.cgroup.display().to_string(),
        unit: f.unit.as_deref(),
        policy: &f.policy.origin,
        processes: f
            .processes
            .iter()
            .map(|p| JsonProcess {
                pid: p.pid,
                comm: &p.comm,
                uid: p.uid,
            })
            .collect(),
        listeners: f
            .listeners
            .iter()
            .map(|l| JsonListener {
                addr: l.addr.to_string(),
                pids: &l.pids,
            })
            .collect(),
        findings: &report.findings,
        summary: JsonSummary {
            counts: report.summary(),
            exit: report.exit_code(),
        },
    };
    let text = serde_json::to_string(&doc).map_err(io::Error::other)?;
    writeln!(out, "{}", escape_json(&text))
}

/// Writes the report as text: a headline, the findings grouped by severity, each with its fix,
/// and a summary line.
pub fn text(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let f = &report.facts;
    let cgroup = f.cgroup.display().to_string();
    let target = if f.target.ends_with(&cgroup) {
        f.target.clone()
    } else {
        format!("{} (cgroup {cgroup})", f.target)
    };
    writeln!(
        out,
        "audit of {}: {} process{}, {} listening socket{}, policy {}",
        printable(&target),
        f.processes.len(),
        if f.processes.len() == 1 { "" } else { "es" },
        f.listeners.len(),
        if f.listeners.len() == 1 { "" } else { "s" },
        printable(&f.policy.origin),
    )?;
    let width = report
        .findings
        .iter()
        .map(|x| x.id.len())
        .max()
        .unwrap_or(0);
    for severity in Severity::ALL {
        let group: Vec<&Finding> = report
            .findings
            .iter()
            .filter(|x| x.severity == severity)
            .collect();
        if group.is_empty() {
            continue;
        }
        writeln!(out, "\n{}", severity.as_str().to_ascii_uppercase())?;
        for x in group {
            writeln!(out, "  {:<width$}  {}", x.id, printable(&x.seen))?;
            writeln!(out, "  {:<width$}  fix: {}", "", printable(&x.fix))?;
        }
    }
    let s = report.summary();
    writeln!(
        out,
        "\n{} high, {} medium, {} low, {} info",
        s.high, s.medium, s.low, s.info
    )
}
