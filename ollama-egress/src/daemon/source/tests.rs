use super::*;

#[test]
fn a_change_is_reported_once_it_has_settled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("policy.toml");
    std::fs::write(&p, "default = \"allow\"\n").expect("write");
    let geo = dir.path().join("none.mmdb");
    let mut src = PolicySource::new(Some(p.clone()), Some(geo.clone()), Some(geo), None);
    assert!(src.changed_files().is_empty());
    // Truncated: seen, not yet reported.
    std::fs::write(&p, "").expect("truncate");
    assert!(src.changed_files().is_empty());
    // Written before the next poll: still moving.
    std::fs::write(&p, "default = \"deny\"\n[allow]\n").expect("write");
    assert!(src.changed_files().is_empty());
    // Unchanged across a poll: reported, once.
    assert_eq!(src.changed_files(), vec![p.clone()]);
    assert!(src.changed_files().is_empty());
}
