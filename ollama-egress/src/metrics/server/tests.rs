//! Tests of `server`.

use super::*;
use crate::metrics::tests::{start_server, stop_server};

async fn scrape_once(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    String::from_utf8(out).expect("utf8")
}

/// Connections that say nothing (or trickle a byte now and then) cannot starve scrapes:
/// with 4 × [`MAX_CONNECTIONS`] of them open, two scrapes are answered within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_starve_scrapes() {
    let (addr, stop_tx, server) = start_server(|| {}).await;
    let mut idle = Vec::new();
    for i in 0..4 * MAX_CONNECTIONS {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        if i % 2 == 0 {
            s.write_all(b"GET /met").await.expect("write");
        }
        idle.push(s);
    }
    // Let the server accept what it will.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (a, b) = tokio::time::timeout(Duration::from_secs(3), async {
        tokio::join!(scrape_once(addr), scrape_once(addr))
    })
    .await
    .expect("both scrapes answered within 3 s while 64 idle connections are open");
    for r in [a, b] {
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        assert!(r.contains("ollama_egress_build_info"), "{r}");
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(idle);
    stop_server(stop_tx, server).await;
}

/// A scrape whose refresh is slow is not closed to make room for newer connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_in_flight_is_not_evicted() {
    let refresh = || std::thread::sleep(Duration::from_millis(800));
    let (addr, stop_tx, server) = start_server(refresh).await;
    let slow = tokio::spawn(scrape_once(addr));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut idle = Vec::new();
    for _ in 0..4 * MAX_CONNECTIONS {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let r = tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .expect("the slow scrape finishes")
        .expect("join");
    assert!(r.starts_with("HTTP/1.1 200 OK"), "{r:?}");
    drop(idle);
    stop_server(stop_tx, server).await;
}

#[test]
fn request_lines_parse() {
    assert_eq!(
        parse_request_line(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
        Request::Get {
            path: "/metrics".into(),
            head: false
        }
    );
    assert_eq!(
        parse_request_line(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
        Request::Get {
            path: "/metrics".into(),
            head: true
        }
    );
    assert_eq!(
        parse_request_line(b"POST / HTTP/1.1\r\n\r\n"),
        Request::Method
    );
    assert_eq!(parse_request_line(b"GET /\r\n\r\n"), Request::Bad);
    assert_eq!(
        parse_request_line(b"GET http://x/ HTTP/1.1\r\n\r\n"),
        Request::Bad
    );
    assert_eq!(parse_request_line(b"\xff\xfe\r\n\r\n"), Request::Bad);
}
