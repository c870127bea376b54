use std::{
    io::{BufRead, BufReader},
    os::unix::net::UnixListener,
    thread,
};

use super::*;

const ID: &str = "4f66ad9a0b2e1c5c8a1d9b0e7f3a2c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b";

fn mount() -> PathBuf {
    PathBuf::from("/sys/fs/cgroup/unified")
}

#[test]
fn cgroupfs_driver_docker_path() {
    let text = format!("0::/docker/{ID}\n");
    assert_eq!(
        cgroup_dir(&text, &mount(), ID),
        Ok(mount().join(format!("docker/{ID}")))
    );
}

#[test]
fn systemd_driver_docker_scope() {
    let text = format!("0::/system.slice/docker-{ID}.scope\n");
    assert_eq!(
        cgroup_dir(&text, Path::new("/sys/fs/cgroup"), ID),
        Ok(PathBuf::from(format!(
            "/sys/fs/cgroup/system.slice/docker-{ID}.scope"
        )))
    );
}

#[test]
fn kubelet_layouts() {
    let pod = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice";
    for scope in [
        format!("cri-containerd-{ID}.scope"),
        format!("crio-{ID}.scope"),
        format!("docker-{ID}.scope"),
    ] {
        let text = format!("0::/{pod}/{scope}\n");
        assert_eq!(
            cgroup_dir(&text, Path::new("/sys/fs/cgroup"), ID),
            Ok(PathBuf::from(format!("/sys/fs/cgroup/{pod}/{scope}"))),
            "{scope}"
        );
    }
    // The cgroupfs driver of kubelet: kubepods/<qos>/pod<uid>/<id>.
    let text = format!("0::/kubepods/besteffort/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/{ID}\n");
    assert_eq!(
        cgroup_dir(&text, Path::new("/sys/fs/cgroup"), ID),
        Ok(PathBuf::from(format!(
            "/sys/fs/cgroup/kubepods/besteffort/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/{ID}"
        )))
    );
}

#[test]
fn podman_libpod_scope() {
    let text = format!("0::/machine.slice/libpod-{ID}.scope\n");
    assert_eq!(
        cgroup_dir(&text, Path::new("/sys/fs/cgroup"), ID),
        Ok(PathBuf::from(format!(
            "/sys/fs/cgroup/machine.slice/libpod-{ID}.scope"
        )))
    );
}

#[test]
fn hybrid_picks_the_unified_line_among_v1_lines() {
    let text = format!(
        "12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n4:cpu,cpuacct:/docker/{ID}\n\
1:name=systemd:/docker/{ID}\n0::/docker/{ID}\n"
    );
    assert_eq!(
        cgroup_dir(&text, &mount(), ID),
        Ok(mount().join(format!("docker/{ID}")))
    );
}

#[test]
fn no_own_v2_cgroup_is_refused_with_the_path_found() {
    // An engine that puts containers only in v1 hierarchies: the v2 path is the engine's own.
    let text = format!(
        "12:pids:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/system.slice/containerd.service\n"
    );
    assert_eq!(
        cgroup_dir(&text, &mount(), ID),
        Err("/system.slice/containerd.service".to_owned())
    );
    // Only v1 lines.
    assert_eq!(
        cgroup_dir(&format!("12:pids:/docker/{ID}\n"), &mount(), ID),
        Err(String::new())
    );
    // The root, as seen from inside a cgroup namespace.
    assert_eq!(cgroup_dir("0::/\n", &mount(), ID), Err("/".to_owned()));
    // No escaping the mount.
    assert_eq!(
        cgroup_dir(&format!("0::/../docker-{ID}.scope\n"), &mount(), ID),
        Err(format!("/../docker-{ID}.scope"))
    );
    // An empty id matches nothing.
    assert!(cgroup_dir(&format!("0::/docker/{ID}\n"), &mount(), "").is_err());
}

const RUNNING: &str = r#"{"Id":"4f66ad9a0b2e1c5c8a1d9b0e7f3a2c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b","Created":"2026-11-30T10:00:00Z","Path":"/bin/ollama","Args":["serve"],"State":{"Status":"running","Running":true,"Paused":false,"Restarting":false,"OOMKilled":false,"Dead":false,"Pid":31337,"ExitCode":0,"Error":"","StartedAt":"2026-11-30T10:00:01Z","FinishedAt":"0001-01-01T00:00:00Z"},"Image":"sha256:0123","Name":"/ollama","RestartCount":0,"Driver":"overlay2","HostConfig":{"NetworkMode":"bridge","CgroupParent":""},"Config":{"Hostname":"4f66ad9a0b2e","Image":"ollama/ollama:latest","Env":["PATH=/usr/bin"]}}"#;

const STOPPED: &str = r#"{"Id":"9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a","State":{"Status":"exited","Running":false,"Paused":false,"Pid":0,"ExitCode":137},"Name":"/old-ollama","Config":{"Image":"ollama/ollama:0.5"}}"#;

#[test]
fn parses_a_running_container() {
    let c = parse_inspect(RUNNING).expect("parses");
    assert_eq!(c.name, "ollama");
    assert_eq!(c.id, ID);
    assert_eq!(c.image, "ollama/ollama:latest");
    assert!(c.running);
    assert_eq!(c.pid, 31337);
    assert_eq!(c.status, "running");
    assert_eq!(c.short_id(), "4f66ad9a0b2e");
    assert_eq!(c.describe(), "container ollama (4f66ad9a0b2e)");
}

#[test]
fn parses_a_stopped_container() {
    let c = parse_inspect(STOPPED).expect("parses");
    assert_eq!(c.name, "old-ollama");
    assert!(!c.running);
    assert_eq!(c.pid, 0);
    assert_eq!(c.status, "exited");
}

