//! `--pod-selector` on real cgroups laid out as kubelet lays them out (both cgroup drivers;
//! `cri-containerd-`, `crio-`, `docker-` scopes and cgroupfs' bare ids), made under the unified
//! mount by the test. There is no Kubernetes API server here: a small HTTP server on 127.0.0.1
//! serves pod lists built from the recorded `PodList` fixture (`--kube-api http://…` with the
//! hidden `--kube-insecure-http` test flag); the token is a file in a temporary service account
//! directory. Every cgroup made is removed on drop, also when an assertion fails.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use ollama_egress::targeting::{
    cgroup2_mount,
    kube::{
        QosClass, find_pod_cgroup,
        layout::{Driver, Runtime, container_dir_name, pod_cgroup_path},
        parse_proc_cgroup,
    },
};
use ollama_egress_tests::{
    Daemon, NetNs, daemon_bin, probe, probe_args, require_root, unique, with, write_policy,
};
use serde_json::Value;

const FIXTURE: &str =
    include_str!("../../ollama-egress/src/targeting/kube/pods/fixtures/node_pods.json");

const NODE: &str = "worker-1";
const SELECTOR: &str = "app.kubernetes.io/name=ollama,app.kubernetes.io/instance=llm";

const POLICY: &str = r#"
default = "allow"

[deny]
cidrs = ["203.0.113.0/24"]
"#;

/// A pod uid and a container id unique to this process and call.
fn ids() -> (String, String) {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let p = std::process::id();
    (
        format!(
            "{p:08x}-{n:04x}-4abc-8def-{:012x}",
            u64::from(p) * 7 + u64::from(n)
        ),
        format!("{p:08x}{n:08x}{:048x}", 0xfeed_u64 + u64::from(n)),
    )
}

/// Directories made under the cgroup v2 mount, removed (deepest first) on drop.
struct Tree {
    mount: PathBuf,
    made: Vec<PathBuf>,
}

impl Tree {
    fn new() -> Self {
        Self {
            mount: cgroup2_mount().expect("cgroup v2 mount"),
            made: Vec::new(),
        }
    }

    /// Makes `rel` and its missing parents; returns the absolute path.
    fn make(&mut self, rel: &Path) -> PathBuf {
        let mut p = self.mount.clone();
        for c in rel.components() {
            p.push(c);
            if !p.exists() {
                fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
                self.made.push(p.clone());
            }
        }
        p
    }

    /// Removes `abs` now (it must be empty of processes).
    fn remove(&mut self, abs: &Path) {
        rmdir(abs);
        self.made.retain(|p| p != abs);
    }
}

