//! `policy suggest` and `policy replay`: the log → a policy, a policy → the log's changes.

use std::io::Write;

use anyhow::Context as _;

use super::{ReplayArgs, SuggestArgs};
use crate::inputs;
use crate::logstore::QueryStats;
use crate::suggest::{self, SuggestOptions};

/// `policy suggest`: the policy on `out`, the summary on `err`.
pub(super) fn suggest(
    args: &SuggestArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<()> {
    let (country, asn) = inputs::geo_paths(args.geo.geo_db.as_deref(), args.geo.asn_db.as_deref());
    let db = inputs::open_geo(country.as_deref(), asn.as_deref())?;
    let opts = SuggestOptions {
        since: args.since,
        by_asn: args.asns,
        wildcard_siblings: args.wildcard_siblings,
        include_blocked: args.include_blocked,
        geo: db.as_deref(),
    };
    let s = suggest::suggest(&args.log_dir, &opts)?;
    out.write_all(s.toml.as_bytes())
        .context("writing the policy")?;
    let a = &s.aggregate;
    let mut line = format!(
        "suggest: {} connections from {} ({})",
        a.records,
        args.log_dir.display(),
        read_summary(&s.stats)
    );
    if a.skipped.blocked > 0 {
        line.push_str(&format!(
            "; {} blocked left out (--include-blocked counts them)",
            a.skipped.blocked
        ));
    }
    if a.skipped.guards > 0 {
        line.push_str(&format!(
            "; {} decided by kernel guards left out",
            a.skipped.guards
        ));
    }
    if a.skipped.inbound_without_src > 0 {
        line.push_str(&format!(
            "; {} inbound without a source left out",
            a.skipped.inbound_without_src
        ));
    }
    let _ = writeln!(err, "{line}");
    if a.records == 0 {
        let _ = writeln!(
            err,
            "warning: no connections in the log{}: the policy allows loopback only",
            if args.since.is_some() {
                " since then"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// `policy replay`: the report on `out`, the log reading on `err`; the exit status.
pub(super) fn replay(
    args: &ReplayArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<u8> {
    let policy = inputs::load_policy(Some(&args.file))?;
    let (country, asn) = inputs::geo_paths(args.geo.geo_db.as_deref(), args.geo.asn_db.as_deref());
    let db = inputs::open_geo(country.as_deref(), asn.as_deref())?;
    let compiled = inputs::compile_policy(&policy, db.as_deref())?;
    let (report, stats) = suggest::replay(&args.log_dir, &compiled, args.since)?;
    if args.json {
        // One line: `escape_json` expects serde_json's compact form.
        let json = serde_json::to_string(&report).context("encoding JSON")?;
        writeln!(out, "{}", crate::terminal::escape_json(&json)).context("writing JSON")?;
    } else {
        out.write_all(report.text().as_bytes())
            .context("writing the report")?;
    }
    let _ = writeln!(
        err,
        "replay: {} against {} ({})",
        args.log_dir.display(),
        args.file.display(),
        read_summary(&stats)
    );
    Ok(u8::from(report.blocks_something()))
}

/// `12 records in 2 files, 4096 bytes, 1 malformed line skipped`.
fn read_summary(stats: &QueryStats) -> String {
    let mut s = format!(
        "{} lines in {} file{}, {} bytes",
        stats.lines,
        stats.files,
        if stats.files == 1 { "" } else { "s" },
        stats.bytes
    );
    match stats.malformed {
        0 => {}
        1 => s.push_str(", 1 malformed line skipped"),
        n => s.push_str(&format!(", {n} malformed lines skipped")),
    }
    s
}
