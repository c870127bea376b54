//! Tests of `inputs`.

use super::*;

#[test]
fn default_databases_that_cannot_be_examined_are_still_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Missing: none.
    assert_eq!(geo_paths_in(dir.path(), None, None), (None, None));
    // Below a regular file, stat fails with something other than "not found" (as it
    // does with EACCES for a user who may not enter the directory): the path is kept,
    // so opening it reports the real problem instead of "run geo update".
    let file = dir.path().join("file");
    std::fs::write(&file, "").expect("write");
    let (country, asn) = geo_paths_in(&file, None, None);
    assert_eq!(
        country,
        Some(file.join(ollama_egress_geo::COUNTRY_FILE)),
        "{asn:?}"
    );
    let err = open_geo(country.as_deref(), None).expect_err("unreadable");
    assert!(
        err.to_string().starts_with("cannot read geo database"),
        "{err}"
    );
}

#[test]
fn a_fifo_geo_database_is_refused_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let err = open_geo(Some(&fifo), None).expect_err("fifo");
    assert!(
        err.to_string().contains("not a regular file (a FIFO)"),
        "{err}"
    );
}

#[test]
fn empty_and_oversized_policies_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("policy.toml");
    std::fs::write(&p, "").expect("write");
    let err = load_policy(Some(&p)).expect_err("empty");
    assert!(err.to_string().contains("is empty"), "{err}");
    std::fs::write(&p, "#".repeat(files::MAX_POLICY_BYTES as usize + 1)).expect("write");
    let err = load_policy(Some(&p)).expect_err("big");
    assert!(
        err.to_string().contains("larger than 16777216 bytes"),
        "{err}"
    );
}
