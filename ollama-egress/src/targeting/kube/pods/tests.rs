#![allow(clippy::unwrap_used)]

use super::*;

const NODE_PODS: &str = include_str!("fixtures/node_pods.json");
const ROLLOUT: &str = include_str!("fixtures/rollout.json");
const EMPTY: &str = include_str!("fixtures/empty.json");
const FORBIDDEN: &str = include_str!("fixtures/forbidden.json");

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

#[test]
fn reads_a_node_pod_list() {
    let pods = parse_pod_list(NODE_PODS.as_bytes()).unwrap();
    assert_eq!(pods.len(), 4);
    let p = &pods[0];
    assert_eq!(p.key(), "ai/ollama-7f9c6d5b8-x2kqp");
    assert_eq!(p.uid, "4b8c2f1e-9a3d-4e5f-8a7b-6c5d4e3f2a1b");
    assert_eq!(p.node, "worker-1");
    assert_eq!(p.phase, "Running");
    assert_eq!(p.qos, Some(QosClass::Burstable));
    assert!(!p.terminating && p.live());
    assert_eq!(
        p.labels
            .get("app.kubernetes.io/instance")
            .map(String::as_str),
        Some("llm")
    );
    assert_eq!(pods[1].qos, Some(QosClass::Guaranteed));
    assert_eq!(pods[2].qos, Some(QosClass::BestEffort));
    assert_eq!(pods[2].phase, "Succeeded");
    assert!(!pods[2].live(), "a finished pod is not guarded");
    assert!(
        pods[3].terminating && !pods[3].live(),
        "a terminating pod is not guarded"
    );
}

#[test]
fn picks_the_one_live_pod() {
    let pods = parse_pod_list(NODE_PODS.as_bytes()).unwrap();
    // The terminating pod has the same labels: it does not count.
    match pick(
        &pods,
        &sel("app.kubernetes.io/name=ollama,app.kubernetes.io/instance=llm"),
        "worker-1",
        None,
    ) {
        Pick::One(p) => assert_eq!(p.name, "ollama-7f9c6d5b8-x2kqp"),
        other => panic!("{other:?}"),
    }
    match pick(
        &pods,
        &sel("statefulset.kubernetes.io/pod-name"),
        "worker-1",
        None,
    ) {
        Pick::One(p) => assert_eq!(p.qos, Some(QosClass::Guaranteed)),
        other => panic!("{other:?}"),
    }
    // Finished pods never are targets.
    assert_eq!(
        pick(
            &pods,
            &sel("app.kubernetes.io/name=model-pull"),
            "worker-1",
            None
        ),
        Pick::None
    );
    // Pods of other nodes are not this daemon's, even when the API answered with them.
    assert_eq!(
        pick(
            &pods,
            &sel("app.kubernetes.io/name=ollama"),
            "worker-2",
            None
        ),
        Pick::None
    );
}

#[test]
fn a_namespace_narrows_the_match() {
    let pods = parse_pod_list(ROLLOUT.as_bytes()).unwrap();
    let s = sel("app.kubernetes.io/name");
    assert!(matches!(
        pick(&pods, &s, "worker-1", None),
        Pick::Several(_)
    ));
    match pick(&pods, &s, "worker-1", Some("default")) {
        Pick::One(p) => assert_eq!(p.key(), "default/ollama-besteffort"),
        other => panic!("{other:?}"),
    }
    assert_eq!(pick(&pods, &s, "worker-1", Some("other")), Pick::None);
}

#[test]
fn several_matches_are_named() {
    let pods = parse_pod_list(NODE_PODS.as_bytes()).unwrap();
    assert_eq!(
        pick(
            &pods,
            &sel("app.kubernetes.io/name=ollama"),
            "worker-1",
            None
        ),
        Pick::Several(vec![
            "ai/ollama-7f9c6d5b8-x2kqp".to_owned(),
            "ai/ollama-gpu-0".to_owned()
        ])
    );
}

#[test]
fn a_pending_replacement_is_picked_over_the_terminating_pod() {
    let pods = parse_pod_list(ROLLOUT.as_bytes()).unwrap();
    assert_eq!(pods[1].phase, "Pending");
    match pick(
        &pods,
        &sel("app.kubernetes.io/name=ollama"),
        "worker-1",
        None,
    ) {
        Pick::One(p) => {
            assert_eq!(p.uid, "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9");
            assert_eq!(p.qos, Some(QosClass::Burstable));
        }
        other => panic!("{other:?}"),
    }
    match pick(
        &pods,
        &sel("app.kubernetes.io/name in (ollama-dev)"),
        "worker-1",
        None,
    ) {
        Pick::One(p) => assert_eq!(p.qos, Some(QosClass::BestEffort)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn empty_lists_and_errors() {
    assert_eq!(parse_pod_list(EMPTY.as_bytes()).unwrap(), vec![]);
    let e = parse_pod_list(FORBIDDEN.as_bytes()).unwrap_err();
    assert!(e.contains("a Status, not a PodList"), "{e}");
    assert!(
        status_message(FORBIDDEN.as_bytes())
            .unwrap()
            .contains("cannot list resource \"pods\"")
    );
    assert_eq!(status_message(NODE_PODS.as_bytes()), None);
    assert!(
        parse_pod_list(b"{\"kind\":\"PodList\"").is_err(),
        "truncated JSON"
    );
    assert!(parse_pod_list(b"<html>").is_err());
    assert!(
        parse_pod_list(b"{\"kind\":\"PodList\"}")
            .unwrap_err()
            .contains("without items")
    );
    let no_uid = br#"{"kind":"PodList","items":[{"metadata":{"name":"a","uid":""}}]}"#;
    assert!(
        parse_pod_list(no_uid)
            .unwrap_err()
            .contains("without a name or uid")
    );
    let bad_qos = br#"{"kind":"PodList","items":[{"metadata":{"name":"a","uid":"u"},"status":{"qosClass":"Platinum"}}]}"#;
    assert!(parse_pod_list(bad_qos).unwrap_err().contains("Platinum"));
}
