use super::*;

#[test]
fn delta_divides_time_by_calls_and_skips_idle_programs() {
    let before = BTreeMap::from([
        (
            "connect4".to_owned(),
            Run {
                time_ns: 1_000,
                count: 10,
            },
        ),
        ("egress".to_owned(), Run::default()),
    ]);
    let after = BTreeMap::from([
        (
            "connect4".to_owned(),
            Run {
                time_ns: 6_000,
                count: 20,
            },
        ),
        ("egress".to_owned(), Run::default()),
        (
            "ingress".to_owned(),
            Run {
                time_ns: 900,
                count: 3,
            },
        ),
    ]);
    let d = delta(&before, &after);
    assert_eq!(
        d,
        vec![
            Cost {
                program: "connect4".into(),
                calls: 10,
                ns_per_call: 500.0
            },
            Cost {
                program: "ingress".into(),
                calls: 3,
                ns_per_call: 300.0
            },
        ]
    );
}
