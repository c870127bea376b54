use super::*;

#[test]
fn pin_names_round_trip_and_others_are_ignored() {
    let name = pin_name(Framing::Ip, 4026531840, 7);
    assert_eq!(name, "tcx_ip_4026531840_7");
    assert_eq!(parse_pin_name(&name), Some((Framing::Ip, 4026531840, 7)));
    for other in [
        "egress",
        "tun_open",
        "tcx_eth_1",
        "tcx_eth_1_2_3",
        "tcx_x_1_2",
    ] {
        assert_eq!(parse_pin_name(other), None, "{other}");
    }
}

#[test]
fn link_types_choose_the_framing() {
    assert_eq!(Framing::of(libc::ARPHRD_ETHER), Framing::Ethernet);
    assert_eq!(Framing::of(libc::ARPHRD_LOOPBACK), Framing::Ethernet);
    assert_eq!(Framing::of(0xfffe), Framing::Ip);
    assert_eq!(Framing::of(libc::ARPHRD_INFINIBAND), Framing::Other);
}
