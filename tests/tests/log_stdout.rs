//! `run --log-stdout` with the real daemon: every event is also a JSON line on stdout, the
//! same line as in `events.jsonl`, and nothing else is written there (the daemon's messages
//! go to stderr), so a container log pipeline can read stdout as JSON lines.

use ollama_egress_tests::{Scenario, ScenarioSpec, probe, with};

#[test]
fn events_are_json_lines_on_stdout_as_in_the_log_file() {
    let s = Scenario::start(ScenarioSpec {
        extra: &["--log-stdout"],
        ..ScenarioSpec::new(
            "oe-stdout",
            &["203.0.113.7/32", "198.51.100.1/32"],
            "--enforce",
            "default = \"deny\"\n[allow]\ncidrs = [\"198.51.100.0/24\"]\n",
        )
    });
    let inside = s.inside(&["203.0.113.7:8080", "198.51.100.1:8080"]);
    probe(&with(&inside, &["tcp", "198.51.100.1:8080"])).assert_ok("allowed");
    probe(&with(&inside, &["tcp", "203.0.113.7:8080"])).assert_eperm("denied");
    let mut events = s.daemon.wait_events(2, |_| true);
    for _ in 0..3 {
        if events.len() >= 2 {
            break;
        }
        events = s.daemon.wait_events(2, |_| true);
    }
    assert_eq!(events.len(), 2, "{events:?}\n{}", s.daemon.stderr_text());

    let file = std::fs::read_to_string(s.daemon.log_dir.join("events.jsonl")).expect("log");
    let mut stdout = s.daemon.stdout_text();
    for _ in 0..50 {
        if stdout.lines().count() >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        stdout = s.daemon.stdout_text();
    }
    assert_eq!(stdout, file, "stdout is not the log's lines");
    let verdicts: Vec<String> = stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("stdout line {l:?} is not JSON: {e}"));
            v["verdict"].as_str().expect("verdict").to_owned()
        })
        .collect();
    assert_eq!(verdicts, ["allowed", "blocked"]);
    assert!(
        s.daemon.stderr_text().contains("ollama-egress ready"),
        "the daemon's messages are not on stderr: {}",
        s.daemon.stderr_text()
    );
}
