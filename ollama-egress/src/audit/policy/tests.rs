//! The policy facts, from files with and without an `[inbound]` table.

use super::*;
use crate::model::Action;

fn file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("policy.toml");
    std::fs::write(&p, text).expect("write");
    (dir, p)
}

const INBOUND: &str = r#"
default = "allow"

[deny]
countries = ["CN"]

[inbound]
default = "deny"
[inbound.allow]
cidrs = ["127.0.0.0/8", "192.168.1.0/24"]
"#;

#[test]
fn facts_from_a_file_with_an_inbound_section() {
    let (_d, p) = file(INBOUND);
    let f = read(Some(&p)).expect("reads");
    assert_eq!(f.default, Action::Allow);
    assert!(f.inbound);
    assert!(f.uses_geo);
    assert_eq!(f.origin, p.display().to_string());
}

#[test]
fn facts_from_a_file_without_one() {
    let (_d, p) = file("default = \"deny\"\n[allow]\ncidrs = [\"127.0.0.0/8\"]\n");
    let f = read(Some(&p)).expect("reads");
    assert_eq!(f.default, Action::Deny);
    assert!(!f.inbound);
    assert!(!f.uses_geo);
}

#[test]
fn invalid_and_missing_files_are_errors() {
    let (_d, p) = file("default = \"sometimes\"\n[inbound]\ndefault = \"deny\"\n");
    let e = read(Some(&p)).expect_err("invalid").to_string();
    assert!(e.contains("sometimes"), "{e}");
    let (_d, p) = file("[allow]\ncidrs = [\"300.0.0.0/8\"]\n");
    assert!(read(Some(&p)).is_err());
    let e = read(Some(Path::new("/nonexistent/policy.toml")))
        .expect_err("missing")
        .to_string();
    assert!(e.contains("/nonexistent/policy.toml"), "{e}");
}
