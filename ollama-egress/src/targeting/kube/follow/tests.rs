#![allow(clippy::unwrap_used)]

use std::time::Instant;

use super::*;

#[tokio::test]
async fn wakes_when_a_pod_cgroup_appears_or_goes() {
    let root = tempfile::tempdir().unwrap();
    let m = root.path();
    // Nothing of kubelet's yet: the mount itself is watched.
    let mut w = PodDirWatch::with_interval(m, Duration::from_secs(30));
    assert_eq!(w.watched(), &[m.to_path_buf()]);
    let kp = m.join("kubepods.slice");
    std::fs::create_dir(&kp).unwrap();
    let t = Instant::now();
    w.wait().await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "woke for kubepods.slice"
    );
    // Now kubepods.slice is watched too: a pod cgroup made there wakes it.
    assert!(w.watched().contains(&kp), "{:?}", w.watched());
    let pod = kp.join("kubepods-pod11111111_2222_3333_4444_555555555555.slice");
    let maker = {
        let pod = pod.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            std::fs::create_dir(&pod).unwrap();
        })
    };
    let t = Instant::now();
    w.wait().await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "woke for the pod cgroup"
    );
    maker.await.unwrap();
    std::fs::remove_dir(&pod).unwrap();
    let t = Instant::now();
    w.wait().await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "woke for the pod cgroup's removal"
    );
}

#[tokio::test]
async fn wakes_after_the_interval_without_events() {
    let root = tempfile::tempdir().unwrap();
    let mut w = PodDirWatch::with_interval(root.path(), Duration::from_millis(200));
    let t = Instant::now();
    w.wait().await;
    let e = t.elapsed();
    assert!(
        e >= Duration::from_millis(190) && e < Duration::from_secs(5),
        "{e:?}"
    );
}
