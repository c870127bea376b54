use super::*;

fn event(name: &str, padded: usize) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&1i32.to_ne_bytes());
    v.extend_from_slice(&libc::IN_CREATE.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v.extend_from_slice(&(padded as u32).to_ne_bytes());
    let mut n = name.as_bytes().to_vec();
    n.resize(padded, 0);
    v.extend_from_slice(&n);
    v
}

#[test]
fn reads_names_of_several_events() {
    let mut buf = event("a", 16);
    buf.extend(event("ollama.service", 16));
    buf.extend(event("", 0));
    let names: Vec<_> = names_in(&buf).collect();
    assert_eq!(names, vec![OsStr::new("a"), OsStr::new("ollama.service")]);
}

#[tokio::test]
async fn wakes_when_the_name_is_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("svc");
    let mut w = CgroupWatch::new(&target);
    assert!(w.inotify.is_some(), "inotify works on a tmpdir");
    let t = target.clone();
    let mk = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        std::fs::create_dir(dir.path().join("other")).expect("mkdir");
        std::fs::create_dir(&t).expect("mkdir");
        dir
    });
    let started = std::time::Instant::now();
    let seen = w.wait().await;
    let took = started.elapsed();
    assert_eq!(seen.created, vec![OsString::from("svc")]);
    assert!(
        target.is_dir(),
        "woke before the directory was made ({took:?})"
    );
    assert!(
        took < FOLLOW_INTERVAL,
        "woke by the timer, not the watch: {took:?}"
    );
    drop(mk.await);
}

#[tokio::test]
async fn any_new_directory_wakes_a_watch_of_the_parent_then_the_new_target_is_watched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = dir.path().join("aaa");
    let mut w = CgroupWatch::any_in_parent(&old);
    std::fs::create_dir(dir.path().join("bbb")).expect("mkdir");
    let seen = tokio::time::timeout(FOLLOW_INTERVAL / 2, w.wait())
        .await
        .expect("woke by the watch, not the timer");
    assert_eq!(seen.created, vec![OsString::from("bbb")]);
    // The target moved beside: the same parent stays watched.
    w.retarget(&dir.path().join("bbb"));
    std::fs::create_dir(dir.path().join("ccc")).expect("mkdir");
    let seen = tokio::time::timeout(FOLLOW_INTERVAL / 2, w.wait())
        .await
        .expect("woke by the watch, not the timer");
    assert_eq!(seen.created, vec![OsString::from("ccc")]);
}

#[tokio::test]
async fn the_timer_wakes_with_nothing_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = CgroupWatch::new(&dir.path().join("svc"));
    std::fs::create_dir(dir.path().join("other")).expect("mkdir");
    let started = std::time::Instant::now();
    let seen = w.wait().await;
    assert!(seen.created.is_empty(), "{seen:?}");
    assert!(
        started.elapsed() >= FOLLOW_INTERVAL / 2,
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_directory_made_before_the_timer_fires_counts_as_seen_by_the_watch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = CgroupWatch::any_in_parent(&dir.path().join("aaa"));
    std::fs::create_dir(dir.path().join("bbb")).expect("mkdir");
    // The timer is due already: the event waiting on the watch is still reported.
    w.next = tokio::time::Instant::now();
    let seen = w.wait().await;
    assert_eq!(seen.created, vec![OsString::from("bbb")]);
}

#[tokio::test]
async fn a_parent_made_again_is_watched_again_and_said_to_have_been_unwatched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let parent = dir.path().join("docker");
    std::fs::create_dir(&parent).expect("mkdir");
    let mut w = CgroupWatch::any_in_parent(&parent.join("aaa"));
    let seen = w.wait().await;
    assert!(seen.created.is_empty() && !seen.unwatched, "{seen:?}");
    std::fs::remove_dir(&parent).expect("rmdir");
    std::fs::create_dir(&parent).expect("mkdir");
    let seen = w.wait().await;
    assert!(seen.created.is_empty(), "{seen:?}");
    assert!(
        seen.unwatched,
        "the replaced parent was not noticed: {seen:?}"
    );
    // The new parent is watched.
    std::fs::create_dir(parent.join("bbb")).expect("mkdir");
    let seen = tokio::time::timeout(FOLLOW_INTERVAL / 2, w.wait())
        .await
        .expect("woke by the watch, not the timer");
    assert_eq!(seen.created, vec![OsString::from("bbb")]);
    assert!(!seen.unwatched);
}
