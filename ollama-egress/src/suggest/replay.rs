//! [`replay`]: the logged connections judged with another compiled policy, and what would
//! change, per destination.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use serde::Serialize;
use time::OffsetDateTime;

use ollama_egress_common::ACTION_DENY;

use super::{SuggestError, kernel_guard, short_time};
use crate::logstore::{EventRecord, Filter, QueryStats, scan};
use crate::model::{Action, Direction, Verdict as LogVerdict};
use crate::policy::{CompiledPolicy, canonical_name};
use crate::terminal::printable;

/// How the replayed policy judges one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The policy decides: allowed or not, by this rule.
    Policy {
        /// Allowed.
        allow: bool,
        /// The rule that decides (`default`, `allow.domains:…`, …).
        rule: String,
    },
    /// A kernel guard decided (see [`kernel_guard`]): no policy changes it.
    Guard,
    /// An inbound record: this build's policies have no inbound rules to judge it with.
    Inbound,
}

/// The verdict `compiled` gives `r`, as the kernel would: a domain rule for the logged `host`
/// first (names the kernel had bound to the address), else the address rules and the default.
pub fn judge(compiled: &CompiledPolicy, r: &EventRecord) -> Verdict {
    if r.direction == Direction::Inbound {
        return Verdict::Inbound;
    }
    if kernel_guard(r) {
        return Verdict::Guard;
    }
    if let Some(entry) = r
        .host
        .as_deref()
        .and_then(|h| canonical_name(h).ok())
        .and_then(|name| compiled.lookup_domain(&name).cloned())
    {
        return Verdict::Policy {
            allow: entry.value.action != ACTION_DENY,
            rule: compiled.rule_name(entry.value.rule_id).to_owned(),
        };
    }
    let (action, rule) = compiled.lookup(r.dst);
    Verdict::Policy {
        allow: action == Action::Allow,
        rule: compiled.rule_name(rule).to_owned(),
    }
}

/// One destination whose verdict would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The logged name, when known.
    pub host: Option<String>,
    /// The address.
    pub dst: IpAddr,
    /// The port.
    pub dport: u16,
    /// `tcp`, `udp`, …
    pub proto: String,
    /// The rule of the replayed policy that decides.
    pub rule: String,
    /// The rule that decided when it was logged (the newest record's).
    pub was_rule: String,
    /// Connections.
    pub count: u64,
    /// The oldest.
    #[serde(serialize_with = "ser_time")]
    pub first_seen: OffsetDateTime,
    /// The newest.
    #[serde(serialize_with = "ser_time")]
    pub last_seen: OffsetDateTime,
}

fn ser_time<S: serde::Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&short_time(*t))
}

/// The counts behind a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplaySummary {
    /// Records judged by the replayed policy.
    pub judged: u64,
    /// Of them, with the same verdict.
    pub unchanged: u64,
    /// Allowed when logged, blocked by the replayed policy.
    pub would_block: u64,
    /// Refused (or would have been) when logged, allowed by the replayed policy.
    pub would_allow: u64,
    /// Records a kernel guard decided, kept as they were.
    pub guards: u64,
    /// Inbound records, not judged.
    pub inbound: u64,
    /// Malformed log lines skipped.
    pub malformed: u64,
}

/// What a replay found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// Allowed → blocked, by destination.
    pub would_block: Vec<Change>,
    /// Blocked (or would-block) → allowed, by destination.
    pub would_allow: Vec<Change>,
    /// The counts.
    pub summary: ReplaySummary,
}

impl ReplayReport {
    /// Whether something allowed would be blocked (the exit status 1 of `policy replay`).
    pub fn blocks_something(&self) -> bool {
        !self.would_block.is_empty()
    }

