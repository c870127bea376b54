use super::*;

#[test]
fn finds_the_holder_in_proc_locks() {
    let text = "1: POSIX  ADVISORY  WRITE 11 00:2a:77 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 4242 00:2a:77 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 5151 00:2a:77 0 EOF\n";
    let dev = libc::makedev(0, 0x2a);
    assert_eq!(flock_holder(text, dev, 77), Some(4242));
    assert_eq!(flock_holder(text, dev, 78), None);
}

#[test]
fn a_second_lock_is_refused_with_the_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || std::fs::File::open(dir.path()).expect("open dir").into();
    let first = lock_dir(open(), dir.path()).expect("first lock");
    match lock_dir(open(), dir.path()) {
        Err(LockError::Held { pid }) => assert_eq!(pid, Some(std::process::id())),
        other => panic!("second lock: {other:?}"),
    }
    drop(first);
    lock_dir(open(), dir.path()).expect("lock after release");
}
