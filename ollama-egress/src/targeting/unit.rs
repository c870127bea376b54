//! `--unit NAME.service`: the slice named after the unit (`NAME.slice`) when the unit runs there
//! or, not running, when that slice's cgroup exists; else the unit's own cgroup.
//!
//! systemd removes a unit's cgroup when the unit stops and makes a new one when it starts again:
//! programs on the unit's cgroup leave with it, and a follower re-attaches only after the new
//! one appears (the first connections of the new process may go unjudged, and with no daemon
//! running none of it is judged). A slice outlives the restarts of the units in it, and programs
//! attached to a cgroup judge its descendants: attached to the slice, every start of the unit is
//! judged from its first connection, with or without a daemon. Everything in the slice is judged:
//! the slice is the unit's alone (the package's drop-in puts only Ollama there).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{TargetError, find_unit_cgroup};

/// How restarts of the unit are handled by where the programs are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Restarts {
    /// Attached to the unit's slice: a restart makes a new cgroup inside it, judged at once.
    Covered,
    /// Attached to the unit's own cgroup: re-attached when systemd makes it again.
    Followed,
}

/// Where a unit's programs go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitTarget {
    /// The unit, completed (`ollama` → `ollama.service`).
    pub unit: String,
    /// The cgroup to attach to: the slice's or the unit's.
    pub cgroup: PathBuf,
    /// Whether restarts are covered (slice) or followed (unit cgroup).
    pub restarts: Restarts,
}

/// The unit name completed with `.service` when it has no type suffix.
pub fn unit_name(unit: &str) -> String {
    if unit.contains('.') {
        unit.to_owned()
    } else {
        format!("{unit}.service")
    }
}

/// The slice a service is meant to run in: `NAME.service` → `NAME.slice`; none for other units.
pub fn slice_of(unit: &str) -> Option<String> {
    unit.strip_suffix(".service")
        .filter(|stem| !stem.is_empty())
        .map(|stem| format!("{stem}.slice"))
}

/// The drop-in that puts `unit` into its slice: the one the package ships for
/// `ollama.service`, an administrator's under /etc for any other unit.
pub fn drop_in(unit: &str) -> String {
    if unit == super::auto::UNIT {
        format!("/usr/lib/systemd/system/{unit}.d/ollama-egress.conf")
    } else {
        format!("/etc/systemd/system/{unit}.d/ollama-egress.conf")
    }
}

/// Finds where the programs for `unit` go under the cgroup v2 mount `mount`.
pub fn resolve_unit(mount: &Path, unit: &str) -> Result<UnitTarget, TargetError> {
    let unit = unit_name(unit);
    let slice = slice_of(&unit);
    let in_slice = |dir: PathBuf| UnitTarget {
        unit: unit.clone(),
        cgroup: dir,
        restarts: Restarts::Covered,
    };
    match find_unit_cgroup(mount, &unit) {
        Ok(cgroup) => {
            let parent = cgroup.parent().map(Path::to_path_buf);
            match (parent, &slice) {
                (Some(p), Some(s)) if p.file_name().and_then(|n| n.to_str()) == Some(s) => {
                    Ok(in_slice(p))
                }
                _ => Ok(UnitTarget {
                    unit,
                    cgroup,
                    restarts: Restarts::Followed,
                }),
            }
        }
        Err(not_running) => match slice.as_deref().map(|s| find_unit_cgroup(mount, s)) {
            Some(Ok(dir)) => Ok(in_slice(dir)),
            _ => Err(not_running),
        },
    }
}

/// The warning for a unit attached outside its slice: what it costs and how to fix it.
pub fn outside_slice_warning(t: &UnitTarget) -> String {
    let parent = t
        .cgroup
        .parent()
        .and_then(Path::file_name)
        .map_or_else(|| "?".into(), |n| n.to_string_lossy().into_owned());
    match slice_of(&t.unit) {
        Some(slice) => format!(
            "{unit} runs in {parent}, not in {slice}: each restart of it makes a new cgroup, \
             re-attached only once it appears (and not at all while no daemon runs); \
             put it in {slice} with the drop-in {drop_in} ([Service] Slice={slice}), then \
             `systemctl daemon-reload && systemctl restart ollama-egress {unit}`",
            unit = t.unit,
            drop_in = drop_in(&t.unit),
        ),
        None => format!(
            "{unit} is not a service: its own cgroup is the target, re-attached when it is made again",
            unit = t.unit
        ),
    }
}

/// `status`'s line on restarts of a unit the daemon attached for, as recorded at its start.
pub fn restarts_text(restarts: Restarts, cgroup: &Path, daemon_running: bool) -> String {
    match (restarts, daemon_running) {
        (Restarts::Covered, _) => format!(
            "covered: attached to the slice {}, which outlives the unit's restarts (each new process is judged from its first connection, with or without a daemon)",
            cgroup.display()
        ),
        (Restarts::Followed, true) => format!(
            "followed: attached to the unit's own cgroup {}; a restart makes a new one, re-attached once it appears (put the unit in its slice to cover restarts)",
            cgroup.display()
        ),
        (Restarts::Followed, false) => format!(
            "NOT COVERED: attached to the unit's own cgroup {} and no daemon runs to re-attach after a restart",
            cgroup.display()
        ),
    }
}

/// `status`'s line on restarts when no daemon runs, from where the pinned links are: on a slice
/// (covered) or on some other cgroup (a restart there is not followed). `None` without links.
pub fn pinned_restarts_text<'a>(
    cgroups: impl IntoIterator<Item = Option<&'a Path>>,
) -> Option<String> {
    let mut cgroups = cgroups.into_iter();
    let first = cgroups.next()??;
    if cgroups.any(|c| c != Some(first)) {
        return None;
    }
    let is_slice = first
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".slice"));
    Some(if is_slice {
        format!(
            "covered: pinned on the slice {}: restarts of the units in it are judged from their first connection",
            first.display()
        )
    } else {
        format!(
            "not followed: pinned on {}; if it is a unit's cgroup, a restart makes a new one that nothing judges until a daemon starts",
            first.display()
        )
    })
}

#[cfg(test)]
mod tests;
