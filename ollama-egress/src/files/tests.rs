//! Tests of `files`.

use super::*;

#[test]
fn empty_fifo_device_and_oversized_inputs_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty");
    fs::write(&empty, "  \n").expect("write");
    assert!(matches!(read_stable(&empty, 100), Err(InputError::Empty)));
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let e = read_stable(&fifo, 100).expect_err("fifo");
    assert_eq!(e.to_string(), "it is not a regular file (a FIFO)");
    let e = read_stable(Path::new("/dev/zero"), 100).expect_err("device");
    assert!(matches!(e, InputError::NotRegular("a character device")));
    let big = dir.path().join("big");
    fs::write(&big, vec![b'#'; 101]).expect("write");
    assert!(matches!(
        read_stable(&big, 100),
        Err(InputError::TooLarge {
            size: 101,
            cap: 100
        })
    ));
    fs::write(&big, "default = \"deny\"\n").expect("write");
    assert_eq!(
        read_stable(&big, 100).expect("read"),
        b"default = \"deny\"\n"
    );
}

#[test]
fn atomic_writes_never_follow_a_planted_symlink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let victim = dir.path().join("victim");
    fs::write(&victim, "precious").expect("write");
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::symlink(&victim, dir.path().join(".state.json.tmp")).expect("ln");
    std::os::unix::fs::symlink(&victim, dir.path().join("state.json")).expect("ln");
    write_atomic(dir.path(), "state.json", b"{}", 0o640).expect("write");
    assert_eq!(fs::read_to_string(&victim).expect("victim"), "precious");
    assert_eq!(
        fs::metadata(&victim).expect("meta").permissions().mode() & 0o777,
        0o600
    );
    let state = dir.path().join("state.json");
    let meta = fs::symlink_metadata(&state).expect("meta");
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(
        read_own(dir.path(), "state.json", 10).expect("read"),
        Some(b"{}".to_vec())
    );
}
