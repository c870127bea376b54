use super::*;

#[test]
fn finds_hybrid_mount() {
    let text = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
    assert_eq!(
        parse_cgroup2_mount(text),
        Some(PathBuf::from("/sys/fs/cgroup/unified"))
    );
}

#[test]
fn finds_unified_mount_with_optional_fields() {
    let text = "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
    assert_eq!(
        parse_cgroup2_mount(text),
        Some(PathBuf::from("/sys/fs/cgroup"))
    );
}

#[test]
fn unescapes_spaces() {
    let text = "41 31 0:38 / /mnt/my\\040cgroup rw - cgroup2 cgroup2 rw\n";
    assert_eq!(
        parse_cgroup2_mount(text),
        Some(PathBuf::from("/mnt/my cgroup"))
    );
}

#[test]
fn no_cgroup2() {
    let text = "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n";
    assert_eq!(parse_cgroup2_mount(text), None);
}

#[test]
fn rejects_path_outside_hierarchy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = check_cgroup_dir(Path::new("/tmp"), dir.path()).expect_err("not a cgroup");
    assert!(
        err.to_string().contains("is not a cgroup v2 directory"),
        "{err}"
    );
}

#[test]
fn finds_unit_in_a_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = dir.path().join("system.slice/ollama.service");
    fs::create_dir_all(&unit).expect("mkdir");
    assert_eq!(
        find_unit_cgroup(dir.path(), "ollama.service").expect("found"),
        unit
    );
    assert_eq!(find_unit_cgroup(dir.path(), "ollama").expect("found"), unit);
    let err = find_unit_cgroup(dir.path(), "nope.service").expect_err("absent");
    assert!(err.to_string().contains("nope.service"), "{err}");
}
