#![allow(clippy::unwrap_used)] // Tests panic on failure by design.

use std::io::Write as _;

use super::Mapped;

#[test]
fn maps_the_whole_file() {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(b"mapped bytes").unwrap();
    let m = Mapped::map(&f, 12).unwrap();
    assert_eq!(m.as_ref(), b"mapped bytes");
}

#[test]
fn refuses_an_empty_file() {
    let f = tempfile::tempfile().unwrap();
    let err = Mapped::map(&f, 0).err().unwrap();
    assert!(err.to_string().contains("empty"), "{err}");
}

#[test]
fn refuses_a_file_whose_size_is_not_the_checked_one() {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(b"grown after the check").unwrap();
    let err = Mapped::map(&f, 5).err().unwrap();
    assert!(err.to_string().contains("changed"), "{err}");
}

#[test]
fn still_reads_after_release() {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(&[7u8; 3 * 4096]).unwrap();
    let m = Mapped::map(&f, 3 * 4096).unwrap();
    assert!(m.as_ref().iter().all(|b| *b == 7));
    m.release();
    let clone = m.clone();
    drop(m);
    assert!(clone.as_ref().iter().all(|b| *b == 7));
}
