#![allow(clippy::unwrap_used)]

use std::{
    io::{Read, Write},
    net::TcpListener,
    sync::mpsc,
    thread,
};

use super::*;

fn spec(url: Option<&str>, insecure: bool, dir: &Path) -> ApiSpec {
    ApiSpec {
        url: url.map(str::to_owned),
        insecure_http: insecure,
        service_account: dir.to_owned(),
    }
}

fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |k| {
        pairs
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_owned())
    }
}

#[test]
fn in_cluster_url() {
    let d = Path::new("/nonexistent");
    let s = spec(None, false, d);
    assert_eq!(
        base_url(
            &s,
            env(&[
                ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
                ("KUBERNETES_SERVICE_PORT", "443")
            ])
        )
        .unwrap(),
        "https://10.96.0.1:443"
    );
    assert_eq!(
        base_url(
            &s,
            env(&[
                ("KUBERNETES_SERVICE_HOST", "fd00:10:96::1"),
                ("KUBERNETES_SERVICE_PORT", "443")
            ])
        )
        .unwrap(),
        "https://[fd00:10:96::1]:443"
    );
    assert!(matches!(
        base_url(&s, env(&[])),
        Err(KubeError::NotInCluster)
    ));
    assert!(matches!(
        base_url(&s, env(&[("KUBERNETES_SERVICE_HOST", "10.96.0.1")])),
        Err(KubeError::NotInCluster)
    ));
}

#[test]
fn explicit_urls() {
    let d = Path::new("/nonexistent");
    let none = env(&[]);
    assert_eq!(
        base_url(&spec(Some("https://api.example:6443/"), false, d), &none).unwrap(),
        "https://api.example:6443"
    );
    let e = base_url(&spec(Some("http://127.0.0.1:8080"), false, d), &none).unwrap_err();
    assert!(matches!(e, KubeError::InsecureUrl { .. }), "{e}");
    assert!(e.to_string().contains("in the clear"));
    assert_eq!(
        base_url(&spec(Some("http://127.0.0.1:8080"), true, d), &none).unwrap(),
        "http://127.0.0.1:8080"
    );
    for bad in ["ftp://x:1", "https://x:1/api", "not a url", "https://"] {
        assert!(
            matches!(
                base_url(&spec(Some(bad), true, d), &none),
                Err(KubeError::BadUrl { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn https_needs_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "abc").unwrap();
    let s = spec(Some("https://127.0.0.1:1"), false, dir.path());
    let e = ApiClient::new(&s).unwrap_err();
    assert!(matches!(e, KubeError::ServiceAccount { .. }), "{e}");
    assert!(e.to_string().contains("ca.crt"));
    std::fs::write(dir.path().join("ca.crt"), "not pem").unwrap();
    assert!(matches!(
        ApiClient::new(&s),
        Err(KubeError::NoCaCert { .. })
    ));
}

#[test]
fn the_token_is_required_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(Some("http://127.0.0.1:1"), true, dir.path());
    let e = ApiClient::new(&s).unwrap_err();
    assert!(
        e.to_string().contains("automountServiceAccountToken"),
        "{e}"
    );
    std::fs::write(dir.path().join("token"), "  \n").unwrap();
    assert!(matches!(
        ApiClient::new(&s),
        Err(KubeError::BadToken { .. })
    ));
    std::fs::write(dir.path().join("token"), "a b").unwrap();
    assert!(matches!(
        ApiClient::new(&s),
        Err(KubeError::BadToken { .. })
    ));
}

/// Serves one canned answer per connection; sends each request's head back on `tx`.
fn serve(answers: Vec<Vec<u8>>) -> (String, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for answer in answers {
            let (mut s, _) = l.accept().unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
                head.push(b[0]);
            }
            let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
            let _ = s.write_all(&answer);
        }
    });
    (url, rx)
}

