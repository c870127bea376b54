use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use ollama_egress_common::Counter;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::watch,
};

use super::*;
use crate::{
    model::{Family, Mode, Verdict},
    policy::{Action, FamilyTotals, PrefixTotals},
};

/// Every series of the contract and its type.
const SERIES: &[(&str, &str)] = &[
    ("ollama_egress_connections_total", "counter"),
    ("ollama_egress_packets_total", "counter"),
    ("ollama_egress_bytes_total", "counter"),
    ("ollama_egress_events_lost_total", "counter"),
    ("ollama_egress_policy_prefixes", "gauge"),
    ("ollama_egress_policy_reloads_total", "counter"),
    ("ollama_egress_enforcing", "gauge"),
    ("ollama_egress_build_info", "gauge"),
    ("ollama_egress_dns_answers_total", "counter"),
    ("ollama_egress_dns_bindings", "gauge"),
    ("ollama_egress_dns_names_evicted_total", "counter"),
    ("ollama_egress_inbound_decisions_total", "counter"),
    ("ollama_egress_inbound_unreported_total", "counter"),
];

type Labels = BTreeMap<String, String>;

/// The samples of a text exposition: (name, labels) → value.
fn samples(text: &str) -> BTreeMap<(String, Labels), f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let inner = rest.strip_suffix('}').expect("closing brace");
                let labels = inner
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once('=').expect("label pair");
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .collect();
                (n.to_owned(), labels)
            }
            None => (series.to_owned(), Labels::new()),
        };
        out.insert((name, labels), value.parse().expect("sample value"));
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn value(m: &Metrics, name: &str, pairs: &[(&str, &str)]) -> Option<f64> {
    samples(&m.render().expect("render"))
        .get(&(name.to_owned(), labels(pairs)))
        .copied()
}

fn series_of(m: &Metrics, name: &str) -> Vec<Labels> {
    samples(&m.render().expect("render"))
        .into_keys()
        .filter(|(n, _)| n == name)
        .map(|(_, l)| l)
        .collect()
}

fn event(verdict: Verdict, proto: &str, country: Option<&str>) -> EventRecord {
    EventRecord {
        ts: OffsetDateTime::UNIX_EPOCH,
        verdict,
        mode: Mode::Enforce,
        direction: crate::model::Direction::Outbound,
        pid: 4242,
        tid: 4242,
        comm: "ollama".into(),
        exe: None,
        uid: 0,
        gid: 0,
        proto: proto.into(),
        family: Family::Ipv4,
        dst: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
        dport: 443,
        host: None,
        country: country.map(str::to_owned),
        asn: None,
        as_org: None,
        rule: "deny.countries:CN".into(),
        container: None,
        hook: None,
        via: None,
        src: None,
        sport: None,
    }
}

fn snapshot(f: impl Fn(usize, usize) -> (u64, u64), lost: u64) -> CounterSnapshot {
    let mut s = CounterSnapshot::default();
    for d in 0..D {
        for v in 0..V {
            let (packets, bytes) = f(d, v);
            s.packets[d][v] = Counter { packets, bytes };
        }
    }
    s.events_lost = lost;
    s
}

#[test]
fn every_series_is_rendered_with_its_type_and_help() {
    let m = Metrics::new("1.2.3").expect("metrics");
    m.observe_event(&event(Verdict::Allowed, "tcp", Some("US")));
    let text = m.render().expect("render");
    for (name, ty) in SERIES {
        assert!(
            text.contains(&format!("# TYPE {name} {ty}\n")),
            "{name} is not a {ty}:\n{text}"
        );
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no help:\n{text}"
        );
    }
    assert_eq!(
        value(&m, "ollama_egress_build_info", &[("version", "1.2.3")]),
        Some(1.0)
    );
    assert_eq!(value(&m, "ollama_egress_enforcing", &[]), Some(0.0));
    assert_eq!(value(&m, "ollama_egress_events_lost_total", &[]), Some(0.0));
}