fn rmdir(p: &Path) {
    for _ in 0..50 {
        match fs::remove_dir(p) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
    eprintln!("warning: could not remove cgroup {}", p.display());
}

impl Drop for Tree {
    fn drop(&mut self) {
        for p in self.made.iter().rev() {
            rmdir(p);
        }
    }
}

/// A `sleep` moved into a cgroup, killed on drop.
struct Sleeper(Child);

impl Sleeper {
    fn into(cgroup: &Path) -> Self {
        let child = Command::new("sleep")
            .arg("60")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        let s = Self(child);
        fs::write(cgroup.join("cgroup.procs"), format!("{}\n", s.0.id()))
            .unwrap_or_else(|e| panic!("moving sleep into {}: {e}", cgroup.display()));
        s
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn discovery_reads_pod_and_container_from_real_cgroups() {
    require_root();
    let cases = [
        (Driver::Systemd, QosClass::Burstable, Runtime::Containerd),
        (Driver::Systemd, QosClass::Guaranteed, Runtime::Crio),
        (Driver::Systemd, QosClass::BestEffort, Runtime::Docker),
        (Driver::Cgroupfs, QosClass::Burstable, Runtime::Unnamed),
        (Driver::Cgroupfs, QosClass::Guaranteed, Runtime::Unnamed),
        (Driver::Cgroupfs, QosClass::BestEffort, Runtime::Crio),
    ];
    for (driver, qos, runtime) in cases {
        let mut tree = Tree::new();
        let (uid, cid) = ids();
        let pod_rel = pod_cgroup_path(driver, &uid, qos);
        let pod = tree.make(&pod_rel);
        let scope = tree.make(&pod_rel.join(container_dir_name(driver, runtime, &cid)));
        let what = format!("{driver:?} {qos} {runtime:?}");
        let sleeper = Sleeper::into(&scope);
        let text = fs::read_to_string(format!("/proc/{}/cgroup", sleeper.0.id())).expect("read");
        let found = parse_proc_cgroup(&text).unwrap_or_else(|| panic!("{what}: {text}"));
        assert_eq!(found.uid, uid, "{what}");
        assert_eq!((found.driver, found.qos), (driver, qos), "{what}");
        let c = found
            .container
            .unwrap_or_else(|| panic!("{what}: no container in {text}"));
        assert_eq!(
            (c.runtime, c.id.as_str()),
            (runtime, cid.as_str()),
            "{what}"
        );
        assert_eq!(tree.mount.join(&found.path), pod, "{what}");
        assert_eq!(
            find_pod_cgroup(&tree.mount, &uid, qos),
            Some(pod.clone()),
            "{what}"
        );
        drop(sleeper);
    }
}

/// A recorded pod list's first pod as a template: a pod on `NODE` with the selector's labels.
fn pod_json(name: &str, uid: &str, phase: &str, qos: QosClass, deleting: bool) -> Value {
    let list: Value = serde_json::from_str(FIXTURE).expect("fixture");
    let mut p = list["items"][0].clone();
    p["metadata"]["name"] = name.into();
    p["metadata"]["uid"] = uid.into();
    p["spec"]["nodeName"] = NODE.into();
    p["status"]["phase"] = phase.into();
    p["status"]["qosClass"] = qos.to_string().into();
    if deleting {
        p["metadata"]["deletionTimestamp"] = "2026-12-01T10:00:00Z".into();
    }
    p
}

fn pod_list(items: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items
    }))
    .expect("json")
}

