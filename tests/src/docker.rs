//! A private Docker engine (Debian's `docker.io`) for the container tests: its own `dockerd`
//! (no iptables, no bridge, data and exec roots and API socket in a temporary directory), one
//! per test binary and shared by its tests, stopped by pid when the binary exits; an image
//! imported from a tarball holding `busybox-static`; containers removed on drop; a veth from a
//! container's network namespace (`--network none`) to a namespace of the test (the listeners
//! there are `listener.rs`'s).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Mutex, MutexGuard, OnceLock, PoisonError},
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::{NetNs, unique};

/// Debian's `dockerd`.
pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// Debian's `docker` client.
pub const DOCKER: &str = "/usr/bin/docker";
/// `busybox-static`, the one file of the test image.
pub const BUSYBOX: &str = "/bin/busybox";

/// A private Docker engine.
pub struct Engine {
    dockerd: Option<Child>,
    /// Its temporary directory (data and exec roots, socket, log).
    pub tmp: tempfile::TempDir,
    socket: PathBuf,
    /// The engine's `docker` cgroup directories that did not exist before it started.
    new_cgroups: Vec<PathBuf>,
    image: Option<String>,
}

static SHARED: OnceLock<Mutex<Option<Engine>>> = OnceLock::new();

extern "C" fn stop_shared() {
    if let Some(m) = SHARED.get() {
        drop(m.lock().unwrap_or_else(PoisonError::into_inner).take());
    }
}

/// The test binary's engine, started on first use and stopped when the binary exits; held by
/// one test at a time.
pub struct Shared(MutexGuard<'static, Option<Engine>>);

impl std::ops::Deref for Shared {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        self.0.as_ref().expect("the engine runs while the tests do")
    }
}

impl std::ops::DerefMut for Shared {
    fn deref_mut(&mut self) -> &mut Engine {
        self.0.as_mut().expect("the engine runs while the tests do")
    }
}

/// The engine this test binary shares.
pub fn engine() -> Shared {
    let m = SHARED.get_or_init(|| {
        // SAFETY: registers a plain function; it runs once at exit.
        let rc = unsafe { libc::atexit(stop_shared) };
        assert_eq!(rc, 0, "atexit");
        Mutex::new(None)
    });
    let mut guard = m.lock().unwrap_or_else(PoisonError::into_inner);
    if guard.is_none() {
        *guard = Some(Engine::start());
    }
    Shared(guard)
}

impl Engine {
    fn start() -> Self {
        for bin in [DOCKERD, DOCKER] {
            assert!(
                Path::new(bin).is_file(),
                "{bin} is missing: install Debian's docker.io (`apt-get install docker.io`, or `cargo xtask setup`)"
            );
        }
        assert!(
            Path::new(BUSYBOX).is_file(),
            "{BUSYBOX} is missing: install busybox-static (`cargo xtask setup`)"
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
            image: None,
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

    /// What dockerd logged.
    pub fn log(&self) -> String {
        fs::read_to_string(self.tmp.path().join("dockerd.log")).unwrap_or_default()
    }

    /// Runs `docker ARGS` against this engine.
    pub fn docker(&self, args: &[&str]) -> Output {
        docker(&self.socket, args)
    }

    /// Runs `docker ARGS`; panics with its stderr unless it succeeds; its stdout.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The image of this engine: busybox at /bin/busybox, named `*ollama*` (imported once).
    pub fn image(&mut self) -> String {
        if let Some(i) = &self.image {
            return i.clone();
        }
        let image = format!("{}:1", unique("oe-ollama-bb"));
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
        self.docker_ok(&["import", &tar.display().to_string(), &image]);
        self.image = Some(image.clone());
        image
    }

    /// `docker run -d --network none --name NAME OPTS IMAGE CMD…`; the container is removed
    /// when the guard drops.
    pub fn run(&mut self, name: &str, opts: &[&str], cmd: &[&str]) -> Container {
        let image = self.image();
        let guard = self.guard(name);
        let mut args = vec!["run", "-d", "--network", "none", "--name", name];
        args.extend_from_slice(opts);
        args.push(&image);
        args.extend_from_slice(cmd);
        self.docker_ok(&args);
        guard
    }

    /// A guard that removes the container `name` (made by hand) on drop.
    pub fn guard(&self, name: &str) -> Container {
        Container {
            name: name.to_owned(),
            socket: self.socket.clone(),
        }
    }

    /// A container's field (`docker inspect -f '{{FIELD}}'`).
    pub fn inspect(&self, name: &str, field: &str) -> String {
        self.docker_ok(&["inspect", "-f", &format!("{{{{{field}}}}}"), name])
    }

    /// The container's init pid once it runs with a pid other than `not` (up to 30 s).
    pub fn wait_running(&self, name: &str, not: u32) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.docker(&["inspect", "-f", "{{.State.Running}} {{.State.Pid}}", name]);
            let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if let Some(pid) = text.strip_prefix("true ").and_then(|p| p.parse().ok())
                && pid != 0
                && pid != not
            {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "container {name} not running again after 30 s: {text}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `busybox nc -w 1 ADDR PORT` from inside the container, sending `data`; its stderr.
    pub fn nc(&self, name: &str, addr: &str, port: &str, data: &str) -> String {
        let script = format!("echo {data} | /bin/busybox nc -w 1 {addr} {port}");
        let out = self.docker(&["exec", name, "/bin/busybox", "sh", "-c", &script]);
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// The API socket, for `--engine-socket`.
    pub fn socket_arg(&self) -> String {
        self.socket.display().to_string()
    }
}

fn docker(socket: &Path, args: &[&str]) -> Output {
    Command::new(DOCKER)
        .arg("-H")
        .arg(format!("unix://{}", socket.display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run docker")
}

/// A container of the test, removed (`docker rm -f`) on drop.
pub struct Container {
    /// Its name.
    pub name: String,
    socket: PathBuf,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&self.socket, &["rm", "-f", &self.name]);
    }
}

/// The `docker` directories of the cgroup hierarchies (v1 and v2) that do not exist yet.
pub fn docker_cgroups() -> Vec<PathBuf> {
    cgroup_dirs("docker")
        .into_iter()
        .filter(|p| !p.exists())
        .collect()
}

/// `NAME` in every cgroup hierarchy mounted under /sys/fs/cgroup (v1 controllers and the
/// unified one), and /sys/fs/cgroup/NAME itself.
pub fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    fs::read_dir("/sys/fs/cgroup")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path().join(name))
                .chain([PathBuf::from("/sys/fs/cgroup").join(name)])
                .collect()
        })
        .unwrap_or_default()
}