#[test]
fn series_for_dashboards_exist_before_any_traffic() {
    let m = Metrics::new("0.1.0").expect("metrics");
    for name in ["ollama_egress_packets_total", "ollama_egress_bytes_total"] {
        let got: BTreeSet<Labels> = series_of(&m, name).into_iter().collect();
        let mut want = BTreeSet::new();
        for d in ["egress", "ingress"] {
            for v in ["allowed", "blocked", "would_block"] {
                want.insert(labels(&[("direction", d), ("verdict", v)]));
            }
        }
        assert_eq!(got, want, "{name}");
        for l in series_of(&m, name) {
            let pairs: Vec<(&str, &str)> =
                l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            assert_eq!(value(&m, name, &pairs), Some(0.0));
        }
    }
    for result in ["success", "error"] {
        assert_eq!(
            value(
                &m,
                "ollama_egress_policy_reloads_total",
                &[("result", result)]
            ),
            Some(0.0)
        );
    }
    for family in ["ipv4", "ipv6"] {
        for action in ["allow", "deny"] {
            assert_eq!(
                value(
                    &m,
                    "ollama_egress_policy_prefixes",
                    &[("family", family), ("action", action)]
                ),
                Some(0.0)
            );
        }
    }
    assert!(
        series_of(&m, "ollama_egress_connections_total").is_empty(),
        "connection series appear with their first event"
    );
}

/// Far more series than the typed-label cache has slots, each counted in turns: evicted
/// and found again, every count lands in its own series.
#[test]
fn connection_series_count_right_when_their_cache_slots_collide() {
    let m = Metrics::new("0.1.0").expect("metrics");
    let countries: Vec<String> = (b'A'..=b'Z')
        .flat_map(|a| (b'A'..=b'E').map(move |b| format!("{}{}", char::from(a), char::from(b))))
        .collect();
    let verdicts = [Verdict::Allowed, Verdict::Blocked, Verdict::WouldBlock];
    let protos = ["tcp", "udp", "1", "not a protocol"];
    for round in 1..=3 {
        for cc in &countries {
            for v in verdicts {
                for p in protos {
                    for _ in 0..round {
                        m.observe_event(&event(v, p, Some(cc)));
                    }
                }
            }
        }
    }
    let c = "ollama_egress_connections_total";
    assert_eq!(
        series_of(&m, c).len(),
        countries.len() * verdicts.len() * protos.len(),
        "series were lost or made up"
    );
    let all = samples(&m.render().expect("render"));
    for cc in &countries {
        for v in verdicts {
            for (p, label) in protos.iter().zip(["tcp", "udp", "1", "other"]) {
                let labels = [
                    ("direction", "outbound"),
                    ("verdict", v.as_str()),
                    ("proto", label),
                    ("country", cc.as_str()),
                ];
                assert_eq!(
                    all.get(&(c.to_owned(), self::labels(&labels))),
                    Some(&6.0),
                    "wrong count for {v} {p} {cc}"
                );
            }
        }
    }
}

#[test]
fn events_map_to_bounded_labels() {
    let m = Metrics::new("0.1.0").expect("metrics");
    for _ in 0..3 {
        m.observe_event(&event(Verdict::Blocked, "tcp", Some("CN")));
    }
    m.observe_event(&event(Verdict::WouldBlock, "udp", Some("cn")));
    m.observe_event(&event(Verdict::Allowed, "tcp", None));
    m.observe_event(&event(Verdict::Allowed, "1", Some("")));
    m.observe_event(&event(Verdict::Allowed, "icmp-ish", Some("not a code")));
    let c = "ollama_egress_connections_total";
    let get = |v: &str, p: &str, cc: &str| {
        value(
            &m,
            c,
            &[
                ("direction", "outbound"),
                ("verdict", v),
                ("proto", p),
                ("country", cc),
            ],
        )
    };
    assert_eq!(get("blocked", "tcp", "CN"), Some(3.0));
    assert_eq!(get("would_block", "udp", "CN"), Some(1.0));
    assert_eq!(get("allowed", "tcp", "unknown"), Some(1.0));
    assert_eq!(get("allowed", "1", "unknown"), Some(1.0));
    assert_eq!(get("allowed", "other", "unknown"), Some(1.0));
    assert_eq!(series_of(&m, c).len(), 5);
    // Never an address, a port or a pid.
    let text = m.render().expect("render");
    for banned in ["203.0.113.7", "443", "4242", "ollama\""] {
        assert!(!text.contains(banned), "{banned} leaked into:\n{text}");
    }
}

