//! `--container NAME|ID`: a Docker or Podman container, found through the engine's API socket
//! (the Docker-compatible `GET /containers/{name}/json`, HTTP/1.1 over a Unix socket), then its
//! init process's `/proc/PID/cgroup` → the cgroup v2 directory the engine placed it in.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

/// The engines' API sockets tried, in order, when none is given.
pub const DEFAULT_ENGINE_SOCKETS: [&str; 2] = ["/var/run/docker.sock", "/run/podman/podman.sock"];

/// How long one API request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The most bytes of an API answer read.
const MAX_RESPONSE: u64 = 16 << 20;

/// Errors of finding a container.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// No engine API socket exists at the paths tried.
    #[error(
        "no container engine socket at {tried}: is Docker or Podman running? (`systemctl start docker` or `systemctl start podman.socket`), or pass --engine-socket PATH"
    )]
    NoEngine {
        /// The paths tried, comma-separated.
        tried: String,
    },
    /// Talking to the engine failed (connect, write, read, or a malformed answer).
    #[error("asking the container engine at {socket}: {detail}")]
    Engine {
        /// The socket.
        socket: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The name is not one an engine gives a container.
    #[error(
        "{name:?} is not a container name or id (letters, digits, `_`, `.`, `-`, starting with a letter or digit)"
    )]
    BadName {
        /// The name given.
        name: String,
    },
    /// The engine knows no container of that name or id.
    #[error(
        "no container {name} at {socket}: list them with `docker ps -a` (or `podman ps -a`), or pass --engine-socket for another engine"
    )]
    NoSuchContainer {
        /// The name or id given.
        name: String,
        /// The engine's socket.
        socket: PathBuf,
    },
    /// The container exists but does not run (no init process, no cgroup).
    #[error(
        "container {name} is not running (it is {status}): start it with `docker start {name}`"
    )]
    NotRunning {
        /// The container's name.
        name: String,
        /// The engine's state, e.g. `exited`.
        status: String,
    },
    /// The container's init process is in no cgroup v2 directory of its own.
    #[error(
        "container {name} (pid {pid}) has no cgroup v2 directory of its own (its cgroup v2 path is {path:?} under {mount}): run the engine with cgroup v2 (Docker places containers in /docker/<id> or system.slice/docker-<id>.scope of the unified hierarchy), or target it with --process NAME"
    )]
    NoCgroup2Path {
        /// The container's name.
        name: String,
        /// Its init process.
        pid: u32,
        /// The `0::` path of `/proc/PID/cgroup`, empty when there is no such line.
        path: String,
        /// The cgroup v2 mount.
        mount: PathBuf,
    },
    /// `/proc/PID/cgroup` could not be read (the process ended?).
    #[error("reading /proc/{pid}/cgroup of container {name}: {source}")]
    ProcCgroup {
        /// The container's name.
        name: String,
        /// Its init process.
        pid: u32,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A running container, as the engine describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Its name, without the leading `/`.
    pub name: String,
    /// Its full id.
    pub id: String,
    /// The image it was created from (`Config.Image`).
    pub image: String,
    /// Whether it runs.
    pub running: bool,
    /// The engine's state word (`running`, `exited`, …).
    pub status: String,
    /// Its init process, 0 when it does not run.
    pub pid: u32,
}

impl ContainerInfo {
    /// The first 12 characters of the id, as engines show it.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }

    /// How the target is shown: `container NAME (ID12)`.
    pub fn describe(&self) -> String {
        format!("container {} ({})", self.name, self.short_id())
    }
}

