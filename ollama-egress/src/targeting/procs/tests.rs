use super::*;

#[test]
fn finds_by_comm_in_a_fake_proc() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (pid, comm) in [
        (10, "ollama"),
        (11, "bash"),
        (12, "ollama"),
        (13, "ollama_llama_se"),
    ] {
        let d = dir.path().join(pid.to_string());
        fs::create_dir_all(&d).expect("mkdir");
        fs::write(d.join("comm"), format!("{comm}\n")).expect("write");
    }
    fs::create_dir_all(dir.path().join("self")).expect("mkdir");
    assert_eq!(find_processes_by_comm(dir.path(), "ollama"), vec![10, 12]);
    // Names longer than 15 bytes match the kernel's truncated comm.
    assert_eq!(
        find_processes_by_comm(dir.path(), "ollama_llama_server"),
        vec![13]
    );
    assert!(find_processes_by_comm(dir.path(), "nginx").is_empty());
}

#[test]
fn parses_stat_with_odd_names() {
    let text = "4242 (a) b (c)) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 987654 1000 10 18446744073709551615";
    let st = parse_stat(text).expect("parses");
    assert_eq!(st.pid, 4242);
    assert_eq!(st.comm, "a) b (c)");
    assert_eq!(st.ppid, 17);
    assert_eq!(st.start, 987_654);
    assert_eq!(parse_stat("12 (x"), None);
}

#[test]
fn targets_include_descendants_under_other_names() {
    let p = |pid, ppid, comm: &str| ProcStat {
        pid,
        ppid,
        comm: comm.to_owned(),
        start: 1,
    };
    let procs = vec![
        p(1, 0, "init"),
        p(10, 1, "ollama"),
        p(11, 10, "runner"),
        p(12, 11, "sh"),
        p(20, 1, "bash"),
        p(30, 1, "helper"),
        p(31, 30, "child"),
    ];
    let none = HashSet::new();
    assert_eq!(targets(&procs, "ollama", &none), vec![10, 11, 12]);
    // A process the kernel marked already brings its descendants.
    let marked = HashSet::from([30]);
    assert_eq!(targets(&procs, "ollama", &marked), vec![10, 11, 12, 30, 31]);
}
