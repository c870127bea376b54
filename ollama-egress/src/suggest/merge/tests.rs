//! Tests of `merge`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use super::*;
use crate::model::Verdict;
use crate::suggest::tests::rec;

fn tally(ip: &str) -> AddrTally {
    AddrTally {
        tally: Tally::of(&rec(ip, None, Verdict::Allowed, 0)),
        asn: None,
        as_org: None,
    }
}

fn addrs(list: &[&str]) -> BTreeMap<IpAddr, AddrTally> {
    list.iter()
        .map(|ip| (ip.parse().unwrap(), tally(ip)))
        .collect()
}

fn nets(entries: &[NetEntry]) -> Vec<String> {
    entries.iter().map(|e| e.net.to_string()).collect()
}

/// Test bounds: fixed AS networks.
struct Fixed(Vec<(IpNet, u32)>);

impl Bounds for Fixed {
    fn bound(&mut self, ip: IpAddr) -> Option<Bound> {
        self.0
            .iter()
            .filter(|(n, _)| n.contains(&ip))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|(net, asn)| Bound {
                net: *net,
                asn: *asn,
                as_org: Some(format!("Org{asn}")),
            })
    }
}

#[test]
fn without_an_asn_database_several_addresses_merge_per_24_and_48_one_stays_a_host() {
    let (n, a) = merge_addrs(
        &addrs(&[
            "198.51.100.7",
            "198.51.100.9",
            "198.51.101.1",
            "2001:db8:1::5",
            "2001:db8:1:ffff::1",
            "2001:db8:2::1",
        ]),
        &mut (),
        false,
    );
    assert!(a.is_empty());
    assert_eq!(
        nets(&n),
        [
            "198.51.100.0/24",
            "198.51.101.1/32",
            "2001:db8:1::/48",
            "2001:db8:2::1/128"
        ]
    );
    assert_eq!(n[0].addresses, 2);
    assert_eq!(n[0].tally.connections, 2);
}

#[test]
fn a_cdn_of_many_addresses_in_one_as_network_becomes_the_narrowest_covering_network() {
    let many: Vec<String> = (0..400)
        .map(|i| format!("104.16.{}.{}", i / 100, i % 100 + 1))
        .collect();
    let mut list: Vec<&str> = many.iter().map(String::as_str).collect();
    list.push("104.30.0.1"); // the same AS, another of its networks
    list.push("198.51.100.1"); // no AS
    let mut bounds = Fixed(vec![
        ("104.16.0.0/12".parse().unwrap(), 13335),
        ("104.30.0.0/16".parse().unwrap(), 13335),
    ]);
    let (n, _) = merge_addrs(&addrs(&list), &mut bounds, false);
    assert_eq!(
        nets(&n),
        ["104.16.0.0/22", "104.30.0.1/32", "198.51.100.1/32"],
        "400 addresses in 104.16.0-3.x: one /22 inside the AS's /12"
    );
    assert_eq!(n[0].addresses, 400);
    assert_eq!(n[0].within.as_ref().map(|b| b.asn), Some(13335));
    // Two addresses far apart in one AS network: covered, but never past the AS network.
    let (n, _) = merge_addrs(
        &addrs(&["104.16.0.1", "104.31.255.1"]),
        &mut Fixed(vec![("104.16.0.0/12".parse().unwrap(), 13335)]),
        false,
    );
    assert_eq!(nets(&n), ["104.16.0.0/12"]);
    // Two neighbours inside an AS network narrower than a /24: that network, not the /24.
    let (n, _) = merge_addrs(
        &addrs(&["192.0.2.130", "192.0.2.140"]),
        &mut Fixed(vec![("192.0.2.128/26".parse().unwrap(), 64500)]),
        false,
    );
    assert_eq!(nets(&n), ["192.0.2.128/26"]);
    // Two neighbours in a wide AS network: at least the /24.
    let (n, _) = merge_addrs(
        &addrs(&["104.16.0.1", "104.16.0.2"]),
        &mut Fixed(vec![("104.16.0.0/12".parse().unwrap(), 13335)]),
        false,
    );
    assert_eq!(nets(&n), ["104.16.0.0/24"]);
}

