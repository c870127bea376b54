//! The metrics, the Grafana dashboard and the alert rules, proven against a real Prometheus
//! server (Debian's `prometheus` package, which `cargo xtask setup` installs): the daemon
//! serves `/metrics`, Prometheus scrapes it, and every panel expression of
//! `dashboards/ollama-egress.json` must evaluate to at least one series; the rules of
//! `dashboards/alerts.yml` must load and the denied-country alert must fire.

use std::{
    fs,
    net::SocketAddr,
    time::{Duration, Instant},
};

use ollama_egress_geo::fixture::documentation_fixture;
use ollama_egress_tests::prometheus::*;
use ollama_egress_tests::{
    Daemon, NetNs, TestCgroup, probe, probe_args, require_root, with, write_policy,
};
use serde_json::Value;

/// Hosts of the test namespace: 203.0.113.7 is CN (denied by the policy), 198.51.100.1 is
/// US and 2001:db8::7 is DE (both allowed).
const ADDRS: &[&str] = &["203.0.113.7/32", "198.51.100.1/32", "2001:db8::7/128"];
const LISTEN: &[&str] = &[
    "203.0.113.7:8080",
    "198.51.100.1:8080",
    "[2001:db8::7]:8080",
];
const POLICY: &str = "default = \"allow\"\n[deny]\ncountries = [\"CN\"]\n";

/// Denied connects whose effect on `connections_total{verdict="blocked"}` is checked exactly.
const N_DENIED: usize = 5;

// ---- the tests ----

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let dir = repo_file("dashboards");
    let out = run_promtool(&["check", "rules", "alerts.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run_promtool(&["test", "rules", "alerts_test.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn dashboard_panels_all_have_queries() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 10, "{queries:#?}");
    for (title, expr) in &queries {
        assert!(
            expr.contains("ollama_egress_"),
            "panel {title:?} does not query ollama-egress: {expr}"
        );
    }
}

