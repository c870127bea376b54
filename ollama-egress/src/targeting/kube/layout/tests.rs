#![allow(clippy::unwrap_used)]

use super::*;

const UID: &str = "4b8c2f1e-9a3d-4e5f-8a7b-6c5d4e3f2a1b";
const CID: &str = "8d3f9a1c2b4e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";

#[test]
fn pod_paths_for_both_drivers() {
    let s = |q| pod_cgroup_path(Driver::Systemd, UID, q);
    let c = |q| pod_cgroup_path(Driver::Cgroupfs, UID, q);
    let u = UID.replace('-', "_");
    assert_eq!(
        s(QosClass::Burstable),
        PathBuf::from(format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice"
        ))
    );
    assert_eq!(
        s(QosClass::BestEffort),
        PathBuf::from(format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice"
        ))
    );
    assert_eq!(
        s(QosClass::Guaranteed),
        PathBuf::from(format!("kubepods.slice/kubepods-pod{u}.slice"))
    );
    assert_eq!(
        c(QosClass::Burstable),
        PathBuf::from(format!("kubepods/burstable/pod{UID}"))
    );
    assert_eq!(
        c(QosClass::BestEffort),
        PathBuf::from(format!("kubepods/besteffort/pod{UID}"))
    );
    assert_eq!(
        c(QosClass::Guaranteed),
        PathBuf::from(format!("kubepods/pod{UID}"))
    );
}

#[test]
fn container_dir_names() {
    let d = |drv, r| container_dir_name(drv, r, CID);
    assert_eq!(
        d(Driver::Systemd, Runtime::Containerd),
        format!("cri-containerd-{CID}.scope")
    );
    assert_eq!(
        d(Driver::Systemd, Runtime::Crio),
        format!("crio-{CID}.scope")
    );
    assert_eq!(
        d(Driver::Systemd, Runtime::Docker),
        format!("docker-{CID}.scope")
    );
    assert_eq!(d(Driver::Cgroupfs, Runtime::Unnamed), CID);
    assert_eq!(d(Driver::Cgroupfs, Runtime::Crio), format!("crio-{CID}"));
}

#[test]
fn reads_every_layout_back() {
    for driver in [Driver::Systemd, Driver::Cgroupfs] {
        for qos in [
            QosClass::Guaranteed,
            QosClass::Burstable,
            QosClass::BestEffort,
        ] {
            let runtimes: &[Runtime] = match driver {
                Driver::Systemd => &[Runtime::Containerd, Runtime::Crio, Runtime::Docker],
                Driver::Cgroupfs => &[Runtime::Unnamed, Runtime::Crio],
            };
            for &runtime in runtimes {
                let pod = pod_cgroup_path(driver, UID, qos);
                let line = format!(
                    "12:memory:/whatever\n0::/{}/{}\n",
                    pod.display(),
                    container_dir_name(driver, runtime, CID)
                );
                let got = parse_proc_cgroup(&line).unwrap_or_else(|| panic!("{line}"));
                assert_eq!(
                    got,
                    PodCgroup {
                        driver,
                        qos,
                        uid: UID.to_owned(),
                        path: pod.display().to_string(),
                        container: Some(ContainerCgroup {
                            runtime,
                            id: CID.to_owned()
                        }),
                    },
                    "{line}"
                );
            }
            // The pod cgroup itself (the pause process, or a process moved there).
            let pod = pod_cgroup_path(driver, UID, qos);
            let got = parse_cgroup_path(&format!("/{}", pod.display())).unwrap();
            assert_eq!(got.container, None);
            assert_eq!((got.driver, got.qos, got.uid.as_str()), (driver, qos, UID));
        }
    }
}

#[test]
fn nested_kubelet_roots() {
    // kind: kubelet under its own slice; the QoS words carry the prefix.
    let u = UID.replace('-', "_");
    let path = format!(
        "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{u}.slice/cri-containerd-{CID}.scope"
    );
    let got = parse_cgroup_path(&path).unwrap();
    assert_eq!(got.qos, QosClass::BestEffort);
    assert_eq!(got.uid, UID);
    assert_eq!(
        got.path,
        format!(
            "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{u}.slice"
        )
    );
    // cgroupfs with a --cgroup-root.
    let got = parse_cgroup_path(&format!("/node/kubepods/pod{UID}/{CID}")).unwrap();
    assert_eq!(
        (got.driver, got.qos),
        (Driver::Cgroupfs, QosClass::Guaranteed)
    );
    assert_eq!(got.path, format!("node/kubepods/pod{UID}"));
}

