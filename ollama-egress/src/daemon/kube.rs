//! `--pod-selector` in the daemon: waiting at start-up until this node runs the pod (a stop
//! signal ends the wait), then following it: a replacement pod (a new uid) is re-targeted as
//! soon as kubelet makes its cgroup.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{error, info, warn};

use super::{DaemonError, tasks::Signals};
use crate::targeting::{
    self, TargetSpec,
    kube::{self, ApiClient, KubeError, Lookup, PodSpec, PodTarget, follow::PodDirWatch},
};

/// What the start-up wait ended with.
pub(super) enum Waited {
    /// The target is not a pod.
    NotPod,
    /// A stop signal came first.
    Stopped,
    /// The pod, and the client that found it.
    Pod(Box<FoundPod>),
}

/// The pod found at start-up.
pub(super) struct FoundPod {
    pub(super) target: PodTarget,
    client: Arc<ApiClient>,
    spec: PodSpec,
    mount: PathBuf,
}

/// Looks once, off the async threads; the cgroup found is checked to be one under `mount`.
async fn look(client: &Arc<ApiClient>, spec: &PodSpec, mount: &Path) -> Result<Lookup, KubeError> {
    let (client, spec, mount) = (Arc::clone(client), spec.clone(), mount.to_owned());
    let r = tokio::task::spawn_blocking(move || {
        let found = kube::lookup(&client, &spec, &mount)?;
        Ok(match found {
            Lookup::Found(t) => match targeting::check_cgroup_dir(&t.cgroup, &mount) {
                Ok(cgroup) => Lookup::Found(PodTarget { cgroup, ..t }),
                // Removed between the look and the check.
                Err(_) => Lookup::NoCgroup(t.pod),
            },
            other => other,
        })
    })
    .await;
    r.unwrap_or_else(|e| {
        Err(KubeError::Request {
            url: String::new(),
            detail: format!("the lookup task failed: {e}"),
        })
    })
}

/// At start-up: waits until exactly one live pod matches and its cgroup exists. Several
/// matching pods and API errors end the start (nothing is attached yet: the operator fixes
/// the selector or the permissions); none is waited for.
pub(super) async fn wait_for_pod(
    target: &TargetSpec,
    mount: &Path,
    signals: &mut Signals,
) -> Result<Waited, DaemonError> {
    let TargetSpec::Pod(spec) = target else {
        return Ok(Waited::NotPod);
    };
    let node = spec
        .node()
        .map_err(targeting::TargetError::from)?
        .to_owned();
    let client = Arc::new(ApiClient::new(&spec.api).map_err(targeting::TargetError::from)?);
    info!(api = client.base(), node = %node, selector = %spec.selector, "looking for the pod");
    let mut watch = PodDirWatch::new(mount);
    let mut said = String::new();
    loop {
        let note = match look(&client, spec, mount)
            .await
            .map_err(targeting::TargetError::from)?
        {
            Lookup::Found(target) => {
                info!(
                    pod = %target.pod.key(),
                    uid = %target.pod.uid,
                    phase = %target.pod.phase,
                    cgroup = %target.cgroup.display(),
                    "found the pod"
                );
                return Ok(Waited::Pod(Box::new(FoundPod {
                    target,
                    client,
                    spec: spec.clone(),
                    mount: mount.to_owned(),
                })));
            }
            Lookup::Several(names) => {
                return Err(targeting::TargetError::from(KubeError::several(spec, &names)).into());
            }
            Lookup::NoPod => format!(
                "no running pod on node {node} matches {}: waiting for one",
                spec.selector
            ),
            Lookup::NoCgroup(pod) => format!(
                "pod {} (uid {}) has no cgroup under {} yet: waiting for kubelet to make it",
                pod.key(),
                pod.uid,
                mount.display()
            ),
        };
        if note != said {
            info!("{note}");
            said = note;
        }
        tokio::select! {
            () = signals.stopped() => return Ok(Waited::Stopped),
            () = watch.wait() => {}
        }
    }
}

/// Follows the pod: looks again whenever a pod cgroup comes or goes (and periodically), and
/// says when the daemon must move to another pod.
pub(super) struct PodFollow {
    rx: mpsc::Receiver<Result<Lookup, KubeError>>,
    task: JoinHandle<()>,
    /// The uid guarded now.
    current: String,
    /// What was last said about the lookups, so that each is said once.
    said: String,
}

impl PodFollow {
    /// Starts following from the pod found at start-up.
    pub(super) fn spawn(found: Box<FoundPod>) -> Self {
        let FoundPod {
            target,
            client,
            spec,
            mount,
        } = *found;
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(async move {
            let mut watch = PodDirWatch::new(&mount);
            loop {
                watch.wait().await;
                let r = look(&client, &spec, &mount).await;
                if tx.send(r).await.is_err() {
                    return;
                }
            }
        });
        Self {
            rx,
            task,
            current: target.pod.uid,
            said: String::new(),
        }
    }

    /// The next lookup.
    pub(super) async fn recv(&mut self) -> Result<Lookup, KubeError> {
        match self.rx.recv().await {
            Some(r) => r,
            None => std::future::pending().await,
        }
    }

    /// What a lookup means: `Some` a pod to move to; anything else is logged (once).
    pub(super) fn decide(&mut self, r: Result<Lookup, KubeError>) -> Option<PodTarget> {
        let (note, level_error) = match r {
            Ok(Lookup::Found(t)) if t.pod.uid != self.current => return Some(t),
            Ok(Lookup::Found(_)) => (String::new(), false),
            Ok(Lookup::NoPod) => (
                "the pod is gone and no other matches yet: the programs stay on its cgroup; the next matching pod is guarded from its cgroup's creation".to_owned(),
                false,
            ),
            Ok(Lookup::NoCgroup(p)) => (
                format!("pod {} matches; waiting for kubelet to make its cgroup", p.key()),
                false,
            ),
            Ok(Lookup::Several(names)) => (
                format!(
                    "several pods on this node match ({}): staying on the pod guarded now; narrow the selector",
                    names.join(", ")
                ),
                true,
            ),
            Err(e) => (format!("looking for the pod again failed (the pod guarded now stays): {e}"), true),
        };
        if note != self.said {
            match (note.is_empty(), level_error) {
                (true, _) => {}
                (false, true) => error!("{note}"),
                (false, false) => info!("{note}"),
            }
            self.said = note;
        }
        None
    }

    /// The daemon now guards `uid`.
    pub(super) fn moved_to(&mut self, uid: &str) {
        uid.clone_into(&mut self.current);
        self.said.clear();
    }
}

impl Drop for PodFollow {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Logs a move to a new pod.
pub(super) fn log_move(t: &PodTarget, result: &Result<(), DaemonError>) {
    match result {
        Ok(()) => warn!(
            pod = %t.pod.key(),
            uid = %t.pod.uid,
            cgroup = %t.cgroup.display(),
            "the pod was replaced: now guarding {}",
            t.describe()
        ),
        Err(e) => error!(
            pod = %t.pod.key(),
            "the pod was replaced, but attaching to {} failed (trying again at the next look): {e}",
            t.cgroup.display()
        ),
    }
}
