use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixListener,
    thread,
};

use super::*;
use crate::targeting::containers::ContainerInfo;

const OLD: &str = "4f66ad9a0b2e1c5c8a1d9b0e7f3a2c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b";
const NEW: &str = "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";

/// An engine that answers each request in turn with the next of `answers`; the requests' first
/// lines come back from the handle.
fn fake_engine(
    answers: Vec<String>,
) -> (tempfile::TempDir, PathBuf, thread::JoinHandle<Vec<String>>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("engine.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let handle = thread::spawn(move || {
        let mut seen = Vec::new();
        for answer in answers {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream);
            let mut first = String::new();
            reader.read_line(&mut first).expect("read");
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).expect("read") == 0 || line == "\r\n" {
                    break;
                }
            }
            reader
                .get_mut()
                .write_all(answer.as_bytes())
                .expect("write");
            seen.push(first.trim().to_owned());
        }
        seen
    });
    (dir, path, handle)
}

fn http(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn listed(id: &str, name: &str, state: &str) -> String {
    format!(r#"[{{"Id":"{id}","Names":["/{name}"],"Image":"ollama/ollama","State":"{state}"}}]"#)
}

fn follow(socket: &Path) -> ContainerFollow {
    ContainerFollow::new(&ContainerTarget {
        info: ContainerInfo {
            name: "ollama".into(),
            id: OLD.into(),
            image: "ollama/ollama".into(),
            running: true,
            status: "running".into(),
            pid: 1,
        },
        cgroup: PathBuf::from(format!("/sys/fs/cgroup/unified/docker/{OLD}")),
        socket: socket.to_owned(),
    })
}

#[test]
fn ids_of_the_engines_directory_names() {
    assert_eq!(id_of_dir(OLD), Some(OLD));
    assert_eq!(id_of_dir(&format!("docker-{OLD}.scope")), Some(OLD));
    assert_eq!(id_of_dir(&format!("libpod-{OLD}.scope")), Some(OLD));
    assert_eq!(id_of_dir(&format!("cri-containerd-{OLD}.scope")), Some(OLD));
    assert_eq!(id_of_dir(&format!("crio-{OLD}.scope")), Some(OLD));
    assert_eq!(id_of_dir("ollama.service"), None);
    assert_eq!(id_of_dir(&OLD[..63]), None);
    assert_eq!(id_of_dir(&OLD.to_uppercase()), None);
    assert_eq!(id_of_dir(&format!("docker-{OLD}.scope.d")), None);
}

#[test]
fn the_filter_is_percent_encoded() {
    assert_eq!(
        filter_path("id", "ab"),
        "/containers/json?all=1&filters=%7B%22id%22%3A%5B%22ab%22%5D%7D"
    );
    assert_eq!(
        filter_path("name", "^/o.x$"),
        "/containers/json?all=1&filters=%7B%22name%22%3A%5B%22%5E%2Fo.x%24%22%5D%7D"
    );
}

#[test]
fn only_other_ids_are_candidates() {
    let f = follow(Path::new("/nonexistent"));
    let created: Vec<OsString> = [OLD, NEW, "init.scope", "x"]
        .iter()
        .map(OsString::from)
        .collect();
    assert_eq!(f.candidates(&created), vec![OsString::from(NEW)]);
}

#[test]
fn a_new_directory_of_the_same_name_is_the_container_re_created() {
    let (_dir, sock, engine) = fake_engine(vec![http(&listed(NEW, "ollama", "created"))]);
    let f = follow(&sock);
    let parent = Path::new("/sys/fs/cgroup/unified/docker");
    let found = f
        .identify(parent, &[OsString::from(NEW)])
        .expect("engine answers");
    assert_eq!(
        found,
        Some(Recreated {
            id: NEW.into(),
            cgroup: parent.join(NEW),
        })
    );
    let requests = engine.join().expect("engine");
    assert_eq!(
        requests,
        vec![format!("GET {} HTTP/1.1", filter_path("id", NEW))]
    );
}

#[test]
fn another_containers_directory_is_not_followed() {
    let (_dir, sock, engine) = fake_engine(vec![http(&listed(NEW, "other", "created"))]);
    let found = follow(&sock)
        .identify(Path::new("/p"), &[OsString::from(NEW)])
        .expect("engine answers");
    assert_eq!(found, None);
    engine.join().expect("engine");
}

#[test]
fn an_engine_error_is_named() {
    let (_dir, sock, engine) = fake_engine(vec![
        "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nboom".to_owned(),
    ]);
    let err = follow(&sock)
        .identify(Path::new("/p"), &[OsString::from(NEW)])
        .expect_err("a 500 is an error");
    assert!(err.to_string().contains("HTTP status 500: boom"), "{err}");
    engine.join().expect("engine");
}

#[test]
fn the_backstop_finds_the_new_id_and_its_directory() {
    let parent = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(parent.path().join(format!("docker-{NEW}.scope"))).expect("mkdir");
    let (_dir, sock, engine) = fake_engine(vec![
        http(&listed(NEW, "ollama", "running")),
        http(&listed(OLD, "ollama", "exited")),
    ]);
    let mut f = follow(&sock);
    let found = f.look_up(parent.path()).expect("engine answers");
    assert_eq!(
        found,
        Some(Recreated {
            id: NEW.into(),
            cgroup: parent.path().join(format!("docker-{NEW}.scope")),
        })
    );
    f.moved_to(NEW.into());
    assert_eq!(f.describe(), format!("container ollama ({})", &NEW[..12]));
    // The engine still names the id followed: nothing to move to.
    f.moved_to(OLD.into());
    assert_eq!(f.look_up(parent.path()).expect("engine answers"), None);
    let requests = engine.join().expect("engine");
    assert_eq!(
        requests[0],
        format!("GET {} HTTP/1.1", filter_path("name", "^/ollama$"))
    );
}
