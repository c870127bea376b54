use super::*;

#[test]
fn root_has_everything() {
    assert!(missing_from(0x000001ffffffffff).is_empty());
}

#[test]
fn nothing_names_all() {
    assert_eq!(
        missing_from(0),
        vec!["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]
    );
}

#[test]
fn bpf_without_net_admin() {
    let eff = (1 << CAP_BPF) | (1 << CAP_PERFMON);
    assert_eq!(missing_from(eff), vec!["CAP_NET_ADMIN"]);
}

#[test]
fn parses_status() {
    let s = "Name:\tx\nCapEff:\t000001ffffffffff\n";
    assert_eq!(parse_cap_eff(s), Some(0x1ffffffffff));
}