    /// Counts one record.
    pub fn add(&mut self, compiled: &CompiledPolicy, r: &EventRecord, acc: &mut Accumulator) {
        let (allow, rule) = match judge(compiled, r) {
            Verdict::Guard => {
                self.summary.guards += 1;
                return;
            }
            Verdict::Inbound => {
                self.summary.inbound += 1;
                return;
            }
            Verdict::Policy { allow, rule } => (allow, rule),
        };
        self.summary.judged += 1;
        let was_allowed = r.verdict == LogVerdict::Allowed;
        if allow == was_allowed {
            self.summary.unchanged += 1;
            return;
        }
        if allow {
            self.summary.would_allow += 1;
        } else {
            self.summary.would_block += 1;
        }
        let key = (
            allow,
            r.dst,
            r.dport,
            r.host.clone(),
            r.proto.to_string(),
            rule,
        );
        match acc.0.get_mut(&key) {
            Some(c) => {
                c.count += 1;
                c.first_seen = c.first_seen.min(r.ts);
                if r.ts >= c.last_seen {
                    c.last_seen = r.ts;
                    c.was_rule.clone_from(&r.rule);
                }
            }
            None => {
                let change = Change {
                    host: key.3.clone(),
                    dst: r.dst,
                    dport: r.dport,
                    proto: key.4.clone(),
                    rule: key.5.clone(),
                    was_rule: r.rule.clone(),
                    count: 1,
                    first_seen: r.ts,
                    last_seen: r.ts,
                };
                acc.0.insert(key, change);
            }
        }
    }

    /// Moves the accumulated changes in, each list by destination.
    pub fn finish(&mut self, acc: Accumulator) {
        for ((allow, ..), change) in acc.0 {
            if allow {
                self.would_allow.push(change);
            } else {
                self.would_block.push(change);
            }
        }
    }

    /// The report as text: both lists, then the summary.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for (title, list) in [
            ("allowed → blocked", &self.would_block),
            ("blocked → allowed", &self.would_allow),
        ] {
            if list.is_empty() {
                continue;
            }
            s.push_str(&format!("{title}:\n"));
            for c in list {
                let host = printable(c.host.as_deref().unwrap_or("-"));
                let dst = match c.dst {
                    IpAddr::V4(a) => format!("{a}:{}", c.dport),
                    IpAddr::V6(a) => format!("[{a}]:{}", c.dport),
                };
                s.push_str(&format!(
                    "  {dst}/{} host {host}: by {} (was {}), {} connection{}, last {}\n",
                    printable(&c.proto),
                    printable(&c.rule),
                    printable(&c.was_rule),
                    c.count,
                    if c.count == 1 { "" } else { "s" },
                    short_time(c.last_seen)
                ));
            }
        }
        let m = &self.summary;
        s.push_str(&format!(
            "{} connections judged: {} unchanged, {} would be blocked ({}), {} would be allowed \
             ({})",
            m.judged,
            m.unchanged,
            m.would_block,
            destinations(self.would_block.len()),
            m.would_allow,
            destinations(self.would_allow.len())
        ));
        if m.guards > 0 {
            s.push_str(&format!(
                "; {} decided by kernel guards, unchanged",
                m.guards
            ));
        }
        if m.inbound > 0 {
            s.push_str(&format!("; {} inbound not judged", m.inbound));
        }
        s.push('\n');
        s
    }
}

fn destinations(n: usize) -> String {
    format!("{n} destination{}", if n == 1 { "" } else { "s" })
}

/// The changes while the log is read, by destination and deciding rule.
#[derive(Debug, Default)]
pub struct Accumulator(BTreeMap<ChangeKey, Change>);

/// (allowed now, address, port, host, protocol, rule).
type ChangeKey = (bool, IpAddr, u16, Option<String>, String, String);

/// Reads the log in `dir` once (records at or after `since`) and judges it with `compiled`.
pub fn replay(
    dir: &Path,
    compiled: &CompiledPolicy,
    since: Option<OffsetDateTime>,
) -> Result<(ReplayReport, QueryStats), SuggestError> {
    let filter = Filter {
        since,
        ..Filter::default()
    };
    let mut report = ReplayReport::default();
    let mut acc = Accumulator::default();
    let stats = scan(dir, &filter, |r, _| {
        report.add(compiled, r, &mut acc);
        Ok(())
    })?;
    report.finish(acc);
    report.summary.malformed = stats.malformed;
    Ok((report, stats))
}

#[cfg(test)]
mod tests;