impl Drop for Engine {
    fn drop(&mut self) {
        let containerd = fs::read_to_string(self.tmp.path().join("exec/containerd/containerd.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        let all = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&all.stdout).split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
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

/// A cgroup directory of that name in every hierarchy, removed on drop (the test's
/// `--cgroup-parent`: the engine makes it in the v1 hierarchies too on a hybrid host).
pub struct CgroupParent {
    /// The directory's name, under the roots of the hierarchies.
    pub name: String,
    /// The cgroup v2 directory.
    pub path: PathBuf,
}

impl CgroupParent {
    /// Makes the cgroup v2 directory `NAME` under the cgroup v2 root.
    pub fn new(prefix: &str) -> Self {
        let name = unique(prefix);
        let mount = ollama_egress::targeting::cgroup2_mount().expect("cgroup v2 mount");
        let path = mount.join(&name);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self { name, path }
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        for dir in cgroup_dirs(&self.name) {
            for _ in 0..50 {
                match fs::remove_dir(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        thread::sleep(Duration::from_millis(100));
                    }
                    _ => break,
                }
            }
        }
    }
}

/// Links a container's network namespace (its init `pid`) to `peer` with a new veth pair
/// (`oe-c<n>` inside, `oe-p<n>` in `peer`; numbered, a restarted container's old pair may not
/// be gone yet): 192.0.2.2/24 inside, 192.0.2.1/24 in `peer`, and routes to 198.51.100.0/24 and
/// 203.0.113.0/24 through it, all inside namespaces the test made or the container's own.
pub fn link_container(peer: &NetNs, pid: u32, n: u32) {
    let (inside, outside) = (format!("oe-c{n}"), format!("oe-p{n}"));
    let pid = pid.to_string();
    let ip_peer = |args: &[&str]| {
        let mut all = vec!["-n", peer.name.as_str()];
        all.extend_from_slice(args);
        cmd("ip", &all);
    };
    ip_peer(&[
        "link", "add", &outside, "type", "veth", "peer", "name", &inside,
    ]);
    ip_peer(&["link", "set", &inside, "netns", &pid]);
    ip_peer(&["addr", "add", "192.0.2.1/24", "dev", &outside]);
    ip_peer(&["link", "set", &outside, "up"]);
    let ip_in = |args: &[&str]| {
        let mut all = vec!["-t", pid.as_str(), "-n", "ip"];
        all.extend_from_slice(args);
        cmd("nsenter", &all);
    };
    ip_in(&["addr", "add", "192.0.2.2/24", "dev", &inside]);
    ip_in(&["link", "set", &inside, "up"]);
    ip_in(&["route", "add", "198.51.100.0/24", "via", "192.0.2.1"]);
    ip_in(&["route", "add", "203.0.113.0/24", "via", "192.0.2.1"]);
}

fn cmd(bin: &str, args: &[&str]) {
    let out = Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {bin} {args:?}: {e} (install iproute2, util-linux)"));
    assert!(
        out.status.success(),
        "{bin} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
