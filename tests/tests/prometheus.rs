//! The metrics, the Grafana dashboard and the alert rules, proven against a real Prometheus
//! server (Debian's `prometheus` package, which `cargo xtask setup` installs): the daemon
//! serves `/metrics`, Prometheus scrapes it, and every panel expression of
//! `dashboards/ollama-egress.json` must evaluate to at least one series; the rules of
//! `dashboards/alerts.yml` must load and the denied-country alert must fire.

use std::{
    collections::BTreeMap,
    fs,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use ollama_egress_geo::fixture::documentation_fixture;
use ollama_egress_tests::{
    Daemon, NetNs, TestCgroup, http_get, probe, probe_args, require_root, with, write_policy,
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

// ---- files and tools ----

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// A binary of Debian's `prometheus` package (`$NAME_BIN` overrides the path); panics with
/// the way to install it when it is missing: this proof must not be skipped.
fn prometheus_tool(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_ascii_uppercase());
    let path =
        std::env::var_os(&var).map_or_else(|| Path::new("/usr/bin").join(name), PathBuf::from);
    assert!(
        path.is_file(),
        "{} not found: the Prometheus tests need Debian's `prometheus` package; `cargo xtask setup` installs it (or `apt-get install prometheus`; ${var} overrides the path)",
        path.display()
    );
    path
}

fn run_promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new(prometheus_tool("promtool"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Percent-encodes a query-string value.
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---- the daemon's /metrics ----

/// The samples of a text exposition: (name, labels, value).
fn parse_exposition(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels in {line:?}"));
                let labels = inner
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p
                            .split_once('=')
                            .unwrap_or_else(|| panic!("bad label in {line:?}"));
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .collect();
                (n.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        let value = value
            .parse()
            .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}"));
        out.push((name, labels, value));
    }
    out
}

/// The sum of `name` over the series whose labels include `matchers`; `None` without any.
fn sum_of(text: &str, name: &str, matchers: &[(&str, &str)]) -> Option<f64> {
    let vals: Vec<f64> = parse_exposition(text)
        .into_iter()
        .filter(|(n, l, _)| {
            n == name
                && matchers
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .collect();
    (!vals.is_empty()).then(|| vals.iter().sum())
}

fn scrape(addr: SocketAddr) -> String {
    match http_get(addr, "/metrics") {
        Ok((200, body)) => body,
        Ok((code, body)) => panic!("GET http://{addr}/metrics answered {code}: {body}"),
        Err(e) => panic!("GET http://{addr}/metrics: {e}"),
    }
}

/// Waits until the daemon answers on `addr`.
fn wait_metrics(d: &Daemon, addr: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match http_get(addr, "/metrics") {
            Ok((200, body)) => return body,
            other if Instant::now() > deadline => panic!(
                "the daemon does not serve metrics on http://{addr}/metrics (run --metrics-addr): {other:?}\ndaemon log:\n{}",
                d.stderr_text()
            ),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Polls `/metrics` until `f` holds for the sum of `name{matchers}` (0 when absent), up to
/// 10 s; returns the last sum.
fn wait_sum(
    addr: SocketAddr,
    name: &str,
    matchers: &[(&str, &str)],
    f: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = sum_of(&scrape(addr), name, matchers).unwrap_or(0.0);
        if f(v) || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- a Prometheus server of our own ----

/// `prometheus` scraping the daemon every second, killed (by pid) on drop.
struct Prometheus {
    child: Option<Child>,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr, rules: &Path) -> Self {
        let bin = prometheus_tool("prometheus");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: ollama-egress\n    static_configs:\n      - targets: ['{target}']\n",
                rules = rules.display()
            ),
        )
        .expect("write prometheus.yml");
        run_promtool(
            &["check", "config", config.to_str().expect("utf8")],
            dir.path(),
        );
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let log = dir.path().join("prometheus.log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn prometheus");
        let mut p = Self {
            child: Some(child),
            addr,
            log,
            _dir: dir,
        };
        p.wait_ready();
        p
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok((200, _)) = http_get(self.addr, "/-/ready") {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("prometheus exited with {status}:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("prometheus not ready after 60 s:\n{}", self.log_text());
    }

    /// `GET /api/v1/<path>`: the `data` of a successful answer, or the error.
    fn api(&self, path: &str) -> Result<Value, String> {
        let (code, body) =
            http_get(self.addr, &format!("/api/v1/{path}")).map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| format!("HTTP {code}, not JSON ({e}): {body}"))?;
        if v["status"] == "success" {
            Ok(v["data"].clone())
        } else {
            Err(format!(
                "HTTP {code}: {} {}",
                v["errorType"].as_str().unwrap_or(""),
                v["error"].as_str().unwrap_or(&body)
            ))
        }
    }

    /// An instant query: the result series.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("query?query={}", urlencode(expr)))?;
        match data["result"].as_array() {
            Some(r) => Ok(r.clone()),
            None => Err(format!("not a vector: {data}")),
        }
    }

    /// Waits until the daemon's scrape target is up.
    fn wait_target_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Ok(data) = self.api("targets") {
                let up = data["activeTargets"]
                    .as_array()
                    .is_some_and(|ts| ts.iter().any(|t| t["health"] == "up"));
                if up {
                    return;
                }
                last = data;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "prometheus never scraped the daemon successfully: {last:#}\n{}",
            self.log_text()
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The child we started, by its pid: SIGTERM, then SIGKILL after 10 s.
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---- the dashboard ----

/// Every (panel title, expr) of the dashboard, the Grafana variables replaced by what a
/// dashboard over the last minutes would use.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = repo_file("dashboards/ollama-egress.json");
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let dash: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let panels = dash["panels"].as_array().expect("panels");
    let mut out = Vec::new();
    for p in panels {
        let title = p["title"].as_str().expect("title").to_owned();
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel {title:?} has no targets"));
        assert!(!targets.is_empty(), "panel {title:?} has no targets");
        for t in targets {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("a target of {title:?} has no expr"));
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("${__rate_interval}", "1m")
                .replace("$__range", "5m")
                .replace("${__range}", "5m")
                .replace("$__interval", "15s")
                .replace("${__interval}", "15s");
            assert!(
                !expr.contains('$'),
                "panel {title:?}: unknown variable in {expr}"
            );
            out.push((title.clone(), expr));
        }
    }
    out
}

/// JSON values, pretty-printed for a failure message.
fn pretty(v: &[Value]) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// Whether any series of `result` has `label` = `value`.
fn has_label(result: &[Value], label: &str, value: &str) -> bool {
    result.iter().any(|s| s["metric"][label] == value)
}

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
