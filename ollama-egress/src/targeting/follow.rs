//! Following a container by name: `docker restart` and a crash restart make its cgroup again
//! at the same path; `docker rm` + `docker run --name` makes one under a new id beside it. The
//! daemon watches the engine's parent cgroup directory for new directories and asks the engine
//! about one that names another id. It asks the list (`GET /containers/json?filters=…`), which
//! answers from the engine's in-memory view while the container starts; Docker's inspect takes
//! the container's lock and answers only once the start is over.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use super::containers::{self, ContainerError, ContainerTarget, ListedContainer};

/// The prefixes engines put before a container's id in its cgroup directory's name.
const DIR_PREFIXES: [&str; 5] = ["docker-", "libpod-", "cri-containerd-", "crio-", ""];

/// A container followed by name, and the id it has now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerFollow {
    name: String,
    id: String,
    socket: PathBuf,
}

/// The container under a new id, and its cgroup directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recreated {
    /// Its new id.
    pub id: String,
    /// Its new cgroup v2 directory.
    pub cgroup: PathBuf,
}

impl ContainerFollow {
    /// Follows the container found at start-up.
    pub fn new(found: &ContainerTarget) -> Self {
        Self {
            name: found.info.name.clone(),
            id: found.info.id.clone(),
            socket: found.socket.clone(),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How the target is shown: `container NAME (ID12)`.
    pub fn describe(&self) -> String {
        format!(
            "container {} ({})",
            self.name,
            self.id.get(..12).unwrap_or(&self.id)
        )
    }

    /// The container runs under `id` from now on.
    pub fn moved_to(&mut self, id: String) {
        self.id = id;
    }

    /// The directories of `created` (made in `parent`) that name a container id other than
    /// the one followed: only those are worth asking the engine about.
    pub fn candidates(&self, created: &[OsString]) -> Vec<OsString> {
        created
            .iter()
            .filter(|n| {
                n.to_str()
                    .and_then(id_of_dir)
                    .is_some_and(|id| id != self.id)
            })
            .cloned()
            .collect()
    }

    /// Which of the directories `created` in `parent` (see [`Self::candidates`]) is this
    /// container's under a new id, asking the engine which container each id is.
    pub fn identify(
        &self,
        parent: &Path,
        created: &[OsString],
    ) -> Result<Option<Recreated>, ContainerError> {
        for dir in created {
            let Some(id) = dir.to_str().and_then(id_of_dir) else {
                continue;
            };
            let list = self.list(&filter_path("id", id))?;
            if list.iter().any(|c| c.id == id && c.name == self.name) {
                return Ok(Some(Recreated {
                    id: id.to_owned(),
                    cgroup: parent.join(dir),
                }));
            }
        }
        Ok(None)
    }

    /// The backstop, when the followed cgroup is gone: the id the engine gives the name now,
    /// when it is another and its cgroup directory is in `parent` already.
    pub fn look_up(&self, parent: &Path) -> Result<Option<Recreated>, ContainerError> {
        let list = self.list(&filter_path("name", &format!("^/{}$", self.name)))?;
        let Some(now) = list.iter().find(|c| c.name == self.name && c.id != self.id) else {
            return Ok(None);
        };
        let dirs = std::fs::read_dir(parent).map_err(|e| ContainerError::Engine {
            socket: self.socket.clone(),
            detail: format!("listing {}: {e}", parent.display()),
        })?;
        Ok(dirs
            .flatten()
            .map(|e| e.file_name())
            .find(|n| n.to_str().and_then(id_of_dir) == Some(now.id.as_str()))
            .map(|dir| Recreated {
                id: now.id.clone(),
                cgroup: parent.join(dir),
            }))
    }

    fn list(&self, path: &str) -> Result<Vec<ListedContainer>, ContainerError> {
        let (status, body) = containers::get(&self.socket, path)?;
        let err = |detail: String| ContainerError::Engine {
            socket: self.socket.clone(),
            detail,
        };
        if status != 200 {
            return Err(err(format!("HTTP status {status}: {}", body.trim())));
        }
        containers::parse_list(&body).map_err(err)
    }
}

/// The container id a cgroup directory's name carries (`<id>`, `docker-<id>.scope`,
/// `libpod-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`): 64 lowercase hex digits.
pub fn id_of_dir(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(".scope").unwrap_or(name);
    DIR_PREFIXES
        .iter()
        .filter_map(|p| stem.strip_prefix(p))
        .find(|id| id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// `GET /containers/json` of every container (also those not running yet) whose `key` filter
/// is `value`, the filter percent-encoded.
pub fn filter_path(key: &str, value: &str) -> String {
    let filters = serde_json::json!({ key: [value] }).to_string();
    format!(
        "/containers/json?all=1&filters={}",
        percent_encode(&filters)
    )
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
