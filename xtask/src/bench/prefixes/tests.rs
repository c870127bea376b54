use super::*;

#[test]
fn synthetic_sets_do_not_overlap() {
    let set = PrefixSet::synthetic("t", 2000, 500);
    assert_eq!(set.v4.len(), 2001);
    assert_eq!(set.v6.len(), 500);
    for w in set.v4.windows(2) {
        assert!(!w[0].contains(&w[1].network()), "{} {}", w[0], w[1]);
    }
    for w in set.v6.windows(2) {
        assert!(!w[0].contains(&w[1].network()), "{} {}", w[0], w[1]);
    }
    assert!(set.v4.iter().all(|n| !n.contains(&Ipv4Addr::LOCALHOST)));
    assert!(set.policy_toml().contains("\"203.0.113.0/24\""));
}