/// The stand-in API server: answers every request with the current status and body, and
/// keeps each request's line and Authorization header.
struct FakeApi {
    url: String,
    answer: Arc<Mutex<(u16, Vec<u8>)>>,
    requests: Arc<Mutex<Vec<(String, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FakeApi {
    fn start(status: u16, body: Vec<u8>) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", l.local_addr().expect("addr"));
        let answer = Arc::new(Mutex::new((status, body)));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (answer, requests, stop) = (answer.clone(), requests.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((s, _)) => serve_one(s, &answer, &requests),
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Self {
            url,
            answer,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn set(&self, status: u16, body: Vec<u8>) {
        *self.answer.lock().expect("lock") = (status, body);
    }

    fn requests(&self) -> Vec<(String, String)> {
        self.requests.lock().expect("lock").clone()
    }
}

fn serve_one(
    mut s: TcpStream,
    answer: &Mutex<(u16, Vec<u8>)>,
    requests: &Mutex<Vec<(String, String)>>,
) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let line = head.lines().next().unwrap_or_default().to_owned();
    let auth = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("authorization")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    requests.lock().expect("lock").push((line, auth));
    let (status, body) = answer.lock().expect("lock").clone();
    let _ = write!(
        s,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(&body);
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A service account directory with a token.
fn service_account(token: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    fs::write(d.path().join("token"), token).expect("token");
    d
}

fn kube_args(api: &FakeApi, sa: &Path, policy: &Path, mode: &str) -> Vec<String> {
    [
        mode,
        "--pod-selector",
        SELECTOR,
        "--node-name",
        NODE,
        "--kube-api",
        &api.url,
        "--kube-insecure-http",
        "--kube-service-account",
        &sa.display().to_string(),
        "--policy",
        &policy.display().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Polls `f` every 5 ms for up to `limit`; returns how long it took to hold.
fn within(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        thread::sleep(Duration::from_millis(5));
    }
    None
}

#[test]
fn enforces_on_the_pod_through_container_restarts_and_pod_replacement() {
    require_root();
    let ns = NetNs::new("oe-kube", &["203.0.113.7/32", "198.51.100.1/32"]);
    let listen = ["203.0.113.7:8080", "198.51.100.1:8080"];
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = write_policy(tmp.path(), POLICY);
    let sa = service_account("token-one");
    let mut tree = Tree::new();

    // The first pod, systemd driver, burstable, containerd.
    let (uid1, cid1) = ids();
    let pod1_rel = pod_cgroup_path(Driver::Systemd, &uid1, QosClass::Burstable);
    let pod1 = tree.make(&pod1_rel);
    let scope1 = tree.make(&pod1_rel.join(container_dir_name(
        Driver::Systemd,
        Runtime::Containerd,
        &cid1,
    )));
    let api = FakeApi::start(
        200,
        pod_list(vec![pod_json(
            "ollama-a",
            &uid1,
            "Running",
            QosClass::Burstable,
            false,
        )]),
    );
    let args = kube_args(&api, sa.path(), &policy, "--enforce");
    let mut d = Daemon::start(&strs(&args));
    let st = d.state();
    assert_eq!(st.cgroup, pod1, "the pod-level cgroup is the target");
    assert!(
        st.target.starts_with("pod ai/ollama-a (uid "),
        "{}",
        st.target
    );
    let (line, auth) = api.requests().first().cloned().expect("a request");
    assert!(
        line.starts_with("GET /api/v1/pods?labelSelector="),
        "{line}"
    );
    assert!(
        line.contains("fieldSelector=spec.nodeName%3Dworker-1"),
        "{line}"
    );
    assert_eq!(auth, "Bearer token-one");

    let in_scope = |scope: &Path| probe_args(&ns, Some(scope), &listen);
    probe(&with(&in_scope(&scope1), &["tcp", "203.0.113.7:8080"]))
        .assert_eperm("denied connect from the container");
    probe(&with(&in_scope(&scope1), &["tcp", "198.51.100.1:8080"]))
        .assert_ok("allowed connect from the container");
    let evs = d.wait_events(1, |e| {
        e["verdict"] == "blocked" && e["dst"] == "203.0.113.7"
    });
    assert_eq!(
        evs.first().map(|e| e["container"].clone()),
        Some("ai/ollama-a".into())
    );

    // The container restarts: its scope goes and a new one is made inside the same pod.
    tree.remove(&scope1);
    let (_, cid2) = ids();
    let scope2 = tree.make(&pod1_rel.join(container_dir_name(
        Driver::Systemd,
        Runtime::Containerd,
        &cid2,
    )));
    probe(&with(&in_scope(&scope2), &["tcp", "203.0.113.7:8080"]))
        .assert_eperm("denied connect from the restarted container, its first");

    // The token rotates.
    fs::write(sa.path().join("token"), "token-two").expect("rotate");

    // The pod is replaced (a new uid; guaranteed now, cgroupfs naming is not mixed on one
    // node, so systemd again): the old one terminates and its cgroup goes, then the new one is
    // listed as Pending and kubelet makes its cgroup before any container.
    let (uid2, cid3) = ids();
    api.set(
        200,
        pod_list(vec![pod_json(
            "ollama-a",
            &uid1,
            "Running",
            QosClass::Burstable,
            true,
        )]),
    );
    tree.remove(&scope2);
    tree.remove(&pod1);
    let pod2_rel = pod_cgroup_path(Driver::Systemd, &uid2, QosClass::Guaranteed);
    api.set(
        200,
        pod_list(vec![
            pod_json("ollama-a", &uid1, "Running", QosClass::Burstable, true),
            pod_json("ollama-b", &uid2, "Pending", QosClass::Guaranteed, false),
        ]),
    );
    let made = Instant::now();
    let pod2 = tree.make(&pod2_rel);
    let took = within(Duration::from_secs(15), || d.state().cgroup == pod2);
    let took = took.unwrap_or_else(|| {
        panic!(
            "not re-targeted to the new pod within 15 s:\n{}",
            d.stderr_text()
        )
    });
    eprintln!(
        "re-targeted {} ms after the new pod cgroup was made ({} ms by the state file)",
        made.elapsed().as_millis(),
        took.as_millis()
    );
    let st = d.state();
    assert!(
        st.target.starts_with("pod ai/ollama-b (uid "),
        "{}",
        st.target
    );
    assert!(st.target.ends_with("Guaranteed)"), "{}", st.target);
    let scope3 = tree.make(&pod2_rel.join(container_dir_name(
        Driver::Systemd,
        Runtime::Containerd,
        &cid3,
    )));
    probe(&with(&in_scope(&scope3), &["tcp", "203.0.113.7:8080"]))
        .assert_eperm("denied connect from the replacement pod's container, its first");
    probe(&with(&in_scope(&scope3), &["tcp", "198.51.100.1:8080"]))
        .assert_ok("allowed connect from the replacement pod");
    let evs = d.wait_events(1, |e| {
        e["container"] == "ai/ollama-b" && e["verdict"] == "blocked"
    });
    assert_eq!(evs.len(), 1, "events name the new pod: {:?}", d.events());
    assert!(
        api.requests().iter().any(|(_, a)| a == "Bearer token-two"),
        "the rotated token is sent: {:?}",
        api.requests()
    );
    // The kernel lists the programs on the new pod's cgroup (and status says so).
    let out = Command::new(daemon_bin())
        .args(["status", "--log-dir"])
        .arg(&d.log_dir)
        .arg("--pin-dir")
        .arg(&d.pin_dir)
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("pod ai/ollama-b"), "{text}");
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d.stop(), "{}", d.stderr_text());
}

/// A child process killed (if still running) and reaped on drop.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `run ARGS` to its exit (at most 20 s); its status and stderr.
fn run_to_exit(args: &[String]) -> (std::process::ExitStatus, String) {
    let log = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(daemon_bin())
        .arg("run")
        .args(args)
        .arg("--log-dir")
        .arg(log.path())
        .arg("--pin-dir")
        .arg(PathBuf::from("/sys/fs/bpf").join(unique("oe-kube")))
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env_remove("NODE_NAME")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return (status, err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("run {args:?} did not exit within 20 s");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn refuses_several_pods_a_forbidden_list_and_no_node_name() {
    require_root();
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = write_policy(tmp.path(), POLICY);
    let sa = service_account("t");
    let mut tree = Tree::new();
    let (uid1, _) = ids();
    let (uid2, _) = ids();
    tree.make(&pod_cgroup_path(
        Driver::Cgroupfs,
        &uid1,
        QosClass::Burstable,
    ));
    tree.make(&pod_cgroup_path(
        Driver::Cgroupfs,
        &uid2,
        QosClass::BestEffort,
    ));
    let mut other = pod_json("ollama-b", &uid2, "Running", QosClass::BestEffort, false);
    other["metadata"]["namespace"] = "other".into();
    let both = pod_list(vec![
        pod_json("ollama-a", &uid1, "Running", QosClass::Burstable, false),
        other,
    ]);
    let api = FakeApi::start(200, both);
    let args = kube_args(&api, sa.path(), &policy, "--monitor");
    let (status, err) = run_to_exit(&args);
    assert!(!status.success(), "{err}");
    assert!(err.contains("2 running pods on node worker-1"), "{err}");
    assert!(err.contains("ai/ollama-a, other/ollama-b"), "{err}");
    assert!(err.contains("narrow the selector"), "{err}");

    // --pod-namespace: the namespace's own list, and a pod of another namespace labelled alike
    // is no candidate even when the answer holds it.
    let mut ns_args = args.clone();
    ns_args.extend(["--pod-namespace".to_owned(), "ai".to_owned()]);
    let mut d = Daemon::start(&strs(&ns_args));
    assert_eq!(
        d.state().cgroup,
        tree.mount.join(pod_cgroup_path(
            Driver::Cgroupfs,
            &uid1,
            QosClass::Burstable
        ))
    );
    let (line, _) = api.requests().last().cloned().expect("a request");
    assert!(
        line.starts_with("GET /api/v1/namespaces/ai/pods?"),
        "{line}"
    );
    assert!(d.stop(), "{}", d.stderr_text());
    drop(d);

    let forbidden = fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../ollama-egress/src/targeting/kube/pods/fixtures/forbidden.json"),
    )
    .expect("fixture");
    api.set(403, forbidden);
    let (status, err) = run_to_exit(&args);
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("HTTP 403") && err.contains("grant list/watch on pods"),
        "{err}"
    );

    api.set(200, b"{\"kind\":\"PodList\",\"items\":[".to_vec());
    let (status, err) = run_to_exit(&args);
    assert!(!status.success(), "{err}");
    assert!(err.contains("not a pod list"), "{err}");

    let no_node: Vec<String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            *a != "--node-name"
                && args
                    .get(i.wrapping_sub(1))
                    .is_none_or(|p| p != "--node-name")
        })
        .map(|(_, a)| a.clone())
        .collect();
    let (status, err) = run_to_exit(&no_node);
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("--node-name") && err.contains("NODE_NAME"),
        "{err}"
    );
}

#[test]
fn waits_for_a_pod_and_stops_while_waiting() {
    require_root();
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = write_policy(tmp.path(), POLICY);
    let sa = service_account("t");
    let mut tree = Tree::new();
    let api = FakeApi::start(200, pod_list(vec![]));
    let args = kube_args(&api, sa.path(), &policy, "--monitor");

    // No pod: it waits (and a SIGTERM ends the wait cleanly).
    let log = tempfile::tempdir().expect("tempdir");
    let stderr = log.path().join("stderr");
    let mut child = Reap(
        Command::new(daemon_bin())
            .arg("run")
            .args(&args)
            .arg("--log-dir")
            .arg(log.path().join("log"))
            .arg("--pin-dir")
            .arg(PathBuf::from("/sys/fs/bpf").join(unique("oe-kube")))
            .args(["--metrics-addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).expect("stderr"))
            .spawn()
            .expect("spawn"),
    );
    let waiting = within(Duration::from_secs(15), || {
        fs::read_to_string(&stderr).is_ok_and(|t| t.contains("waiting for one"))
    });
    let text = fs::read_to_string(&stderr).unwrap_or_default();
    assert!(waiting.is_some(), "no waiting message:\n{text}");
    assert!(
        child.0.try_wait().expect("wait").is_none(),
        "it exited:\n{text}"
    );
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.0.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill");
    let stopped = within(Duration::from_secs(10), || {
        child.0.try_wait().ok().flatten().is_some()
    });
    assert!(stopped.is_some(), "SIGTERM did not end the wait");
    let status = child.0.wait().expect("wait");
    assert!(
        status.success(),
        "SIGTERM while waiting ends it cleanly: {status}"
    );

    // No pod, then one appears (listed, then its cgroup made): the daemon attaches to it.
    let (uid, _) = ids();
    let rel = pod_cgroup_path(Driver::Cgroupfs, &uid, QosClass::BestEffort);
    let mount = tree.mount.clone();
    // While the daemon waits in `Daemon::start`: the API lists the pod (pending), then kubelet
    // makes its cgroup. What the thread makes is handed to the tree for removal.
    let appear = {
        let answer = api.answer.clone();
        let (mount, rel) = (mount.clone(), rel.clone());
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(1500));
            *answer.lock().expect("lock") = (
                200,
                pod_list(vec![pod_json(
                    "ollama-c",
                    &uid,
                    "Pending",
                    QosClass::BestEffort,
                    false,
                )]),
            );
            thread::sleep(Duration::from_millis(500));
            let mut p = mount;
            let mut new = Vec::new();
            for c in rel.components() {
                p.push(c);
                if !p.exists() && fs::create_dir(&p).is_ok() {
                    new.push(p.clone());
                }
            }
            new
        })
    };
    let started = std::panic::catch_unwind(|| Daemon::start(&strs(&args)));
    tree.made.extend(appear.join().expect("the pod's cgroup"));
    let d = started.unwrap_or_else(|e| std::panic::resume_unwind(e));
    assert_eq!(d.state().cgroup, mount.join(&rel));
    let text = d.stderr_text();
    assert!(text.contains("waiting for one"), "{text}");
    assert!(
        d.state().target.starts_with("pod ai/ollama-c"),
        "{}",
        d.state().target
    );
}
