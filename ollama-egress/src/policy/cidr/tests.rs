//! Tests of `cidr`.

use super::*;

fn net(s: &str) -> IpNet {
    s.parse().expect("test network")
}

#[test]
fn bare_addresses_are_host_routes() {
    assert_eq!(parse_cidr("10.0.0.1"), Ok(net("10.0.0.1/32")));
    assert_eq!(parse_cidr("2001:db8::1"), Ok(net("2001:db8::1/128")));
    assert_eq!(parse_cidr("::1"), Ok(net("::1/128")));
}

#[test]
fn networks_parse() {
    assert_eq!(parse_cidr("0.0.0.0/0"), Ok(net("0.0.0.0/0")));
    assert_eq!(parse_cidr("::/0"), Ok(net("::/0")));
    assert_eq!(parse_cidr("fc00::/7"), Ok(net("fc00::/7")));
}

#[test]
fn host_bits_are_refused_with_suggestions() {
    assert_eq!(
        parse_cidr("10.1.2.3/8"),
        Err(CidrError::HostBits {
            network: net("10.0.0.0/8"),
            host: net("10.1.2.3/32"),
        })
    );
    assert_eq!(
        parse_cidr("2001:db8::1/32"),
        Err(CidrError::HostBits {
            network: net("2001:db8::/32"),
            host: net("2001:db8::1/128"),
        })
    );
}

#[test]
fn malformed_entries_are_refused() {
    for bad in [
        "",
        "10.0.0.0/",
        "10.0.0.0/33",
        "::/129",
        "10.0.0.0/+8",
        "10.0.0.0/-1",
        "10.0.0/8",
        "010.0.0.0/8",
        "10.0.0.0/8/8",
        "fe80::1%eth0",
        "10.0.0.0 /8",
        " 10.0.0.0/8",
        "10.0.0.0/0008",
        "example.com",
        "10.0.0.0/256",
    ] {
        assert!(
            matches!(parse_cidr(bad), Err(CidrError::Invalid(_))),
            "{bad:?} should be invalid"
        );
    }
}

#[test]
fn mapped_networks_become_ipv4() {
    assert_eq!(parse_cidr("::ffff:1.2.3.0/120"), Ok(net("1.2.3.0/24")));
    assert_eq!(parse_cidr("::ffff:0:0/96"), Ok(net("0.0.0.0/0")));
    assert_eq!(parse_cidr("::ffff:10.0.0.1"), Ok(net("10.0.0.1/32")));
    // Shorter networks keep their IPv6 meaning.
    assert_eq!(parse_cidr("::fffe:0:0/95"), Ok(net("::fffe:0:0/95")));
    assert_eq!(parse_cidr("::/80"), Ok(net("::/80")));
    assert_eq!(parse_cidr("::/0"), Ok(net("::/0")));
    // Host bits are checked in the form written.
    assert_eq!(
        parse_cidr("::ffff:1.2.3.4/120"),
        Err(CidrError::HostBits {
            network: net("::ffff:1.2.3.0/120"),
            host: net("::ffff:1.2.3.4/128"),
        })
    );
}

#[test]
fn canonical_truncates_and_unmaps() {
    assert_eq!(canonical(net("10.1.2.3/8")), net("10.0.0.0/8"));
    assert_eq!(canonical(net("::ffff:10.1.2.3/104")), net("10.0.0.0/8"));
    assert_eq!(canonical(net("2001:db8::1/32")), net("2001:db8::/32"));
}
