extern crate std;

use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;

fn embedded(s: &str) -> Option<(Ipv4Addr, u32)> {
    let a: Ipv6Addr = s.parse().expect("IPv6 address");
    embedded_ipv4(&a.octets()).map(|(v4, form)| (Ipv4Addr::from(v4), form))
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().expect("IPv4 address")
}

#[test]
fn mapped() {
    assert_eq!(
        embedded("::ffff:203.0.113.7"),
        Some((v4("203.0.113.7"), V4_FORM_MAPPED))
    );
    assert_eq!(
        embedded("::ffff:0.0.0.0"),
        Some((v4("0.0.0.0"), V4_FORM_MAPPED))
    );
}

#[test]
fn nat64_well_known_prefix() {
    assert_eq!(
        embedded("64:ff9b::203.0.113.7"),
        Some((v4("203.0.113.7"), V4_FORM_NAT64))
    );
    assert_eq!(
        embedded("64:ff9b::cb00:7107"),
        Some((v4("203.0.113.7"), V4_FORM_NAT64))
    );
    // Inside 64:ff9b::/32 but neither the /96 nor the /48: IPv6 only.
    assert_eq!(embedded("64:ff9b::1:0:cb00:7107"), None);
    assert_eq!(embedded("64:ff9b:2::cb00:7107"), None);
    assert_eq!(embedded("64:ff9a::cb00:7107"), None);
}

#[test]
fn nat64_local_use_prefix_at_the_96_position() {
    assert_eq!(
        embedded("64:ff9b:1::203.0.113.7"),
        Some((v4("203.0.113.7"), V4_FORM_NAT64_LOCAL))
    );
    assert_eq!(
        embedded("64:ff9b:1:abcd:1:2:cb00:7107"),
        Some((v4("203.0.113.7"), V4_FORM_NAT64_LOCAL))
    );
    assert_eq!(
        embedded("64:ff9b:1:ffff:ffff:ffff:c633:6401"),
        Some((v4("198.51.100.1"), V4_FORM_NAT64_LOCAL))
    );
}

#[test]
fn six_to_four() {
    assert_eq!(
        embedded("2002:cb00:7107::1"),
        Some((v4("203.0.113.7"), V4_FORM_6TO4))
    );
    assert_eq!(
        embedded("2002:cb00:7107:ffff:1:2:3:4"),
        Some((v4("203.0.113.7"), V4_FORM_6TO4))
    );
    assert_eq!(embedded("2003:cb00:7107::1"), None);
    assert_eq!(embedded("2001:db8::1"), None);
}

#[test]
fn compatible_but_not_unspecified_or_loopback() {
    assert_eq!(
        embedded("::203.0.113.7"),
        Some((v4("203.0.113.7"), V4_FORM_COMPATIBLE))
    );
    assert_eq!(
        embedded("::0.0.0.2"),
        Some((v4("0.0.0.2"), V4_FORM_COMPATIBLE))
    );
    assert_eq!(
        embedded("::1.0.0.0"),
        Some((v4("1.0.0.0"), V4_FORM_COMPATIBLE))
    );
    assert_eq!(embedded("::"), None);
    assert_eq!(embedded("::1"), None);
    // Not ::/96: ::1:0:0 (bytes 10..11 = 0x0001) is neither mapped nor compatible.
    assert_eq!(embedded("::1:cb00:7107"), None);
    assert_eq!(embedded("::fffe:cb00:7107"), None);
}

#[test]
fn translated() {
    assert_eq!(
        embedded("::ffff:0:203.0.113.7"),
        Some((v4("203.0.113.7"), V4_FORM_TRANSLATED))
    );
    assert_eq!(embedded("::fffe:0:203.0.113.7"), None);
}

#[test]
fn agrees_with_std_on_mapped_and_compatible() {
    for s in [
        "::ffff:1.2.3.4",
        "::1.2.3.4",
        "::",
        "::1",
        "::2",
        "1::1.2.3.4",
    ] {
        let a: Ipv6Addr = s.parse().expect("ip");
        let ours = embedded_ipv4(&a.octets());
        match ours {
            Some((v4, V4_FORM_MAPPED)) => {
                assert_eq!(a.to_ipv4_mapped(), Some(Ipv4Addr::from(v4)), "{s}");
            }
            Some((v4, V4_FORM_COMPATIBLE)) => {
                assert_eq!(a.to_ipv4(), Some(Ipv4Addr::from(v4)), "{s}");
                assert_eq!(a.to_ipv4_mapped(), None, "{s}");
            }
            None => assert_eq!(a.to_ipv4_mapped(), None, "{s}"),
            Some(other) => panic!("{s}: unexpected {other:?}"),
        }
    }
}
