//! Helpers of the Prometheus proof: the repository's dashboard and rules files, promtool, a
//! Prometheus server of the test's own, and parsing of the text exposition.

use std::{
    collections::BTreeMap,
    fs,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{Daemon, http_get};

// ---- files and tools ----

pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// A binary of Debian's `prometheus` package (`$NAME_BIN` overrides the path); panics with
/// the way to install it when it is missing: this proof must not be skipped.
pub fn prometheus_tool(name: &str) -> PathBuf {
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

pub fn run_promtool(args: &[&str], dir: &Path) -> String {
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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Percent-encodes a query-string value.
pub fn urlencode(s: &str) -> String {
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
pub fn parse_exposition(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
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
pub fn sum_of(text: &str, name: &str, matchers: &[(&str, &str)]) -> Option<f64> {
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

pub fn scrape(addr: SocketAddr) -> String {
    match http_get(addr, "/metrics") {
        Ok((200, body)) => body,
        Ok((code, body)) => panic!("GET http://{addr}/metrics answered {code}: {body}"),
        Err(e) => panic!("GET http://{addr}/metrics: {e}"),
    }
}

/// Waits until the daemon answers on `addr`.
pub fn wait_metrics(d: &Daemon, addr: SocketAddr) -> String {
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
pub fn wait_sum(
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
pub struct Prometheus {
    child: Option<Child>,
    /// Where it serves its HTTP API.
    pub addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(target: SocketAddr, rules: &Path) -> Self {
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

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_ready(&mut self) {
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
    pub fn api(&self, path: &str) -> Result<Value, String> {
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
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("query?query={}", urlencode(expr)))?;
        match data["result"].as_array() {
            Some(r) => Ok(r.clone()),
            None => Err(format!("not a vector: {data}")),
        }
    }

    /// Waits until the daemon's scrape target is up.
    pub fn wait_target_up(&self) {
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
pub fn dashboard_queries() -> Vec<(String, String)> {
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
pub fn pretty(v: &[Value]) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// Whether any series of `result` has `label` = `value`.
pub fn has_label(result: &[Value], label: &str, value: &str) -> bool {
    result.iter().any(|s| s["metric"][label] == value)
}
