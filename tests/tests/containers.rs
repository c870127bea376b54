//! `--container` against a real Docker engine (Debian's `docker.io`): the test starts its own
//! `dockerd` (no iptables, no bridge, data and exec roots and API socket in a temporary
//! directory), imports an image from a tarball holding `busybox-static`, and runs containers
//! with `--network none`. The engine is started once for the whole file (one test), and
//! everything — containers, dockerd and its containerd by pid, the data root, the cgroups the
//! engine made — is removed on drop, also when an assertion fails.

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
use ollama_egress_tests::{Daemon, daemon_bin, require_root, unique, write_policy};

const DOCKERD: &str = "/usr/sbin/dockerd";
const DOCKER: &str = "/usr/bin/docker";
const BUSYBOX: &str = "/bin/busybox";

const POLICY: &str = r#"
default = "deny"

[allow]
cidrs = ["127.0.0.0/8"]
"#;

/// A private Docker engine.
struct Engine {
    dockerd: Option<Child>,
    tmp: tempfile::TempDir,
    socket: PathBuf,
    /// The engine's `docker` cgroup directories that did not exist before it started.
    new_cgroups: Vec<PathBuf>,
    containers: Vec<String>,
}

impl Engine {
    fn start() -> Self {
        for bin in [DOCKERD, DOCKER] {
            assert!(
                Path::new(bin).is_file(),
                "{bin} is missing: install Debian's docker.io (`apt-get install docker.io`)"
            );
        }
        assert!(
            Path::new(BUSYBOX).is_file(),
            "{BUSYBOX} is missing: install busybox-static"
        );
        let before = docker_cgroups();
        // A short path: the API socket's path must fit a sockaddr_un.
        let tmp = tempfile::Builder::new()
            .prefix("oe-dk")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let socket = tmp.path().join("docker.sock");
        let log = fs::File::create(tmp.path().join("dockerd.log")).expect("log file");
        let dockerd = Command::new(DOCKERD)
            .arg("--iptables=false")
            .arg("--bridge=none")
            .arg("--data-root")
            .arg(tmp.path().join("data"))
            .arg("--exec-root")
            .arg(tmp.path().join("exec"))
            .arg("--pidfile")
            .arg(tmp.path().join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        let mut engine = Self {
            dockerd: Some(dockerd),
            tmp,
            socket,
            new_cgroups: before,
            containers: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !engine.docker(&["version"]).status.success() {
            if let Some(status) = engine
                .dockerd
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("dockerd exited with {status}:\n{}", engine.log());
            }
            assert!(
                Instant::now() < deadline,
                "dockerd not answering after 60 s:\n{}",
                engine.log()
            );
            thread::sleep(Duration::from_millis(200));
        }
        engine
    }

    fn log(&self) -> String {
        fs::read_to_string(self.tmp.path().join("dockerd.log")).unwrap_or_default()
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Imports a one-file image: busybox at /bin/busybox.
    fn import_busybox(&self, image: &str) {
        let root = self.tmp.path().join("image");
        fs::create_dir_all(root.join("bin")).expect("image root");
        fs::copy(BUSYBOX, root.join("bin/busybox")).expect("copy busybox");
        let tar = self.tmp.path().join("image.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("run tar");
        assert!(st.success(), "tar failed");
        self.docker_ok(&["import", &tar.display().to_string(), image]);
    }

    /// Runs `busybox sleep` in a new container without network; returns its id.
    fn run(&mut self, name: &str, image: &str) -> String {
        self.containers.push(name.to_owned());
        self.docker_ok(&[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            name,
            image,
            "/bin/busybox",
            "sleep",
            "600",
        ])
    }

    /// `busybox nc` to `addr port` from inside the container; its stderr.
    fn nc(&self, name: &str, addr: &str, port: &str) -> String {
        let out = self.docker(&["exec", name, "/bin/busybox", "nc", "-w", "1", addr, port]);
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn socket_arg(&self) -> String {
        self.socket.display().to_string()
    }
}

/// The `docker` directories of the cgroup hierarchies (v1 and v2) that do not exist yet.
fn docker_cgroups() -> Vec<PathBuf> {
    fs::read_dir("/sys/fs/cgroup")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path().join("docker"))
                .chain([PathBuf::from("/sys/fs/cgroup/docker")])
                .filter(|p| !p.exists())
                .collect()
        })
        .unwrap_or_default()
}

impl Drop for Engine {
    fn drop(&mut self) {
        for name in &self.containers {
            let _ = self.docker(&["rm", "-f", name]);
        }
        let containerd = fs::read_to_string(self.tmp.path().join("exec/containerd/containerd.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        if let Some(mut child) = self.dockerd.take() {
            let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // The containerd dockerd started, when it outlived dockerd: only if it is still the
        // one of this engine's exec root.
        if let Some(pid) = containerd {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let root = self.tmp.path().display().to_string();
            if String::from_utf8_lossy(&cmdline).contains(&root) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        // Mounts left under the data root (overlay layers) would keep it from being removed.
        if let Ok(mounts) = fs::read_to_string("/proc/self/mountinfo") {
            let root = self.tmp.path().display().to_string();
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(4))
                .filter(|p| p.starts_with(&root))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        for cg in &self.new_cgroups {
            let _ = fs::remove_dir(cg);
        }
    }
}

/// `ollama-egress run` that is expected to fail at start-up; its stderr.
fn run_fails(args: &[&str]) -> String {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = Command::new(daemon_bin())
        .arg("run")
        .args(args)
        .arg("--log-dir")
        .arg(tmp.path().join("log"))
        .arg("--pin-dir")
        .arg(PathBuf::from("/sys/fs/bpf").join(unique("oe-ctf")))
        .arg("--metrics-addr")
        .arg("127.0.0.1:0")
        .stdin(Stdio::null())
        .output()
        .expect("run ollama-egress");
    assert!(!out.status.success(), "run {args:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_docker_container_is_found_enforced_named_and_picked_automatically() {
    require_root();
    let mut engine = Engine::start();
    let image = format!("{}:1", unique("oe-ollama-bb"));
    engine.import_busybox(&image);
    let name = unique("oe-ct");
    let id = engine.run(&name, &image);
    let sock = engine.socket_arg();

    // Without enforcement the container's namespace has no route: the kernel says so.
    let before = engine.nc(&name, "198.51.100.1", "80");
    assert!(before.contains("Network is unreachable"), "{before}");

    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write_policy(dir.path(), POLICY);
    let policy = policy.display().to_string();
    let mut daemon = Daemon::start(&[
        "--enforce",
        "--container",
        &name,
        "--engine-socket",
        &sock,
        "--policy",
        &policy,
    ]);
    let state = ollama_egress::daemon::DaemonState::read(&daemon.log_dir)
        .expect("state")
        .expect("state file");
    assert_eq!(state.target, format!("container {name} ({})", &id[..12]));
    assert!(
        state.cgroup.ends_with(format!("docker/{id}")),
        "{}",
        state.cgroup.display()
    );

    let denied = engine.nc(&name, "198.51.100.1", "80");
    assert!(denied.contains("Operation not permitted"), "{denied}");
    let allowed = engine.nc(&name, "127.0.0.1", "9");
    assert!(allowed.contains("Connection refused"), "{allowed}");
    let blocked = daemon.wait_events(1, |e| {
        e["verdict"] == "blocked" && e["dst"] == "198.51.100.1"
    });
    assert_eq!(blocked.len(), 1, "{:?}", daemon.events());
    assert_eq!(blocked[0]["container"], name.as_str(), "{}", blocked[0]);
    let ok = daemon.wait_events(1, |e| e["verdict"] == "allowed" && e["dst"] == "127.0.0.1");
    assert_eq!(ok.len(), 1, "{:?}", daemon.events());
    assert_eq!(ok[0]["container"], name.as_str(), "{}", ok[0]);

    let status = Command::new(daemon_bin())
        .args(["status", "--log-dir"])
        .arg(&daemon.log_dir)
        .arg("--pin-dir")
        .arg(&daemon.pin_dir)
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains(&format!("target:    container {name} ({})", &id[..12])),
        "{text}"
    );
    assert!(daemon.stop(), "{}", daemon.stderr_text());
    drop(daemon);

    // No target option: no ollama.service here, so the container of the image named
    // *ollama* is picked, and the log says why.
    let auto = Daemon::start(&["--monitor", "--engine-socket", &sock]);
    let state = ollama_egress::daemon::DaemonState::read(&auto.log_dir)
        .expect("state")
        .expect("state file");
    assert_eq!(
        state.target,
        format!("container {name} ({})", &id[..12]),
        "{}",
        auto.stderr_text()
    );
    assert!(
        auto.stderr_text()
            .contains(&format!("picked container {name}")),
        "{}",
        auto.stderr_text()
    );
    engine.nc(&name, "198.51.100.1", "80");
    let seen = auto.wait_events(1, |e| {
        e["verdict"] == "would_block" && e["dst"] == "198.51.100.1"
    });
    assert_eq!(seen.len(), 1, "{:?}", auto.events());
    assert_eq!(seen[0]["container"], name.as_str());
    drop(auto);

    // The errors a user meets, each naming what to do.
    let err = run_fails(&[
        "--monitor",
        "--container",
        "oe-no-such",
        "--engine-socket",
        &sock,
    ]);
    assert!(err.contains("no container oe-no-such at"), "{err}");
    let stopped = unique("oe-ct-stopped");
    engine.containers.push(stopped.clone());
    engine.docker_ok(&["create", "--name", &stopped, &image, "/bin/busybox", "true"]);
    let err = run_fails(&[
        "--monitor",
        "--container",
        &stopped,
        "--engine-socket",
        &sock,
    ]);
    assert!(err.contains("is not running (it is created)"), "{err}");
    assert!(err.contains("docker start"), "{err}");
    let gone = engine.tmp.path().join("gone.sock").display().to_string();
    let err = run_fails(&["--monitor", "--container", &name, "--engine-socket", &gone]);
    assert!(err.contains("no container engine socket at"), "{err}");
}