#[test]
fn kernel_snapshots_map_direction_and_verdict() {
    let m = Metrics::new("0.1.0").expect("metrics");
    // A distinct value per slot: packets = 10*d + v + 1, bytes = 1000 * packets.
    let snap = snapshot(
        |d, v| {
            let p = (10 * d + v + 1) as u64;
            (p, p * 1000)
        },
        7,
    );
    m.set_kernel(&snap);
    let cases = [
        (ollama_egress_common::DIRECTION_EGRESS, "egress"),
        (ollama_egress_common::DIRECTION_INGRESS, "ingress"),
    ];
    for (d, dname) in cases {
        for (v, vname) in [
            (ollama_egress_common::VERDICT_ALLOWED, "allowed"),
            (ollama_egress_common::VERDICT_BLOCKED, "blocked"),
            (ollama_egress_common::VERDICT_WOULD_BLOCK, "would_block"),
        ] {
            let want = snap.packets[d as usize][v as usize];
            let l = [("direction", dname), ("verdict", vname)];
            assert_eq!(
                value(&m, "ollama_egress_packets_total", &l),
                Some(want.packets as f64),
                "{l:?}"
            );
            assert_eq!(
                value(&m, "ollama_egress_bytes_total", &l),
                Some(want.bytes as f64),
                "{l:?}"
            );
        }
    }
    assert_eq!(value(&m, "ollama_egress_events_lost_total", &[]), Some(7.0));
}

#[test]
fn counters_only_go_up() {
    let m = Metrics::new("0.1.0").expect("metrics");
    let eg = [("direction", "egress"), ("verdict", "allowed")];
    let read = |m: &Metrics| {
        (
            value(m, "ollama_egress_packets_total", &eg).expect("packets"),
            value(m, "ollama_egress_events_lost_total", &[]).expect("lost"),
        )
    };
    m.set_kernel(&snapshot(|_, _| (100, 5000), 3));
    assert_eq!(read(&m), (100.0, 3.0));
    // The same snapshot again changes nothing.
    m.set_kernel(&snapshot(|_, _| (100, 5000), 3));
    assert_eq!(read(&m), (100.0, 3.0));
    m.set_kernel(&snapshot(|_, _| (150, 7000), 4));
    assert_eq!(read(&m), (150.0, 4.0));
    // The kernel's maps were recreated: its values start again from 0, the export carries on.
    m.set_kernel(&snapshot(|_, _| (0, 0), 0));
    assert_eq!(read(&m), (150.0, 4.0));
    m.set_kernel(&snapshot(|_, _| (20, 900), 2));
    assert_eq!(read(&m), (170.0, 6.0));

    let mut prev = 0.0;
    for _ in 0..5 {
        m.reload(true);
        m.reload(false);
        let now = value(
            &m,
            "ollama_egress_policy_reloads_total",
            &[("result", "error")],
        )
        .expect("reloads");
        assert!(now > prev);
        prev = now;
    }
    assert_eq!(
        value(
            &m,
            "ollama_egress_policy_reloads_total",
            &[("result", "success")]
        ),
        Some(5.0)
    );
}

#[test]
fn absolute_counter_survives_repeated_resets() {
    let mut a = Absolute::default();
    assert_eq!(a.update(10), 10);
    assert_eq!(a.update(3), 13);
    assert_eq!(a.update(1), 14);
    assert_eq!(a.update(5), 18);
    assert_eq!(a.update(5), 18);
}