fn http(status: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

/// Percent-decoding (`+` is a space), for reading the request's query back.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

const LIST: &str = include_str!("../pods/fixtures/node_pods.json");
const FORBIDDEN: &str = include_str!("../pods/fixtures/forbidden.json");

#[test]
fn lists_with_the_selectors_and_a_fresh_token() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "first-token\n").unwrap();
    let (url, rx) = serve(vec![
        http("200 OK", LIST.as_bytes()),
        http("200 OK", LIST.as_bytes()),
    ]);
    let c = ApiClient::new(&spec(Some(&url), true, dir.path())).unwrap();
    let sel = Selector::parse("app.kubernetes.io/name=ollama, zone in (b,a)").unwrap();
    let pods = c.list_pods(&sel, "worker-1", None).unwrap();
    assert_eq!(pods.len(), 4);
    let head = rx.recv().unwrap();
    let line = head.lines().next().unwrap();
    assert!(line.starts_with("GET /api/v1/pods?"), "{line}");
    let target = line.split(' ').nth(1).unwrap();
    let query = target.split_once('?').unwrap().1;
    let params: Vec<(String, String)> = query
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (decode(k), decode(v))
        })
        .collect();
    assert_eq!(
        params,
        vec![
            (
                "labelSelector".to_owned(),
                "app.kubernetes.io/name=ollama,zone in (a,b)".to_owned()
            ),
            (
                "fieldSelector".to_owned(),
                "spec.nodeName=worker-1".to_owned()
            ),
        ],
        "{line}"
    );
    assert!(
        head.contains("authorization: Bearer first-token\r\n")
            || head.contains("Authorization: Bearer first-token\r\n"),
        "{head}"
    );
    // The token rotates: the next request carries the new one.
    std::fs::write(dir.path().join("token"), "second-token").unwrap();
    c.list_pods(&sel, "worker-1", None).unwrap();
    let head = rx.recv().unwrap().to_ascii_lowercase();
    assert!(
        head.contains("authorization: bearer second-token\r\n"),
        "{head}"
    );
}

#[test]
fn refusals_and_bad_answers_are_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "t").unwrap();
    let big = vec![b' '; (MAX_LIST_BYTES + 10) as usize];
    let (url, _rx) = serve(vec![
        http("403 Forbidden", FORBIDDEN.as_bytes()),
        http(
            "401 Unauthorized",
            b"{\"kind\":\"Status\",\"message\":\"Unauthorized\"}",
        ),
        http("200 OK", b"{\"kind\":\"PodList\",\"items\":[{"),
        http("200 OK", &big),
        http("500 Internal Server Error", b"etcd unavailable"),
    ]);
    let c = ApiClient::new(&spec(Some(&url), true, dir.path())).unwrap();
    let sel = Selector::parse("app=ollama").unwrap();
    let e = c.list_pods(&sel, "n", None).unwrap_err();
    assert!(matches!(e, KubeError::Refused { status: 403, .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("grant list/watch on pods") && text.contains("see deploy/"),
        "{text}"
    );
    assert!(
        text.contains("cannot list resource"),
        "the server's message is kept: {text}"
    );
    let e = c.list_pods(&sel, "n", None).unwrap_err();
    assert!(matches!(e, KubeError::Refused { status: 401, .. }), "{e}");
    let e = c.list_pods(&sel, "n", None).unwrap_err();
    assert!(matches!(e, KubeError::BadJson { .. }), "{e}");
    let e = c.list_pods(&sel, "n", None).unwrap_err();
    assert!(matches!(e, KubeError::TooLarge { .. }), "{e}");
    let e = c.list_pods(&sel, "n", None).unwrap_err();
    assert!(matches!(e, KubeError::Status { status: 500, .. }), "{e}");
    assert!(e.to_string().contains("etcd unavailable"));
    // Nothing listens any more.
    let e = c.list_pods(&sel, "n", None).unwrap_err();
    assert!(matches!(e, KubeError::Request { .. }), "{e}");
}
