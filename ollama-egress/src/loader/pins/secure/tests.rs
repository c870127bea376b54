use super::*;

fn st(uid: u32, mode: u32) -> libc::stat {
    // SAFETY: a plain C struct; all-zero is a valid value.
    let mut s: libc::stat = unsafe { std::mem::zeroed() };
    s.st_uid = uid;
    s.st_mode = libc::S_IFDIR | mode;
    s
}

#[test]
fn only_root_owned_closed_or_sticky_directories_pass() {
    assert_eq!(dir_problem(&st(0, 0o700)), None);
    assert_eq!(dir_problem(&st(0, 0o755)), None);
    // A bpffs root mounted without `mode=`.
    assert_eq!(dir_problem(&st(0, 0o1777)), None);
    let planted = dir_problem(&st(65534, 0o755)).expect("planted");
    assert!(planted.contains("owned by uid 65534"), "{planted}");
    let open = dir_problem(&st(0, 0o777)).expect("open");
    assert!(
        open.contains("writable by group or others (mode 0777)"),
        "{open}"
    );
    assert!(dir_problem(&st(0, 0o770)).is_some());
}

#[test]
fn a_path_off_bpffs_is_reported_as_such() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(open_dir(dir.path(), true).expect("walk").is_none());
    assert!(
        open_dir(&dir.path().join("missing"), true)
            .expect("walk")
            .is_none()
    );
    assert!(open_dir(Path::new("relative"), false).is_err());
}
