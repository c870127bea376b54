#![allow(clippy::unwrap_used)]

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn col(text: &str) -> usize {
    Selector::parse(text).unwrap_err().column
}

#[test]
fn parses_every_form() {
    let s = Selector::parse(
        "app.kubernetes.io/name=ollama, tier==gpu,env!=dev,zone in (b, a),team notin (x),gpu,!canary",
    )
    .unwrap();
    assert_eq!(
        s.requirements(),
        &[
            Requirement {
                key: "app.kubernetes.io/name".into(),
                op: Op::Equals("ollama".into())
            },
            Requirement {
                key: "tier".into(),
                op: Op::Equals("gpu".into())
            },
            Requirement {
                key: "env".into(),
                op: Op::NotEquals("dev".into())
            },
            Requirement {
                key: "zone".into(),
                op: Op::In(vec!["a".into(), "b".into()])
            },
            Requirement {
                key: "team".into(),
                op: Op::NotIn(vec!["x".into()])
            },
            Requirement {
                key: "gpu".into(),
                op: Op::Exists
            },
            Requirement {
                key: "canary".into(),
                op: Op::DoesNotExist
            },
        ]
    );
    assert_eq!(
        s.to_string(),
        "app.kubernetes.io/name=ollama,tier=gpu,env!=dev,zone in (a,b),team notin (x),gpu,!canary"
    );
    // The canonical form parses to the same selector.
    assert_eq!(Selector::parse(&s.to_string()).unwrap(), s);
}

#[test]
fn empty_value_is_allowed() {
    let s = Selector::parse("app=").unwrap();
    assert!(s.matches(&labels(&[("app", "")])));
    assert!(!s.matches(&labels(&[("app", "x")])));
}

#[test]
fn matching() {
    let pod = labels(&[("app", "ollama"), ("zone", "a"), ("gpu", "true")]);
    let yes = |t: &str| Selector::parse(t).unwrap().matches(&pod);
    assert!(yes("app=ollama"));
    assert!(!yes("app=other"));
    assert!(yes("app!=other"));
    assert!(yes("missing!=x"), "!= holds when the label is absent");
    assert!(!yes("app!=ollama"));
    assert!(yes("zone in (a,b)"));
    assert!(!yes("zone in (b,c)"));
    assert!(!yes("missing in (a)"));
    assert!(yes("zone notin (b)"));
    assert!(!yes("zone notin (a)"));
    assert!(
        yes("missing notin (a)"),
        "notin holds when the label is absent"
    );
    assert!(yes("gpu"));
    assert!(!yes("missing"));
    assert!(yes("!missing"));
    assert!(!yes("!gpu"));
    assert!(yes("app=ollama,gpu,zone in (a)"));
    assert!(!yes("app=ollama,!gpu"));
}

#[test]
fn errors_name_the_column() {
    assert_eq!(col(""), 1);
    assert_eq!(col("   "), 4);
    assert_eq!(col("app=ollama,"), 12);
    assert_eq!(col("app=ollama,,x"), 12);
    assert_eq!(col("=x"), 1);
    assert_eq!(col("app=oll@ma"), 8);
    assert_eq!(col("app=-bad"), 5);
    assert_eq!(col("zone in a,b"), 9);
    assert_eq!(col("zone in (a,b"), 13);
    assert_eq!(col("zone in (a;b)"), 11);
    assert_eq!(col("app ollama"), 5);
    assert_eq!(col("Bad_Prefix/name=x"), 1);
    assert_eq!(col("example.com/-x=y"), 13);
    assert_eq!(col("!k=v"), 3);
    let long = format!("app={}", "v".repeat(64));
    assert_eq!(col(&long), 5);
    let e = Selector::parse("app=oll@ma").unwrap_err();
    assert!(e.to_string().contains("column 8"), "{e}");
    assert!(
        Selector::parse("")
            .unwrap_err()
            .problem
            .contains("matches every pod"),
        "an empty selector says why it is refused"
    );
}

#[test]
fn in_and_notin_need_a_separator() {
    // `inside` is a key, not `in` followed by `side`.
    let s = Selector::parse("inside").unwrap();
    assert_eq!(s.requirements()[0].op, Op::Exists);
    assert_eq!(col("zone inx (a)"), 6);
}