#[test]
fn dns_answers_come_from_the_kernel_stats_and_bindings_from_the_table() {
    let m = Metrics::new("0.1.0").expect("metrics");
    for r in DNS_RESULTS {
        assert_eq!(
            value(&m, "ollama_egress_dns_answers_total", &[("result", r)]),
            Some(0.0),
            "{r} exists before any answer"
        );
    }
    let mut snap = snapshot(|_, _| (0, 0), 0);
    snap.dns_answers = [40, 3, 1];
    m.set_kernel(&snap);
    let get = |m: &Metrics, r: &str| {
        value(m, "ollama_egress_dns_answers_total", &[("result", r)]).expect("series")
    };
    assert_eq!(
        (get(&m, "learned"), get(&m, "ignored"), get(&m, "malformed")),
        (40.0, 3.0, 1.0)
    );
    // The kernel's maps were re-created: the counter carries on.
    snap.dns_answers = [2, 3, 1];
    m.set_kernel(&snap);
    assert_eq!(get(&m, "learned"), 42.0);
    assert_eq!(series_of(&m, "ollama_egress_dns_answers_total").len(), 3);
    assert_eq!(
        value(&m, "ollama_egress_dns_names_evicted_total", &[]),
        Some(0.0)
    );
    m.set_dns_bindings(17, 5);
    assert_eq!(value(&m, "ollama_egress_dns_bindings", &[]), Some(17.0));
    assert_eq!(
        value(&m, "ollama_egress_dns_names_evicted_total", &[]),
        Some(5.0)
    );
    m.set_dns_bindings(0, 5);
    assert_eq!(value(&m, "ollama_egress_dns_bindings", &[]), Some(0.0));
    assert_eq!(
        value(&m, "ollama_egress_dns_names_evicted_total", &[]),
        Some(5.0)
    );
}

#[test]
fn policy_and_enforcing_gauges() {
    let m = Metrics::new("0.1.0").expect("metrics");
    let summary = PolicySummary {
        origin: "test".into(),
        default: Action::Deny,
        rules: Vec::new(),
        prefixes: PrefixTotals {
            ipv4: FamilyTotals { allow: 4, deny: 2 },
            ipv6: FamilyTotals { allow: 1, deny: 0 },
        },
        domains: FamilyTotals::default(),
        inbound: crate::policy::InboundSummary {
            section: false,
            default: Action::Allow,
            prefixes: PrefixTotals::default(),
        },
    };
    m.set_policy(&summary);
    let p = |f: &str, a: &str| {
        value(
            &m,
            "ollama_egress_policy_prefixes",
            &[("family", f), ("action", a)],
        )
    };
    assert_eq!(p("ipv4", "allow"), Some(4.0));
    assert_eq!(p("ipv4", "deny"), Some(2.0));
    assert_eq!(p("ipv6", "allow"), Some(1.0));
    assert_eq!(p("ipv6", "deny"), Some(0.0));
    // A smaller policy lowers the gauge.
    m.set_policy(&PolicySummary {
        prefixes: PrefixTotals::default(),
        ..summary
    });
    assert_eq!(p("ipv4", "allow"), Some(0.0));

    m.set_enforcing(true);
    assert_eq!(value(&m, "ollama_egress_enforcing", &[]), Some(1.0));
    m.set_enforcing(false);
    assert_eq!(value(&m, "ollama_egress_enforcing", &[]), Some(0.0));
}

#[test]
fn metrics_is_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<Metrics>();
}

