//! The API server's pod list (`GET /api/v1/pods`, a `PodList`) read into what targeting needs,
//! and the one pod a daemon guards picked from it.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{layout::QosClass, selector::Selector};

/// A pod, as far as targeting cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`: a new pod (a replacement) has a new one.
    pub uid: String,
    /// `spec.nodeName`, empty while unscheduled.
    pub node: String,
    /// `status.phase`: `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    pub phase: String,
    /// `status.qosClass`, when set.
    pub qos: Option<QosClass>,
    /// Whether `metadata.deletionTimestamp` is set: the pod is terminating.
    pub terminating: bool,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
}

impl Pod {
    /// `namespace/name`, as events and `status` name it.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether the pod is one to guard: scheduled, not terminating, and `Running` or `Pending`
    /// (kubelet makes a pending pod's cgroup before its containers start, so guarding it from
    /// then on judges the container's first connection).
    pub fn live(&self) -> bool {
        !self.terminating && matches!(self.phase.as_str(), "Running" | "Pending")
    }
}

/// What the list holds for one node and selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Exactly one live pod matches.
    One(Pod),
    /// None does (yet).
    None,
    /// Several do: the daemon guards one cgroup, so it refuses to choose. Their `namespace/name`s,
    /// sorted.
    Several(Vec<String>),
}

/// The live pods on `node` (in `namespace`, when given) that `selector` matches (the API
/// filtered already; this checks again, so that an answer for other pods never becomes a
/// target).
pub fn pick(pods: &[Pod], selector: &Selector, node: &str, namespace: Option<&str>) -> Pick {
    let mut live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.node == node && p.live() && selector.matches(&p.labels))
        .filter(|p| namespace.is_none_or(|ns| p.namespace == ns))
        .collect();
    live.sort_by_key(|p| p.key());
    match live.as_slice() {
        [] => Pick::None,
        [one] => Pick::One((*one).clone()),
        many => Pick::Several(many.iter().map(|p| p.key()).collect()),
    }
}

#[derive(Deserialize)]
struct ListJson {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    items: Option<Vec<PodJson>>,
}

#[derive(Deserialize)]
struct PodJson {
    metadata: MetaJson,
    #[serde(default)]
    spec: SpecJson,
    #[serde(default)]
    status: StatusJson,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaJson {
    name: String,
    #[serde(default)]
    namespace: String,
    uid: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    deletion_timestamp: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecJson {
    #[serde(default)]
    node_name: String,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusJson {
    #[serde(default)]
    phase: String,
    #[serde(default)]
    qos_class: Option<String>,
}

/// Parses a `PodList`. A body of another kind (a `Status`, say) or pods without a name or
/// uid is an error saying what it is.
pub fn parse_pod_list(json: &[u8]) -> Result<Vec<Pod>, String> {
    let list: ListJson = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    match list.kind.as_deref() {
        Some("PodList") | None => {}
        Some(other) => return Err(format!("a {other}, not a PodList")),
    }
    let items = list.items.ok_or("a PodList without items")?;
    items
        .into_iter()
        .map(|p| {
            if p.metadata.uid.is_empty() || p.metadata.name.is_empty() {
                return Err("a pod without a name or uid".to_owned());
            }
            let qos =
                match p.status.qos_class.as_deref() {
                    None | Some("") => None,
                    Some(q) => Some(QosClass::from_api(q).ok_or_else(|| {
                        format!("pod {}: unknown qosClass {q:?}", p.metadata.name)
                    })?),
                };
            Ok(Pod {
                namespace: p.metadata.namespace,
                name: p.metadata.name,
                uid: p.metadata.uid,
                node: p.spec.node_name,
                phase: p.status.phase,
                qos,
                terminating: p.metadata.deletion_timestamp.is_some(),
                labels: p.metadata.labels,
            })
        })
        .collect()
}

/// The `message` of a `Status` body (what the API server says on an error), when it is one.
pub fn status_message(json: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct StatusBody {
        kind: String,
        #[serde(default)]
        message: String,
    }
    let s: StatusBody = serde_json::from_slice(json).ok()?;
    (s.kind == "Status" && !s.message.is_empty()).then_some(s.message)
}

#[cfg(test)]
mod tests;
