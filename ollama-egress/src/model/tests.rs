#![allow(clippy::unwrap_used)]

use ollama_egress_common as k;

use super::*;

#[test]
fn enums_parse_and_reject() {
    for v in Verdict::ALL {
        assert_eq!(v.as_str().parse::<Verdict>().unwrap(), *v);
    }
    assert_eq!("enforce".parse::<Mode>().unwrap(), Mode::Enforce);
    let err = "block".parse::<Verdict>().unwrap_err().to_string();
    assert_eq!(
        err,
        r#"invalid verdict "block": expected one of allowed, blocked, would_block"#
    );
    let err = "x".parse::<Mode>().unwrap_err().to_string();
    assert!(err.contains("monitor, enforce"), "{err}");
}

#[test]
fn kernel_numbers_round_trip_and_unknown_ones_are_errors() {
    for v in Verdict::ALL {
        assert_eq!(Verdict::from_kernel(v.to_kernel()), Ok(*v));
    }
    for m in Mode::ALL {
        assert_eq!(Mode::from_kernel(m.to_kernel()), Ok(*m));
    }
    assert_eq!(
        Verdict::from_kernel(k::VERDICT_WOULD_BLOCK),
        Ok(Verdict::WouldBlock)
    );
    assert_eq!(
        Verdict::from_kernel(k::VERDICT_COUNT)
            .unwrap_err()
            .to_string(),
        "unknown verdict 3 from the kernel"
    );
    assert_eq!(Family::from_kernel(k::FAMILY_IPV6), Ok(Family::Ipv6));
    assert!(Family::from_kernel(0).is_err());
    assert_eq!(
        Direction::from_kernel(k::DIRECTION_INGRESS),
        Ok(Direction::Inbound)
    );
    assert_eq!(Action::from_kernel(k::ACTION_DENY), Some(Action::Deny));
    assert_eq!(Verdict::label_of_kernel(7), "other");
    assert_eq!(Direction::label_of_kernel(k::DIRECTION_EGRESS), "egress");
}

#[test]
fn proto_names_and_labels() {
    assert_eq!(proto_name(6), "tcp");
    assert_eq!(proto_name(17), "udp");
    assert_eq!(proto_name(132), "132");
    assert_eq!(proto_name(132).metric_label(), "132");
    assert_eq!(Proto::from("sctp").metric_label(), "other");
    // What the log holds reads back unchanged, whatever it is.
    for s in ["tcp", "udp", "1", "6", "01", "sctp"] {
        let json = format!("\"{s}\"");
        let p: Proto = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), json);
    }
}

#[test]
fn rule_names() {
    let rules = vec!["default".to_owned(), "deny.countries:CN".to_owned()];
    assert_eq!(rule::event_rule(1, 3, Some(&rules)), "deny.countries:CN");
    assert_eq!(rule::event_rule(7, 3, Some(&rules)), "rule#7");
    assert_eq!(rule::event_rule(1, 99, None), "rule#1@99");
    assert_eq!(
        rule::event_rule(k::RULE_IPV6_ROUTING_HEADER, 3, Some(&rules)),
        "ipv6-routing-header"
    );
    assert_eq!(rule::event_rule(k::RULE_NO_POLICY, 3, None), "no-policy");
}