#[test]
fn bind_address_is_loopback_unless_allowed() {
    let ok = |s: &str, remote: bool| check_bind_address(s.parse().expect("addr"), remote).is_ok();
    assert!(ok("127.0.0.1:9464", false));
    assert!(ok("127.0.0.2:9464", false));
    assert!(ok("[::1]:9464", false));
    assert!(ok("[::ffff:127.0.0.1]:9464", false));
    assert!(!ok("0.0.0.0:9464", false));
    assert!(!ok("[::]:9464", false));
    assert!(!ok("192.168.1.10:9464", false));
    assert!(ok("0.0.0.0:9464", true));
    assert!(ok("[::]:9464", true));
    let err = check_bind_address("0.0.0.0:9464".parse().expect("addr"), false)
        .expect_err("refused")
        .to_string();
    assert!(err.contains("--metrics-allow-remote"), "{err}");
    assert!(err.contains("0.0.0.0:9464"), "{err}");
    assert!(DEFAULT_ADDR.parse::<SocketAddr>().is_ok());
}

/// Sends `request` raw and returns the whole response.
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .expect("read");
    String::from_utf8(out).expect("utf8")
}

async fn get(addr: SocketAddr, path: &str) -> String {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
    )
    .await
}

fn status(resp: &str) -> &str {
    resp.lines().next().unwrap_or("")
}

fn body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

#[tokio::test]
async fn http_server_answers_metrics_and_404s_the_rest() {
    let metrics = Arc::new(Metrics::new("9.9.9").expect("metrics"));
    let listener = bind("127.0.0.1:0".parse().expect("addr"), false)
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let refreshes = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let counter = Arc::clone(&refreshes);
    let refresh_metrics = Arc::clone(&metrics);
    let server = tokio::spawn(serve(
        listener,
        Arc::clone(&metrics),
        move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) as u64 + 1;
            refresh_metrics.set_kernel(&snapshot(|_, _| (n, n), 0));
        },
        stop_rx,
    ));

    metrics.observe_event(&event(Verdict::Blocked, "tcp", Some("CN")));
    let resp = get(addr, "/metrics").await;
    assert_eq!(status(&resp), "HTTP/1.1 200 OK", "{resp}");
    assert!(
        resp.contains("\r\nContent-Type: text/plain; version=0.0.4"),
        "{resp}"
    );
    assert!(resp.contains("\r\nConnection: close\r\n"), "{resp}");
    let text = body(&resp);
    let len_line = resp
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("content length");
    assert_eq!(len_line.parse::<usize>().expect("length"), text.len());
    assert!(text.contains(
        "ollama_egress_connections_total{country=\"CN\",direction=\"outbound\",proto=\"tcp\",verdict=\"blocked\"} 1"
    ));
    assert!(text.contains("ollama_egress_build_info{version=\"9.9.9\"} 1"));
    // The refresh ran before the scrape rendered.
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
    assert!(
        text.contains("ollama_egress_packets_total{direction=\"egress\",verdict=\"allowed\"} 1\n"),
        "{text}"
    );
    let again = get(addr, "/metrics?x=1").await;
    assert!(body(&again).contains("verdict=\"allowed\"} 2\n"), "{again}");

    let root = get(addr, "/").await;
    assert_eq!(status(&root), "HTTP/1.1 200 OK");
    assert!(body(&root).contains("/metrics"), "{root}");

    let head = raw(addr, b"HEAD /metrics HTTP/1.0\r\n\r\n").await;
    assert_eq!(status(&head), "HTTP/1.1 200 OK");
    assert!(body(&head).is_empty(), "{head}");

    for path in ["/metricsx", "/metrics/", "/favicon.ico", "/api/v1/query"] {
        let r = get(addr, path).await;
        assert_eq!(status(&r), "HTTP/1.1 404 Not Found", "{path}: {r}");
    }
    let post = raw(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
    assert_eq!(status(&post), "HTTP/1.1 405 Method Not Allowed", "{post}");
    let bad = raw(addr, b"hello\r\n\r\n").await;
    assert_eq!(status(&bad), "HTTP/1.1 400 Bad Request", "{bad}");
    let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
    huge.extend(std::iter::repeat_n(b'a', HEAD_LIMIT + 10));
    let big = raw(addr, &huge).await;
    assert!(status(&big).starts_with("HTTP/1.1 431"), "{big}");

    // A client that connects and says nothing does not hold the server up.
    let _idle = TcpStream::connect(addr).await.expect("connect");
    let r = get(addr, "/metrics").await;
    assert_eq!(status(&r), "HTTP/1.1 200 OK");

    stop_server(stop_tx, server).await;
}

