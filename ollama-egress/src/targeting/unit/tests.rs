use std::fs;

use super::*;

fn tree(dirs: &[&str]) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    for d in dirs {
        fs::create_dir_all(root.path().join(d)).expect("mkdir");
    }
    root
}

#[test]
fn slice_names() {
    assert_eq!(slice_of("ollama.service").as_deref(), Some("ollama.slice"));
    assert_eq!(slice_of("ollama.slice"), None);
    assert_eq!(slice_of(".service"), None);
    assert_eq!(unit_name("ollama"), "ollama.service");
    assert_eq!(unit_name("ollama.service"), "ollama.service");
}

#[test]
fn a_unit_in_its_slice_is_covered_at_the_slice() {
    let root = tree(&["ollama.slice/ollama.service", "system.slice/other.service"]);
    let t = resolve_unit(root.path(), "ollama").expect("found");
    assert_eq!(t.cgroup, root.path().join("ollama.slice"));
    assert_eq!(t.restarts, Restarts::Covered);
    assert_eq!(t.unit, "ollama.service");
}

#[test]
fn a_stopped_unit_with_its_slice_is_covered_at_the_slice() {
    let root = tree(&["ollama.slice", "system.slice/other.service"]);
    let t = resolve_unit(root.path(), "ollama.service").expect("found");
    assert_eq!(t.cgroup, root.path().join("ollama.slice"));
    assert_eq!(t.restarts, Restarts::Covered);
}

#[test]
fn a_unit_elsewhere_is_followed_at_its_own_cgroup() {
    // The slice exists too, but the unit runs in system.slice: attaching to the slice would
    // judge nothing of it.
    let root = tree(&["system.slice/ollama.service", "ollama.slice"]);
    let t = resolve_unit(root.path(), "ollama.service").expect("found");
    assert_eq!(t.cgroup, root.path().join("system.slice/ollama.service"));
    assert_eq!(t.restarts, Restarts::Followed);
    let w = outside_slice_warning(&t);
    assert!(
        w.contains("system.slice")
            && w.contains("/usr/lib/systemd/system/ollama.service.d/ollama-egress.conf")
            && w.contains("Slice=ollama.slice"),
        "{w}"
    );
}

#[test]
fn another_unit_names_a_drop_in_under_etc() {
    let root = tree(&["system.slice/llm.service"]);
    let t = resolve_unit(root.path(), "llm.service").expect("found");
    assert_eq!(t.restarts, Restarts::Followed);
    let w = outside_slice_warning(&t);
    assert!(
        w.contains("/etc/systemd/system/llm.service.d/ollama-egress.conf"),
        "{w}"
    );
}

#[test]
fn neither_unit_nor_slice_is_an_error_naming_the_unit() {
    let root = tree(&["system.slice/other.service"]);
    let err = resolve_unit(root.path(), "ollama.service").expect_err("absent");
    assert!(err.to_string().contains("ollama.service"), "{err}");
}

#[test]
fn restarts_are_spelled_in_snake_case() {
    assert_eq!(
        serde_json::to_string(&Restarts::Covered).expect("json"),
        "\"covered\""
    );
    assert_eq!(
        serde_json::from_str::<Restarts>("\"followed\"").expect("json"),
        Restarts::Followed
    );
}

#[test]
fn status_lines_say_covered_followed_or_not_covered() {
    let slice = Path::new("/sys/fs/cgroup/ollama.slice");
    let own = Path::new("/sys/fs/cgroup/system.slice/ollama.service");
    assert!(restarts_text(Restarts::Covered, slice, false).starts_with("covered: "));
    assert!(restarts_text(Restarts::Followed, own, true).starts_with("followed: "));
    assert!(restarts_text(Restarts::Followed, own, false).starts_with("NOT COVERED: "));
    assert!(
        pinned_restarts_text([Some(slice); 3])
            .expect("one cgroup")
            .starts_with("covered: ")
    );
    assert!(
        pinned_restarts_text([Some(own); 3])
            .expect("one cgroup")
            .starts_with("not followed: ")
    );
    assert_eq!(pinned_restarts_text([]), None);
    assert_eq!(
        pinned_restarts_text([Some(slice), None]),
        None,
        "links on different cgroups say nothing about restarts"
    );
}
