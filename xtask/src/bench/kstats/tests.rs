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

#[test]
fn per_operation_sums_every_program_over_the_operations() {
    let cost = |program: &str, calls: u64, ns_per_call: f64| Cost {
        program: program.into(),
        calls,
        ns_per_call,
    };
    let costs = [
        cost("connect4", 100, 500.0),
        cost("egress", 300, 80.0),
        cost("connected_destroyed", 200, 130.0),
    ];
    // (50,000 + 24,000 + 26,000) ns over 100 connections.
    assert_eq!(per_operation(&costs, "connect4"), Some(1_000.0));
    assert_eq!(per_operation(&costs, "sendmsg4"), None);
}