/// A container found and the cgroup v2 directory it runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerTarget {
    /// The container.
    pub info: ContainerInfo,
    /// Its cgroup v2 directory.
    pub cgroup: PathBuf,
    /// The engine socket that answered.
    pub socket: PathBuf,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectJson {
    id: String,
    #[serde(default)]
    name: String,
    state: StateJson,
    #[serde(default)]
    config: Option<ConfigJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StateJson {
    #[serde(default)]
    running: bool,
    #[serde(default)]
    status: String,
    #[serde(default)]
    pid: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigJson {
    #[serde(default)]
    image: String,
}

/// Parses the engine's answer to `GET /containers/{name}/json`.
pub fn parse_inspect(json: &str) -> Result<ContainerInfo, String> {
    let v: InspectJson = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let pid = u32::try_from(v.state.pid).map_err(|_| format!("bad pid {}", v.state.pid))?;
    Ok(ContainerInfo {
        name: v.name.trim_start_matches('/').to_owned(),
        id: v.id,
        image: v.config.map(|c| c.image).unwrap_or_default(),
        running: v.state.running && pid != 0,
        status: v.state.status,
        pid,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListJson {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    image: String,
    #[serde(default)]
    state: String,
}

/// A container of the engine's list (`GET /containers/json`: running ones only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedContainer {
    /// Its first name, without the leading `/`.
    pub name: String,
    /// Its id.
    pub id: String,
    /// Its image.
    pub image: String,
    /// Its state word.
    pub state: String,
}

/// Parses the engine's answer to `GET /containers/json`.
pub fn parse_list(json: &str) -> Result<Vec<ListedContainer>, String> {
    let v: Vec<ListJson> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(v.into_iter()
        .map(|c| ListedContainer {
            name: c
                .names
                .first()
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_else(|| c.id.clone()),
            id: c.id,
            image: c.image,
            state: c.state,
        })
        .collect())
}

/// The cgroup v2 directory of a process whose `/proc/PID/cgroup` is `text`, under `mount`,
/// when it is the container's own: the `0::` line's path (hybrid hosts list it among the v1
/// lines), whose last component names the container's id (`/docker/<id>`,
/// `docker-<id>.scope`, `libpod-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`).
/// `Err` carries the `0::` path found (empty when none).
pub fn cgroup_dir(text: &str, mount: &Path, id: &str) -> Result<PathBuf, String> {
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim)
        .ok_or_else(String::new)?;
    let rel = path.trim_start_matches('/');
    let own = !id.is_empty()
        && rel.rsplit('/').next().is_some_and(|last| last.contains(id))
        && !rel.split('/').any(|c| c == ".." || c == ".");
    if !own {
        return Err(path.to_owned());
    }
    Ok(mount.join(rel))
}

/// Whether `name` may be put in an API path: engines' names and ids.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 253
}

/// The engine sockets to try: the one given, else the defaults that exist.
pub fn engine_sockets(given: Option<&Path>) -> Result<Vec<PathBuf>, ContainerError> {
    if let Some(p) = given {
        if !p.exists() {
            return Err(ContainerError::NoEngine {
                tried: p.display().to_string(),
            });
        }
        return Ok(vec![p.to_owned()]);
    }
    let found: Vec<PathBuf> = DEFAULT_ENGINE_SOCKETS
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect();
    if found.is_empty() {
        return Err(ContainerError::NoEngine {
            tried: DEFAULT_ENGINE_SOCKETS.join(", "),
        });
    }
    Ok(found)
}

/// Finds a running container by name or id and its cgroup v2 directory under `mount`.
pub fn find_container(
    socket: Option<&Path>,
    name: &str,
    mount: &Path,
) -> Result<ContainerTarget, ContainerError> {
    if !valid_name(name) {
        return Err(ContainerError::BadName {
            name: name.to_owned(),
        });
    }
    let sockets = engine_sockets(socket)?;
    let mut last = None;
    for socket in sockets {
        let (status, body) = match get(&socket, &format!("/containers/{name}/json")) {
            Ok(r) => r,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        if status == 404 {
            last = Some(ContainerError::NoSuchContainer {
                name: name.to_owned(),
                socket,
            });
            continue;
        }
        if status != 200 {
            return Err(engine_err(
                &socket,
                format!("HTTP status {status}: {}", body.trim()),
            ));
        }
        let info = parse_inspect(&body).map_err(|e| engine_err(&socket, e))?;
        return target_of(info, mount, socket);
    }
    Err(last.unwrap_or(ContainerError::NoEngine {
        tried: DEFAULT_ENGINE_SOCKETS.join(", "),
    }))
}

/// A found container's cgroup v2 directory.
fn target_of(
    info: ContainerInfo,
    mount: &Path,
    socket: PathBuf,
) -> Result<ContainerTarget, ContainerError> {
    if !info.running {
        return Err(ContainerError::NotRunning {
            name: info.name,
            status: info.status,
        });
    }
    let proc = format!("/proc/{}/cgroup", info.pid);
    let text = std::fs::read_to_string(&proc).map_err(|source| ContainerError::ProcCgroup {
        name: info.name.clone(),
        pid: info.pid,
        source,
    })?;
    let no_path = |path: String| ContainerError::NoCgroup2Path {
        name: info.name.clone(),
        pid: info.pid,
        path,
        mount: mount.to_owned(),
    };
    let cgroup = cgroup_dir(&text, mount, &info.id).map_err(no_path)?;
    if !cgroup.join("cgroup.procs").is_file() {
        return Err(no_path(cgroup.display().to_string()));
    }
    Ok(ContainerTarget {
        info,
        cgroup,
        socket,
    })
}

/// The running containers of every engine found (none when no engine answers).
pub fn running_containers(socket: Option<&Path>) -> Vec<ListedContainer> {
    let Ok(sockets) = engine_sockets(socket) else {
        return Vec::new();
    };
    sockets
        .iter()
        .filter_map(|s| match get(s, "/containers/json") {
            Ok((200, body)) => parse_list(&body).ok(),
            _ => None,
        })
        .flatten()
        .filter(|c| c.state.is_empty() || c.state == "running")
        .collect()
}

fn engine_err(socket: &Path, detail: impl Into<String>) -> ContainerError {
    ContainerError::Engine {
        socket: socket.to_owned(),
        detail: detail.into(),
    }
}

/// One `GET` over the Unix socket; the status and the body.
pub(crate) fn get(socket: &Path, path: &str) -> Result<(u16, String), ContainerError> {
    let io = |what: &str, e: std::io::Error| engine_err(socket, format!("{what}: {e}"));
    let mut stream = UnixStream::connect(socket).map_err(|e| io("connecting", e))?;
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(REQUEST_TIMEOUT)))
        .map_err(|e| io("setting a timeout", e))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: engine\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| io("sending the request", e))?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE)
        .read_to_end(&mut raw)
        .map_err(|e| io("reading the answer", e))?;
    parse_response(&raw).map_err(|e| engine_err(socket, e))
}

/// Splits an HTTP/1.1 response into its status and body (de-chunked when chunked).
pub fn parse_response(raw: &[u8]) -> Result<(u16, String), String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("an answer with no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "headers that are not UTF-8")?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| format!("not an HTTP answer: {status_line:?}"))?;
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    String::from_utf8(body)
        .map(|b| (status, b))
        .map_err(|_| "a body that is not UTF-8".to_owned())
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a truncated chunk")?;
        let size_text = std::str::from_utf8(&body[..eol]).map_err(|_| "a bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size {
            return Err("a truncated chunk".to_owned());
        }
        out.extend_from_slice(&body[..size]);
        body = body[size..]
            .strip_prefix(b"\r\n")
            .ok_or("a chunk without its end")?;
    }
}

#[cfg(test)]
mod tests;