#[test]
fn prometheus_scrapes_the_daemon_and_every_panel_and_rule_evaluates() {
    require_root();
    let prom_bin = prometheus_tool("prometheus");
    let ns = NetNs::new("oe-prom", ADDRS);
    let cg = TestCgroup::new("oe-prom");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (country, asn) = documentation_fixture()
        .write_to(tmp.path())
        .expect("fixture dbs");
    let policy = write_policy(tmp.path(), POLICY);
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let cgs = cg.path.display().to_string();
    let maddr = metrics.to_string();
    let d = Daemon::start(&[
        "--enforce",
        "--cgroup",
        &cgs,
        "--policy",
        policy.to_str().expect("utf8"),
        "--geo-db",
        country.to_str().expect("utf8"),
        "--asn-db",
        asn.to_str().expect("utf8"),
        "--metrics-addr",
        &maddr,
    ]);

    // What the daemon exposes before any traffic.
    let text = wait_metrics(&d, metrics);
    assert_eq!(
        sum_of(&text, "ollama_egress_enforcing", &[]),
        Some(1.0),
        "enforce programs are attached and verified:\n{text}"
    );
    assert_eq!(
        sum_of(
            &text,
            "ollama_egress_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sum_of(
            &text,
            "ollama_egress_policy_prefixes",
            &[("family", "ipv4"), ("action", "deny")]
        )
        .is_some_and(|n| n >= 1.0),
        "CN expands to at least 203.0.113.0/24:\n{text}"
    );
    for result in ["success", "error"] {
        assert!(
            sum_of(
                &text,
                "ollama_egress_policy_reloads_total",
                &[("result", result)]
            )
            .is_some(),
            "reloads_total{{result={result:?}}} exists from the start:\n{text}"
        );
    }
    assert_eq!(
        sum_of(&text, "ollama_egress_events_lost_total", &[]),
        Some(0.0)
    );

    let prom = Prometheus::start(metrics, &repo_file("dashboards/alerts.yml"));
    prom.wait_target_up();
    eprintln!("prometheus {} on {}", prom_bin.display(), prom.addr);

    // Traffic: allowed (US over IPv4, DE over IPv6) and denied (CN), enforced.
    let inside = probe_args(&ns, Some(&cg.path), LISTEN);
    probe(&with(&inside, &["tcp", "198.51.100.1:8080"])).assert_ok("allowed US host");
    probe(&with(&inside, &["tcp", "[2001:db8::7]:8080"])).assert_ok("allowed DE host");
    probe(&with(&inside, &["tcp", "203.0.113.7:8080"])).assert_eperm("denied CN host");
    let blocked = [("verdict", "blocked")];
    let before = wait_sum(metrics, "ollama_egress_connections_total", &blocked, |v| {
        v >= 1.0
    });
    assert_eq!(
        before,
        1.0,
        "the first denied connect is counted once:\n{}",
        scrape(metrics)
    );

    // N denied connects raise connections_total{verdict="blocked"} by exactly N.
    for i in 0..N_DENIED {
        probe(&with(&inside, &["tcp", "203.0.113.7:8080"]))
            .assert_eperm(&format!("denied connect {i}"));
    }
    let want = before + N_DENIED as f64;
    wait_sum(metrics, "ollama_egress_connections_total", &blocked, |v| {
        v >= want
    });
    std::thread::sleep(Duration::from_millis(1500));
    let text = scrape(metrics);
    assert_eq!(
        sum_of(&text, "ollama_egress_connections_total", &blocked),
        Some(want),
        "{N_DENIED} denied connects must add exactly {N_DENIED}:\n{text}"
    );
    assert_eq!(
        sum_of(
            &text,
            "ollama_egress_connections_total",
            &[("verdict", "blocked"), ("proto", "tcp"), ("country", "CN")]
        ),
        Some(want),
        "{text}"
    );
    let log_blocked = d
        .wait_events(N_DENIED + 1, |e| e["verdict"] == "blocked")
        .len();
    assert_eq!(
        log_blocked as f64, want,
        "the log and the counter agree on blocked connections"
    );
    for leak in ["203.0.113", "198.51.100", "2001:db8", "\"8080\"", "pid="] {
        assert!(
            !text.contains(leak),
            "no addresses, ports or pids as labels ({leak}):\n{text}"
        );
    }
    for cc in ["US", "DE"] {
        assert!(
            sum_of(
                &text,
                "ollama_egress_connections_total",
                &[("verdict", "allowed"), ("country", cc)]
            )
            .is_some_and(|v| v >= 1.0),
            "allowed connection to {cc}:\n{text}"
        );
    }
    // Kernel counters: the allowed connections sent and received packets.
    for (direction, what) in [
        ("egress", "bytes"),
        ("ingress", "bytes"),
        ("egress", "packets"),
    ] {
        let name = format!("ollama_egress_{what}_total");
        assert!(
            sum_of(
                &text,
                &name,
                &[("direction", direction), ("verdict", "allowed")]
            )
            .is_some_and(|v| v > 0.0),
            "{name}{{direction={direction:?},verdict=\"allowed\"}} counts the kernel's traffic:\n{text}"
        );
    }

    // Every panel expression of the dashboard returns at least one series.
    let queries = dashboard_queries();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut results: Vec<Result<Vec<Value>, String>>;
    loop {
        results = queries.iter().map(|(_, e)| prom.query(e)).collect();
        let all_good = results
            .iter()
            .all(|r| r.as_ref().is_ok_and(|s| !s.is_empty()));
        if all_good || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let failures: Vec<String> = queries
        .iter()
        .zip(&results)
        .filter_map(|((title, expr), r)| match r {
            Ok(s) if !s.is_empty() => None,
            Ok(_) => Some(format!("{title:?}: no series from {expr}")),
            Err(e) => Some(format!("{title:?}: {expr} failed: {e}")),
        })
        .collect();
    assert!(
        failures.is_empty(),
        "dashboard panels without data:\n{}",
        failures.join("\n")
    );
    let by_title = |title: &str| -> Vec<Value> {
        queries
            .iter()
            .zip(&results)
            .filter(|((t, _), _)| t == title)
            .flat_map(|(_, r)| r.clone().unwrap_or_default())
            .collect()
    };
    let denied_by_country = by_title("Blocked and would-block by country");
    assert!(
        has_label(&denied_by_country, "country", "CN"),
        "{}",
        pretty(&denied_by_country)
    );
    let top = by_title("Top destination countries");
    for cc in ["CN", "US", "DE"] {
        assert!(has_label(&top, "country", cc), "{cc} in {}", pretty(&top));
    }
    let enforcing = by_title("Enforcing");
    assert!(
        enforcing.iter().all(|s| s["value"][1] == "1"),
        "{}",
        pretty(&enforcing)
    );

    // The alert rules loaded and evaluate without errors.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut rules: Vec<Value>;
    loop {
        let groups = prom.api("rules").unwrap_or_else(|e| panic!("rules: {e}"));
        rules = groups["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let healthy = !rules.is_empty() && rules.iter().all(|r| r["health"] == "ok");
        if healthy || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for name in [
        "OllamaEgressDeniedCountry",
        "OllamaEgressNotEnforcing",
        "OllamaEgressEventsLost",
        "OllamaEgressPolicyReloadFailed",
        "OllamaEgressMetricsAbsent",
    ] {
        let rule = rules
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("rule {name} not loaded: {}", pretty(&rules)));
        assert_eq!(rule["health"], "ok", "{rule:#}");
    }

    // "Ollama tried to reach a denied country" fires for CN; nothing else does.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut alerts: Vec<Value>;
    loop {
        let data = prom.api("alerts").unwrap_or_else(|e| panic!("alerts: {e}"));
        alerts = data["alerts"].as_array().cloned().unwrap_or_default();
        let fired = alerts.iter().any(|a| {
            a["labels"]["alertname"] == "OllamaEgressDeniedCountry"
                && a["labels"]["country"] == "CN"
                && a["labels"]["verdict"] == "blocked"
                && a["state"] == "firing"
        });
        if fired {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "OllamaEgressDeniedCountry did not fire for CN: {}",
            pretty(&alerts)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let others: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["labels"]["alertname"] != "OllamaEgressDeniedCountry")
        .collect();
    assert!(others.is_empty(), "unexpected alerts: {others:#?}");

    // Reloads are counted by result: a broken policy file is rejected, a good one accepted.
    let reloads = |result: &str| {
        sum_of(
            &scrape(metrics),
            "ollama_egress_policy_reloads_total",
            &[("result", result)],
        )
        .unwrap_or(0.0)
    };
    let (ok0, err0) = (reloads("success"), reloads("error"));
    let hup = || {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(d.pid()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    };
    fs::write(&policy, "default = \"sometimes\"\n").expect("write a broken policy");
    hup();
    let err1 = wait_sum(
        metrics,
        "ollama_egress_policy_reloads_total",
        &[("result", "error")],
        |v| v > err0,
    );
    assert!(err1 > err0, "a failed reload is counted as error");
    assert_eq!(reloads("success"), ok0, "a failed reload is no success");
    fs::write(&policy, POLICY).expect("restore the policy");
    hup();
    let ok1 = wait_sum(
        metrics,
        "ollama_egress_policy_reloads_total",
        &[("result", "success")],
        |v| v > ok0,
    );
    assert!(ok1 > ok0, "a good reload is counted as success");
    assert_eq!(
        sum_of(&scrape(metrics), "ollama_egress_enforcing", &[]),
        Some(1.0),
        "still enforcing after the reloads"
    );
    drop(prom);
}
