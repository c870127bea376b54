#![allow(clippy::unwrap_used)]

use super::*;

fn spec(node: Option<&str>) -> PodSpec {
    PodSpec {
        selector: Selector::parse("app=ollama").unwrap(),
        node: node.map(str::to_owned),
        namespace: None,
        api: ApiSpec::default(),
    }
}

#[test]
fn node_name_is_required_and_checked() {
    let e = spec(None).node().unwrap_err();
    assert!(
        e.to_string().contains("--node-name") && e.to_string().contains("NODE_NAME"),
        "{e}"
    );
    assert_eq!(
        spec(Some("worker-1.example")).node().unwrap(),
        "worker-1.example"
    );
    for bad in ["", "Worker", "a/b", "a..b", "a&b=c"] {
        assert!(
            matches!(spec(Some(bad)).node(), Err(KubeError::BadNodeName { .. })),
            "{bad}"
        );
    }
}

#[test]
fn namespace_is_checked() {
    let mut s = spec(Some("n1"));
    assert_eq!(s.namespace().unwrap(), None);
    s.namespace = Some("ai-prod".into());
    assert_eq!(s.namespace().unwrap(), Some("ai-prod"));
    for bad in ["", "AI", "a/b", "-a", "a-", "a.b", &"x".repeat(64)] {
        s.namespace = Some(bad.to_owned());
        assert!(
            matches!(s.namespace(), Err(KubeError::BadNamespace { .. })),
            "{bad}"
        );
    }
}

#[test]
fn several_pods_error_says_how_to_narrow() {
    let e = KubeError::several(&spec(Some("n1")), &["ai/a".to_owned(), "ai/b".to_owned()]);
    let t = e.to_string();
    assert!(t.contains("2 running pods on node n1"), "{t}");
    assert!(t.contains("ai/a, ai/b"), "{t}");
    assert!(t.contains("narrow the selector"), "{t}");
}

#[test]
fn describes_the_pod() {
    let t = PodTarget {
        pod: Pod {
            namespace: "ai".into(),
            name: "ollama-0".into(),
            uid: "4b8c2f1e-9a3d-4e5f-8a7b-6c5d4e3f2a1b".into(),
            node: "n1".into(),
            phase: "Running".into(),
            qos: Some(QosClass::Guaranteed),
            terminating: false,
            labels: Default::default(),
        },
        cgroup: PathBuf::from("/sys/fs/cgroup/kubepods.slice/x"),
    };
    assert_eq!(
        t.describe(),
        "pod ai/ollama-0 (uid 4b8c2f1e-9a3d-4e5f-8a7b-6c5d4e3f2a1b, Guaranteed)"
    );
}
