//! `--pod-selector`: the one Ollama pod on this Kubernetes node, found through the API server
//! ([`api`], [`pods`], [`selector`]), and its pod-level cgroup ([`layout`]), which outlives the
//! restarts of the containers inside it. [`follow`] wakes when pod cgroups come and go.

pub mod api;
pub mod follow;
pub mod layout;
pub mod pods;
pub mod selector;

use std::{
    io,
    path::{Path, PathBuf},
};

pub use api::{ApiClient, ApiSpec};
pub use layout::{PodCgroup, QosClass, find_pod_cgroup, parse_proc_cgroup};
pub use pods::{Pick, Pod};
pub use selector::{Selector, SelectorError};

/// The environment variable `--node-name` defaults to (the downward API's `spec.nodeName`).
pub const NODE_NAME_ENV: &str = "NODE_NAME";

/// `--pod-selector` and what goes with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSpec {
    /// Which pods.
    pub selector: Selector,
    /// This node's name; `None` when neither `--node-name` nor `NODE_NAME` gave one.
    pub node: Option<String>,
    /// Only pods of this namespace (`--pod-namespace`); `None`: every namespace.
    pub namespace: Option<String>,
    /// How to reach the API server.
    pub api: ApiSpec,
}

impl PodSpec {
    /// The node's name, checked.
    pub fn node(&self) -> Result<&str, KubeError> {
        let node = self.node.as_deref().ok_or(KubeError::NoNodeName)?;
        let ok = !node.is_empty()
            && node.len() <= 253
            && node.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
        if !ok {
            return Err(KubeError::BadNodeName {
                name: node.to_owned(),
            });
        }
        Ok(node)
    }

    /// The namespace, checked (a DNS label), when one is given.
    pub fn namespace(&self) -> Result<Option<&str>, KubeError> {
        let Some(ns) = self.namespace.as_deref() else {
            return Ok(None);
        };
        let b = ns.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 63
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-';
        if !ok {
            return Err(KubeError::BadNamespace {
                name: ns.to_owned(),
            });
        }
        Ok(Some(ns))
    }
}

/// The pod found and the cgroup it runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodTarget {
    /// The pod.
    pub pod: Pod,
    /// Its pod-level cgroup v2 directory.
    pub cgroup: PathBuf,
}

impl PodTarget {
    /// How the target is shown: `pod NAMESPACE/NAME (uid UID, QOS)`.
    pub fn describe(&self) -> String {
        let qos = self
            .pod
            .qos
            .map_or_else(|| "no QoS class".to_owned(), |q| q.to_string());
        format!("pod {} (uid {}, {qos})", self.pod.key(), self.pod.uid)
    }
}

/// What one look at the API server and the cgroup tree found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The pod and its cgroup.
    Found(PodTarget),
    /// No live pod on this node matches.
    NoPod,
    /// The pod is known but kubelet has not made its cgroup (yet).
    NoCgroup(Pod),
    /// Several match: their `namespace/name`s.
    Several(Vec<String>),
}

/// Lists the pods, picks the one, finds its cgroup under `mount` (blocking).
pub fn lookup(client: &ApiClient, spec: &PodSpec, mount: &Path) -> Result<Lookup, KubeError> {
    let node = spec.node()?;
    let namespace = spec.namespace()?;
    let pods = client.list_pods(&spec.selector, node, namespace)?;
    Ok(match pods::pick(&pods, &spec.selector, node, namespace) {
        Pick::One(pod) => {
            let qos = pod.qos.unwrap_or(QosClass::Burstable);
            match find_pod_cgroup(mount, &pod.uid, qos) {
                Some(cgroup) => Lookup::Found(PodTarget { pod, cgroup }),
                None => Lookup::NoCgroup(pod),
            }
        }
        Pick::None => Lookup::NoPod,
        Pick::Several(names) => Lookup::Several(names),
    })
}

