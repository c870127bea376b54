//! The resolver's learn-only programs: attached to `--dns-cgroup`, pinned in enforce mode,
//! re-adopted by a restarted daemon without a second copy, removed by `detach`; a missing
//! resolver cgroup or unit is a clear error.

use std::{path::Path, process::Command};

use ollama_egress::loader::{AttachPoint, attached_program_ids};
use ollama_egress_tests::{Scenario, ScenarioSpec, TestCgroup, daemon_bin, require_root, unique};

const POLICY: &str = "default = \"deny\"\n[allow]\ndomains = [\"registry.ollama.ai\"]\n";

fn attached(cg: &Path) -> (usize, usize) {
    let n = |p| attached_program_ids(cg, p).expect("query").len();
    (n(AttachPoint::Egress), n(AttachPoint::Ingress))
}

#[test]
fn resolver_programs_are_pinned_readopted_and_detached() {
    require_root();
    let resolver = TestCgroup::new("oe-rslv");
    let path = resolver.path.display().to_string();
    let extra = ["--dns-cgroup", path.as_str()];
    let mut s = Scenario::start(ScenarioSpec {
        extra: &extra,
        ..ScenarioSpec::new("oe-rlnk", &["198.51.100.1"], "--enforce", POLICY)
    });
    assert_eq!(
        attached(&resolver.path),
        (1, 1),
        "dns_egress and dns_ingress"
    );
    for name in ["dns_egress", "dns_ingress"] {
        let pin = s.daemon.pin_dir.join("links").join(name);
        assert!(pin.exists(), "{} is pinned", pin.display());
    }
    assert!(
        s.daemon
            .stderr_text()
            .contains("learning names from the resolver's cgroup too"),
        "{}",
        s.daemon.stderr_text()
    );
    // Still attached without a daemon; a restart re-adopts the pinned links, no second copy.
    s.daemon.kill9();
    assert_eq!(
        attached(&resolver.path),
        (1, 1),
        "pinned links outlive the daemon"
    );
    let args = s.args.clone();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let second = s.daemon.restart(&args);
    assert_eq!(attached(&resolver.path), (1, 1), "re-adopted, not doubled");
    ollama_egress_tests::detach(&second.pin_dir);
    assert_eq!(
        attached(&resolver.path),
        (0, 0),
        "detach removes the resolver links"
    );
    drop(second);
}

#[test]
fn a_missing_resolver_cgroup_or_unit_is_named() {
    require_root();
    let target = TestCgroup::new("oe-rmiss");
    let tmp = tempfile::tempdir().expect("tempdir");
    let pin_dir = Path::new("/sys/fs/bpf").join(unique("oe-test"));
    let run = |flag: &str, value: &str| {
        let out = Command::new(daemon_bin())
            .args(["run", "--monitor", "--cgroup"])
            .arg(&target.path)
            .args([flag, value, "--metrics-addr", "127.0.0.1:0", "--log-dir"])
            .arg(tmp.path())
            .arg("--pin-dir")
            .arg(&pin_dir)
            .output()
            .expect("run");
        assert!(
            !out.status.success(),
            "{flag} {value}: the daemon must refuse to start"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = unique("oe-no-such-cgroup");
    let err = run("--dns-cgroup", &missing);
    assert!(err.contains(&format!("{missing} does not exist")), "{err}");
    let err = run("--dns-unit", "no-such-resolver.service");
    assert!(
        err.contains("--dns-unit no-such-resolver.service: no cgroup"),
        "{err}"
    );
    let err = run("--dns-min-ttl", "0");
    assert!(err.contains("--dns-min-ttl"), "{err}");
    assert!(!pin_dir.exists(), "a refused start leaves no pins");
}