#[test]
fn not_a_pod() {
    for path in [
        "/",
        "/system.slice/ollama.service",
        "/docker/8d3f9a1c2b4e",
        "/system.slice/docker-8d3f9a1c2b4e.scope",
        // A directory named like a pod outside kubepods (cgroupfs naming).
        &format!("/user.slice/pod{UID}"),
        // Not a uid.
        "/kubepods/podnot-a-uid",
        "/kubepods.slice/kubepods-pod.slice",
        "/kubepods.slice/kubepods-podxyz.slice",
        // Other slices ending in -pod<hex>.
        "/system.slice/foo-pod0123456789.slice",
        &format!("/kubepods/../kubepods/pod{UID}"),
    ] {
        assert_eq!(parse_cgroup_path(path), None, "{path}");
    }
    assert_eq!(parse_proc_cgroup("1:name=systemd:/kubepods/podx\n"), None);
}

#[test]
fn container_dirs_that_are_not_containers() {
    let pod = pod_cgroup_path(Driver::Systemd, UID, QosClass::Burstable);
    for name in [
        "crio-conmon-8d3f9a1c2b4e.scope",
        "cri-containerd-xyz.scope",
        "docker-.scope",
        "abc",
        "8d3f9a1c2b4e.scope",
    ] {
        let got = parse_cgroup_path(&format!("{}/{name}", pod.display())).unwrap();
        assert_eq!(got.container, None, "{name}");
        assert_eq!(got.uid, UID);
    }
}

#[test]
fn qos_words_from_the_api() {
    assert_eq!(QosClass::from_api("Guaranteed"), Some(QosClass::Guaranteed));
    assert_eq!(QosClass::from_api("Burstable"), Some(QosClass::Burstable));
    assert_eq!(QosClass::from_api("BestEffort"), Some(QosClass::BestEffort));
    assert_eq!(QosClass::from_api("besteffort"), None);
    assert_eq!(QosClass::from_api(""), None);
}

fn mkpod(root: &Path, rel: &Path) -> PathBuf {
    let p = root.join(rel);
    fs::create_dir_all(&p).unwrap();
    fs::write(p.join("cgroup.procs"), "").unwrap();
    p
}

#[test]
fn finds_pods_on_fixture_trees() {
    let root = tempfile::tempdir().unwrap();
    let m = root.path();
    assert_eq!(find_pod_cgroup(m, UID, QosClass::Burstable), None);
    assert!(pod_parent_dirs(m).is_empty());
    let sys = mkpod(
        m,
        &pod_cgroup_path(Driver::Systemd, UID, QosClass::Burstable),
    );
    assert_eq!(
        find_pod_cgroup(m, UID, QosClass::Burstable),
        Some(sys.clone())
    );
    // Another pod of another class is not this one.
    let other = "11111111-2222-3333-4444-555555555555";
    mkpod(
        m,
        &pod_cgroup_path(Driver::Systemd, other, QosClass::Guaranteed),
    );
    assert_eq!(
        find_pod_cgroup(m, other, QosClass::Guaranteed),
        Some(m.join(pod_cgroup_path(
            Driver::Systemd,
            other,
            QosClass::Guaranteed
        )))
    );
    // A wrong QoS class still finds the pod by searching.
    assert_eq!(find_pod_cgroup(m, UID, QosClass::BestEffort), Some(sys));
    assert_eq!(
        pod_parent_dirs(m),
        vec![
            m.join("kubepods.slice"),
            m.join("kubepods.slice/kubepods-burstable.slice")
        ]
    );
    // Bad uids find nothing, even when a directory has that name.
    fs::create_dir_all(m.join("kubepods/pod..")).unwrap();
    assert_eq!(find_pod_cgroup(m, "..", QosClass::Guaranteed), None);
}

#[test]
fn finds_cgroupfs_and_nested_pods() {
    let root = tempfile::tempdir().unwrap();
    let m = root.path();
    let c = mkpod(
        m,
        &pod_cgroup_path(Driver::Cgroupfs, UID, QosClass::BestEffort),
    );
    assert_eq!(find_pod_cgroup(m, UID, QosClass::BestEffort), Some(c));
    let other = "11111111-2222-3333-4444-555555555555";
    let u = other.replace('-', "_");
    let nested = mkpod(
        m,
        Path::new(&format!(
            "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{u}.slice"
        )),
    );
    assert_eq!(find_pod_cgroup(m, other, QosClass::Burstable), Some(nested));
}