/// Errors of finding the pod.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// `--pod-selector` without a node name.
    #[error(
        "--pod-selector needs this node's name: pass --node-name NAME or set {NODE_NAME_ENV} (in a DaemonSet, from the downward API: env NODE_NAME valueFrom fieldRef spec.nodeName)"
    )]
    NoNodeName,
    /// The node name is not a DNS subdomain.
    #[error(
        "node name {name:?} is not a Kubernetes node name (lower-case letters, digits, `-`, `.`)"
    )]
    BadNodeName {
        /// The name given.
        name: String,
    },
    /// The namespace is not a DNS label.
    #[error(
        "namespace {name:?} is not a Kubernetes namespace name (lower-case letters, digits, `-`)"
    )]
    BadNamespace {
        /// The name given.
        name: String,
    },
    /// No API server URL and not in a pod.
    #[error(
        "no Kubernetes API server: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (they are in every pod); run the daemon in the cluster (see deploy/) or pass --kube-api https://HOST:PORT"
    )]
    NotInCluster,
    /// An `http://` API URL without the test flag.
    #[error("--kube-api {url} is not https: the service account token would travel in the clear")]
    InsecureUrl {
        /// The URL.
        url: String,
    },
    /// The API URL does not parse.
    #[error("--kube-api {url:?}: {detail}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        detail: String,
    },
    /// Reading the service account's token or CA failed.
    #[error(
        "reading the service account's {path}: {source} (is a service account token mounted? automountServiceAccountToken must not be false)"
    )]
    ServiceAccount {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The token file holds no token.
    #[error("the service account token {path} is empty or not a token")]
    BadToken {
        /// The file.
        path: PathBuf,
    },
    /// The CA file holds no certificate.
    #[error("the service account CA {path} holds no PEM certificate")]
    NoCaCert {
        /// The file.
        path: PathBuf,
    },
    /// The API server refused the token (401) or the permission (403).
    #[error(
        "the API server refused to list pods ({url}: HTTP {status}: {message}): grant list/watch on pods to the daemon's service account: see deploy/"
    )]
    Refused {
        /// The request's URL.
        url: String,
        /// 401 or 403.
        status: u16,
        /// What the server said.
        message: String,
    },
    /// Another HTTP status.
    #[error("listing pods at {url}: HTTP {status}: {message}")]
    Status {
        /// The request's URL.
        url: String,
        /// The status.
        status: u16,
        /// What the server said.
        message: String,
    },
    /// Connecting, sending or reading failed, or timed out.
    #[error("listing pods at {url}: {detail}")]
    Request {
        /// The request's URL.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// The answer is larger than the cap.
    #[error("listing pods at {url}: the answer exceeds {limit} bytes; narrow --pod-selector")]
    TooLarge {
        /// The request's URL.
        url: String,
        /// The cap.
        limit: u64,
    },
    /// The answer is not a pod list.
    #[error("listing pods at {url}: the answer is not a pod list: {detail}")]
    BadJson {
        /// The request's URL.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Several pods match on this node.
    #[error(
        "{count} running pods on node {node} match --pod-selector {selector:?}: {pods}; a daemon guards one pod (one cgroup): narrow the selector with a label only the Ollama pod has (e.g. add `,app.kubernetes.io/instance=NAME` or `,statefulset.kubernetes.io/pod-name=NAME`), pass --pod-namespace, or run one Ollama pod per node"
    )]
    SeveralPods {
        /// How many.
        count: usize,
        /// This node.
        node: String,
        /// The selector.
        selector: String,
        /// Their `namespace/name`s, comma-joined.
        pods: String,
    },
}

impl KubeError {
    /// The error for several matching pods.
    pub fn several(spec: &PodSpec, names: &[String]) -> Self {
        Self::SeveralPods {
            count: names.len(),
            node: spec.node.clone().unwrap_or_default(),
            selector: spec.selector.to_string(),
            pods: names.join(", "),
        }
    }
}

#[cfg(test)]
mod tests;
