//! A private Docker engine for one test: Debian's `dockerd` without iptables or a bridge, its
//! data root, exec root, pid file and API socket in a temporary directory. Dropping it removes
//! the containers it ran, stops dockerd (and the containerd it started) by pid, unmounts what
//! is left under the data root and removes the `docker` cgroups that appeared with it, also when
//! the test fails.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// Debian's `docker.io` puts the daemon here.
pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// And the client here.
pub const DOCKER: &str = "/usr/bin/docker";

/// A running private engine.
pub struct Engine {
    dockerd: Option<Child>,
    dir: tempfile::TempDir,
    socket: PathBuf,
    created_cgroups: Vec<PathBuf>,
    containers: Vec<String>,
}

impl Engine {
    /// Starts dockerd and waits (up to 60 s) until its API answers; panics naming what is
    /// missing or the engine's log.
    pub fn start() -> Self {
        crate::require_root();
        for bin in [DOCKERD, DOCKER] {
            assert!(
                Path::new(bin).is_file(),
                "{bin} is missing: install Debian's docker.io (`apt-get install docker.io`, which `cargo xtask setup` does)"
            );
        }
        let absent = absent_docker_cgroups();
        // Short: the socket's path must fit in a sockaddr_un.
        let dir = tempfile::Builder::new()
            .prefix("oe-eng")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let socket = dir.path().join("api.sock");
        let log = fs::File::create(dir.path().join("dockerd.log")).expect("dockerd log");
        let child = Command::new(DOCKERD)
            .args(["--iptables=false", "--bridge=none"])
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dockerd log"))
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        let mut engine = Self {
            dockerd: Some(child),
            dir,
            socket,
            created_cgroups: absent,
            containers: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if engine.docker(&["version"]).status.success() {
                return engine;
            }
            if let Some(status) = engine
                .dockerd
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("dockerd exited with {status}:\n{}", engine.log());
            }
            assert!(
                Instant::now() < deadline,
                "dockerd does not answer after 60 s:\n{}",
                engine.log()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// What dockerd logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// The engine's API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A scratch directory that goes away with the engine.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// `docker ARGS` against this engine.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .arg("--host")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    /// `docker ARGS`, panicking with its output unless it succeeds; its stdout, trimmed.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Remembers a container name to remove on drop (for `docker run --name NAME`).
    pub fn track(&mut self, name: &str) {
        self.containers.push(name.to_owned());
    }
}

/// The `docker` directories of the cgroup hierarchies that do not exist yet: the engine makes
/// them, its drop removes them.
fn absent_docker_cgroups() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/sys/fs/cgroup/docker")];
    if let Ok(entries) = fs::read_dir("/sys/fs/cgroup") {
        dirs.extend(
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path().join("docker")),
        );
    }
    dirs.retain(|d| !d.exists());
    dirs
}

impl Drop for Engine {
    fn drop(&mut self) {
        for name in std::mem::take(&mut self.containers) {
            let _ = self.docker(&["rm", "-f", &name]);
        }
        let root = self.dir.path().display().to_string();
        let containerd = fs::read_to_string(self.dir.path().join("exec/containerd/containerd.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        if let Some(mut child) = self.dockerd.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // The containerd this dockerd started, if it outlived it, and only while its command
        // line still names this engine's directory (the pid is not reused by another).
        if let Some(pid) = containerd
            && String::from_utf8_lossy(
                &fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default(),
            )
            .contains(&root)
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        // Overlay and shm mounts left under the data root, deepest first.
        if let Ok(info) = fs::read_to_string("/proc/self/mountinfo") {
            let mut points: Vec<&str> = info
                .lines()
                .filter_map(|l| l.split_whitespace().nth(4))
                .filter(|p| p.starts_with(&root))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        for cg in &self.created_cgroups {
            let _ = fs::remove_dir(cg);
        }
    }
}