#[test]
fn with_asns_tagged_addresses_become_as_numbers_and_the_rest_networks() {
    let mut list = addrs(&["104.16.0.1", "104.16.9.9", "198.51.100.1", "203.0.113.5"]);
    // The log tagged this one; the database does not know it.
    list.get_mut(&"203.0.113.5".parse::<IpAddr>().unwrap())
        .unwrap()
        .asn = Some(64501);
    let mut bounds = Fixed(vec![("104.16.0.0/12".parse().unwrap(), 13335)]);
    let (n, a) = merge_addrs(&list, &mut bounds, true);
    assert_eq!(nets(&n), ["198.51.100.1/32"]);
    let asns: Vec<(u32, usize)> = a.iter().map(|e| (e.asn, e.addresses)).collect();
    assert_eq!(asns, [(13335, 2), (64501, 1)]);
    assert_eq!(a[0].tally.connections, 2);
}

#[test]
fn covered_networks_fold_into_the_covering_one() {
    // 104.16.0.1 is in the AS network, 104.16.0.7 is not tagged: its /32 lies inside the
    // AS-bounded merge and is folded in.
    struct Partial;
    impl Bounds for Partial {
        fn bound(&mut self, ip: IpAddr) -> Option<Bound> {
            (ip != "104.16.0.7".parse::<IpAddr>().unwrap()).then(|| Bound {
                net: "104.16.0.0/12".parse().unwrap(),
                asn: 13335,
                as_org: None,
            })
        }
    }
    let (n, _) = merge_addrs(
        &addrs(&["104.16.0.1", "104.17.0.1", "104.16.0.7"]),
        &mut Partial,
        false,
    );
    assert_eq!(nets(&n), ["104.16.0.0/15"]);
    assert_eq!(n[0].addresses, 3);
}

fn names(list: &[&str]) -> BTreeMap<String, Tally> {
    list.iter()
        .map(|n| {
            (
                (*n).to_owned(),
                Tally::of(&rec("203.0.113.1", Some(n), Verdict::Allowed, 0)),
            )
        })
        .collect()
}

#[test]
fn sibling_names_become_a_wildcard_from_the_threshold_on() {
    let two = names(&[
        "a.r2.cloudflarestorage.com",
        "b.r2.cloudflarestorage.com",
        "ollama.com",
    ]);
    let pats = |v: Vec<NameEntry>| v.into_iter().map(|e| e.pattern).collect::<Vec<_>>();
    assert_eq!(
        pats(merge_names(&two, 3)),
        [
            "a.r2.cloudflarestorage.com",
            "b.r2.cloudflarestorage.com",
            "ollama.com"
        ]
    );
    let three = names(&[
        "a.r2.cloudflarestorage.com",
        "b.r2.cloudflarestorage.com",
        "c.r2.cloudflarestorage.com",
        "r2.cloudflarestorage.com",
        "registry.ollama.ai",
    ]);
    let merged = merge_names(&three, 3);
    assert_eq!(
        pats(merged.clone()),
        [
            "*.r2.cloudflarestorage.com",
            "r2.cloudflarestorage.com",
            "registry.ollama.ai"
        ],
        "the parent itself stays exact: *.x does not match x"
    );
    assert_eq!(merged[0].names, 3);
    assert_eq!(merged[0].tally.connections, 3);
    assert_eq!(pats(merge_names(&three, 0)).len(), 5, "0: never");
    assert_eq!(pats(merge_names(&two, 2))[0], "*.r2.cloudflarestorage.com");
}

#[test]
fn no_wildcard_over_a_top_level_or_shared_second_level_suffix() {
    let tld = names(&["a.com", "b.com", "c.com"]);
    assert_eq!(merge_names(&tld, 2).len(), 3);
    let shared = names(&["a.co.uk", "b.co.uk", "c.co.uk"]);
    assert_eq!(merge_names(&shared, 2).len(), 3);
    let own = names(&["a.example.com", "b.example.com"]);
    assert_eq!(merge_names(&own, 2)[0].pattern, "*.example.com");
}