#[test]
fn refuses_malformed_inspect_json() {
    assert!(parse_inspect("{}").is_err());
    assert!(parse_inspect(r#"{"Id":"x","State":{"Pid":-1}}"#).is_err());
    assert!(parse_inspect("not json").is_err());
}

#[test]
fn parses_the_container_list() {
    let json = r#"[{"Id":"aaa","Names":["/ollama-gpu"],"Image":"ollama/ollama:rocm","State":"running","Status":"Up 2 hours"},{"Id":"bbb","Names":["/web"],"Image":"nginx","State":"running"}]"#;
    let list = parse_list(json).expect("parses");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].name, "ollama-gpu");
    assert_eq!(list[0].image, "ollama/ollama:rocm");
    assert_eq!(list[1].name, "web");
}

#[test]
fn names_that_cannot_go_in_a_path_are_refused() {
    assert!(valid_name("ollama"));
    assert!(valid_name("my_ollama.1-a"));
    assert!(valid_name(ID));
    for bad in [
        "",
        "/ollama",
        "../x",
        "a/b",
        "a b",
        "a?x=1",
        "-x",
        "a\r\nHost: x",
    ] {
        assert!(!valid_name(bad), "{bad:?}");
    }
    let err =
        find_container(Some(Path::new("/nonexistent")), "a/../b", &mount()).expect_err("refused");
    assert!(matches!(err, ContainerError::BadName { .. }), "{err}");
}

#[test]
fn parses_plain_and_chunked_answers() {
    let plain = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    assert_eq!(parse_response(plain), Ok((200, "{}".to_owned())));
    let chunked = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"mes\r\n8;x=y\r\nsage\":1}\r\n0\r\n\r\n";
    assert_eq!(
        parse_response(chunked),
        Ok((404, "{\"message\":1}".to_owned()))
    );
    assert!(parse_response(b"SSH-2.0-x\r\n\r\n").is_err());
    assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2").is_err());
    assert!(
        parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab").is_err()
    );
}

/// An engine socket that answers one request with `answer`; returns the socket path (in a
/// temporary directory kept alive by the returned guard) and the request it received.
fn fake_engine(answer: String) -> (tempfile::TempDir, PathBuf, thread::JoinHandle<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("engine.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(stream);
        let mut request = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).expect("read") == 0 || line == "\r\n" {
                break;
            }
            request.push_str(&line);
        }
        reader
            .get_mut()
            .write_all(answer.as_bytes())
            .expect("write");
        request
    });
    (dir, path, handle)
}

fn http(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn no_such_container_names_the_socket() {
    let (_dir, sock, h) = fake_engine(http(
        "404 Not Found",
        r#"{"message":"No such container: nope"}"#,
    ));
    let err = find_container(Some(&sock), "nope", &mount()).expect_err("refused");
    let request = h.join().expect("engine");
    assert!(
        request.starts_with("GET /containers/nope/json HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        matches!(err, ContainerError::NoSuchContainer { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("no container nope at"), "{text}");
    assert!(text.contains("docker ps -a"), "{text}");
}

#[test]
fn a_stopped_container_is_refused() {
    let (_dir, sock, h) = fake_engine(http("200 OK", STOPPED));
    let err = find_container(Some(&sock), "old-ollama", &mount()).expect_err("refused");
    h.join().expect("engine");
    assert!(matches!(err, ContainerError::NotRunning { .. }), "{err}");
    assert!(
        err.to_string().contains("is not running (it is exited)"),
        "{err}"
    );
}

#[test]
fn a_container_without_its_own_v2_cgroup_is_refused() {
    // A "running container" whose init process is this test: its cgroup is not the container's.
    let json = RUNNING.replace("31337", &std::process::id().to_string());
    let (_dir, sock, h) = fake_engine(http("200 OK", &json));
    let err = find_container(Some(&sock), "ollama", &mount()).expect_err("refused");
    h.join().expect("engine");
    assert!(matches!(err, ContainerError::NoCgroup2Path { .. }), "{err}");
    assert!(err.to_string().contains("--process NAME"), "{err}");
}

#[test]
fn an_engine_error_is_reported() {
    let (_dir, sock, h) = fake_engine(http("500 Internal Server Error", r#"{"message":"boom"}"#));
    let err = find_container(Some(&sock), "ollama", &mount()).expect_err("refused");
    h.join().expect("engine");
    assert!(err.to_string().contains("HTTP status 500"), "{err}");
}

#[test]
fn a_missing_socket_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("none.sock");
    let err = find_container(Some(&sock), "ollama", &mount()).expect_err("refused");
    assert!(matches!(err, ContainerError::NoEngine { .. }), "{err}");
    assert!(err.to_string().contains("none.sock"), "{err}");
    // A path that exists but where no engine listens.
    let err = find_container(Some(dir.path()), "ollama", &mount()).expect_err("refused");
    assert!(matches!(err, ContainerError::Engine { .. }), "{err}");
    assert!(err.to_string().contains("connecting"), "{err}");
}

#[test]
fn running_containers_are_listed() {
    let (_dir, sock, h) = fake_engine(http(
        "200 OK",
        r#"[{"Id":"aaa","Names":["/ollama"],"Image":"ollama/ollama","State":"running"}]"#,
    ));
    let list = running_containers(Some(&sock));
    let request = h.join().expect("engine");
    assert!(
        request.starts_with("GET /containers/json HTTP/1.1\r\n"),
        "{request}"
    );
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "ollama");
}
