//! The target options `run` and `audit` share.

use std::path::PathBuf;

use clap::Args;

use crate::targeting::TargetSpec;

/// Which Ollama: a cgroup, a systemd unit, a container or processes by name; automatic when
/// none is given.
#[derive(Debug, Clone, Default, Args)]
#[command(group(clap::ArgGroup::new("target").args(["cgroup", "unit", "container", "process"])))]
pub struct TargetArgs {
    /// Ollama's cgroup v2 directory: an absolute path, or one relative to the cgroup v2 root
    /// (e.g. `system.slice/ollama.service`).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// The cgroup of this systemd unit (e.g. ollama.service).
    #[arg(long, value_name = "NAME")]
    pub unit: Option<String>,
    /// The cgroup v2 directory of this running Docker or Podman container (a name or id, e.g.
    /// one from the ollama/ollama image), found through the engine's API socket; `run`'s events
    /// name it (`container`). `run` follows it by name: after a restart, or a re-creation under
    /// the same name, the programs move to its new cgroup as soon as the engine makes it.
    #[arg(long, value_name = "NAME|ID")]
    pub container: Option<String>,
    /// The container engine's API socket, for --container and automatic targeting.
    /// [default: /var/run/docker.sock, then /run/podman/podman.sock]
    #[arg(long, value_name = "PATH")]
    pub engine_socket: Option<PathBuf>,
    /// Processes with this name, and their descendants: `run` judges them from their first
    /// connection (the kernel marks them at exec, and a marked task's children at fork, and the
    /// programs on the cgroup v2 root judge only marked tasks). With no target option, the
    /// ollama.service unit is picked if systemd has its cgroup, else a running container whose
    /// image name contains `ollama`, else processes named `ollama` (logged with the reason).
    #[arg(long, value_name = "NAME")]
    pub process: Option<String>,
}

impl TargetArgs {
    /// The target as given ([`TargetSpec::Auto`] when none is).
    pub fn spec(&self) -> TargetSpec {
        match (&self.cgroup, &self.unit, &self.container, &self.process) {
            (Some(c), ..) => TargetSpec::Cgroup(c.clone()),
            (_, Some(u), ..) => TargetSpec::Unit(u.clone()),
            (_, _, Some(c), _) => TargetSpec::Container(c.clone()),
            (.., Some(p)) => TargetSpec::Process(p.clone()),
            _ => TargetSpec::Auto,
        }
    }
}
