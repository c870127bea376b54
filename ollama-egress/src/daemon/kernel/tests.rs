use std::path::Path;

use super::*;

#[test]
fn relative_cgroups_are_taken_from_the_root_and_missing_ones_named() {
    let mount = tempfile::tempdir().expect("tempdir");
    let cg = mount.path().join("ollama");
    std::fs::create_dir(&cg).expect("mkdir");
    std::fs::write(cg.join("cgroup.procs"), "").expect("cgroup.procs");
    let got = resolve_cgroup(Path::new("ollama"), mount.path()).expect("relative");
    assert_eq!(got, cg.canonicalize().expect("canon"));
    let err = resolve_cgroup(Path::new("gone"), mount.path()).expect_err("missing");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "cgroup {} does not exist",
            mount.path().join("gone").display()
        )),
        "{text}"
    );
    let err = resolve_cgroup(mount.path(), Path::new("/nonexistent-mount")).expect_err("x");
    assert!(
        err.to_string().contains("not a cgroup v2 directory"),
        "{err}"
    );
}
