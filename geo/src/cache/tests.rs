use super::*;

#[test]
fn bounded_and_keeps_recently_used() {
    let mut c = ClockCache::new(3);
    c.insert(1, "a");
    c.insert(2, "b");
    c.insert(3, "c");
    assert_eq!(c.get(&1).copied(), Some("a"));
    c.insert(4, "d"); // evicts 2 (1 was referenced)
    assert_eq!(c.len(), 3);
    assert_eq!(c.get(&2).copied(), None);
    assert_eq!(c.get(&1).copied(), Some("a"));
    assert_eq!(c.get(&3).copied(), Some("c"));
    assert_eq!(c.get(&4).copied(), Some("d"));
    for k in 10..100 {
        c.insert(k, "x");
        assert!(c.len() <= 3);
    }
    c.insert(10, "y");
    assert!(c.len() <= 3);
}
