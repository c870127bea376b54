//! Automatic targeting (no target flag): the `ollama.service` unit when systemd has its cgroup,
//! else a running container whose image name contains `ollama`, else processes named `ollama`.

use std::path::{Path, PathBuf};

use super::{TargetSpec, containers::ListedContainer};

/// The unit looked for.
pub const UNIT: &str = "ollama.service";

/// The word looked for in container image names.
pub const IMAGE_WORD: &str = "ollama";

/// What was found on this host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// The cgroup of `ollama.service`, when systemd has one.
    pub unit_cgroup: Option<PathBuf>,
    /// The running containers the engines listed.
    pub containers: Vec<ListedContainer>,
}

/// The target picked and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The target.
    pub spec: TargetSpec,
    /// Why, one sentence for the log.
    pub reason: String,
}

/// Picks the target from what was found.
pub fn choose(found: &Found, process: &str) -> Choice {
    if let Some(cg) = &found.unit_cgroup {
        return Choice {
            spec: TargetSpec::Unit(UNIT.to_owned()),
            reason: format!("systemd has a cgroup for {UNIT} ({})", cg.display()),
        };
    }
    let mut matching: Vec<&ListedContainer> = found
        .containers
        .iter()
        .filter(|c| c.image.to_ascii_lowercase().contains(IMAGE_WORD))
        .collect();
    matching.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(first) = matching.first() {
        let others = if matching.len() > 1 {
            format!(
                "; {} other running containers match too ({}): pass --container to choose",
                matching.len() - 1,
                matching[1..]
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            String::new()
        };
        return Choice {
            spec: TargetSpec::Container(first.name.clone()),
            reason: format!(
                "no {UNIT} cgroup; container {} runs image {}, whose name contains {IMAGE_WORD:?}{others}",
                first.name, first.image
            ),
        };
    }
    Choice {
        spec: TargetSpec::Process(process.to_owned()),
        reason: format!(
            "no {UNIT} cgroup and no running container of an image named *{IMAGE_WORD}*: judging processes named {process}"
        ),
    }
}

/// Looks at this host: the unit's target under `mount` (its cgroup, or its slice `ollama.slice`
/// while it is stopped), the engines' running containers.
pub fn look(mount: &Path, engine_socket: Option<&Path>) -> Found {
    Found {
        unit_cgroup: super::unit::resolve_unit(mount, UNIT)
            .ok()
            .map(|t| t.cgroup),
        containers: super::containers::running_containers(engine_socket),
    }
}

#[cfg(test)]
mod tests;