/// Stops a server from [`start_server`] and checks that it ended cleanly.
pub(super) async fn stop_server(
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
) {
    stop.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stops")
        .expect("join")
        .expect("serve result");
}

/// A metrics server on a free loopback port: its address, its stop switch and its task.
pub(super) async fn start_server(
    refresh: impl Fn() + Send + Sync + 'static,
) -> (
    std::net::SocketAddr,
    watch::Sender<bool>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let metrics = Arc::new(Metrics::new("0.1.0").expect("metrics"));
    let listener = bind("127.0.0.1:0".parse().expect("addr"), false)
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(serve(listener, metrics, refresh, stop_rx));
    (addr, stop_tx, server)
}

#[tokio::test]
async fn http_server_gives_up_on_a_silent_client() {
    let (addr, stop_tx, server) = start_server(|| {}).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /metr").await.expect("write");
    let mut out = Vec::new();
    let n = tokio::time::timeout(IO_TIMEOUT + Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("closed after the timeout")
        .expect("read");
    assert_eq!(n, 0, "no response to a partial request");
    // Dropping the sender stops the server too.
    drop(stop_tx);
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stops")
        .expect("join")
        .expect("serve result");
}

// ---- the dashboard and the alert rules ----

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

/// Every `ollama_egress_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("ollama_egress_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

fn known_names() -> BTreeSet<String> {
    SERIES.iter().map(|(n, _)| (*n).to_owned()).collect()
}

fn dashboard() -> Value {
    let path = repo_file("dashboards/ollama-egress.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

#[test]
fn dashboard_is_importable_and_every_panel_has_queries_and_a_description() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().expect("schemaVersion") >= 36);
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(
        d["title"]
            .as_str()
            .is_some_and(|t| t.contains("ollama-egress"))
    );
    assert!(d["id"].is_null(), "an importable dashboard has no id");
    let vars = d["templating"]["list"].as_array().expect("templating");
    let ds = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");

    let panels = d["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().expect("title");
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "duplicate id: {title}"
        );
        assert!(
            p["description"].as_str().is_some_and(|s| s.len() > 40),
            "{title}: needs a plain-words description"
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        assert_eq!(p["datasource"]["type"], "prometheus", "{title}");
        for k in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][k].is_u64(), "{title}: gridPos.{k}");
        }
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no targets");
        let mut refs = BTreeSet::new();
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            assert!(!expr.trim().is_empty(), "{title}: empty expr");
            assert!(refs.insert(t["refId"].as_str().expect("refId")), "{title}");
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            let names = metric_names(expr);
            assert!(
                !names.is_empty(),
                "{title}: {expr} uses no ollama_egress metric"
            );
            used.extend(names);
        }
    }
    let known = known_names();
    let unknown: Vec<_> = used.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "unknown metrics in the dashboard: {unknown:?}"
    );
    let unused: Vec<_> = known_names()
        .into_iter()
        .filter(|n| !used.contains(n) && n != "ollama_egress_build_info")
        .collect();
    assert!(unused.is_empty(), "metrics without a panel: {unused:?}");
}

#[test]
fn alert_rules_use_only_known_metrics() {
    let path = repo_file("dashboards/alerts.yml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let names = metric_names(&text);
    assert!(!names.is_empty());
    let known = known_names();
    let unknown: Vec<_> = names.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "unknown metrics in alerts.yml: {unknown:?}"
    );
    for alert in [
        "OllamaEgressDeniedCountry",
        "OllamaEgressNotEnforcing",
        "OllamaEgressEventsLost",
        "OllamaEgressPolicyReloadFailed",
    ] {
        assert!(
            text.contains(&format!("alert: {alert}\n")),
            "{alert} missing"
        );
    }
}
