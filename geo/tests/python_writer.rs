//! Databases written by the Python `mmdb-writer` package, an implementation independent of
//! the Rust crates the project uses (see `data/python-mmdb-writer/make_fixtures.py`, which
//! made them). Its default integer encoding stores AS numbers below 65536 as uint16.

#![allow(clippy::unwrap_used)] // Tests panic on failure by design.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use ollama_egress_geo::{GeoDb, GeoInfo};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/python-mmdb-writer")
        .join(name)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn info(cc: Option<&str>, asn: Option<u32>, org: Option<&str>) -> GeoInfo {
    GeoInfo {
        country: cc.map(str::to_owned),
        asn,
        as_org: org.map(str::to_owned),
    }
}

#[test]
fn geolite2_asn_with_uint16_numbers() {
    let path = fixture("geolite2-asn.mmdb");
    maxminddb::Reader::open_readfile(&path)
        .unwrap()
        .verify()
        .unwrap();
    let db = GeoDb::open(None, Some(&path)).unwrap();
    assert_eq!(
        db.lookup(ip("203.0.113.1")),
        info(None, Some(4134), Some("Chinanet"))
    );
    assert_eq!(db.lookup(ip("192.0.2.1")).asn, Some(4_200_000_000));
    assert_eq!(
        db.asn_networks(13335).unwrap(),
        nets(&["198.51.100.0/24", "2001:db8::/32"])
    );
    assert_eq!(db.asn_networks(4134).unwrap(), nets(&["203.0.113.0/24"]));
}

#[test]
fn geolite2_city_and_dbip_country() {
    let city = GeoDb::open(Some(&fixture("geolite2-city.mmdb")), None).unwrap();
    assert_eq!(
        city.lookup(ip("203.0.113.1")).country.as_deref(),
        Some("DE")
    );
    assert_eq!(
        city.country_networks("de").unwrap(),
        nets(&["203.0.113.0/24", "2001:db8::/32"])
    );
    let dbip = GeoDb::open(Some(&fixture("dbip-country-lite.mmdb")), None).unwrap();
    assert_eq!(
        dbip.lookup(ip("198.51.100.1")).country.as_deref(),
        Some("US")
    );
    assert_eq!(
        dbip.country_networks("CN").unwrap(),
        nets(&["203.0.113.0/24"])
    );
}

#[test]
fn ipinfo_lite_as_both_databases() {
    let path = fixture("ipinfo-lite.mmdb");
    let db = GeoDb::open(Some(&path), Some(&path)).unwrap();
    assert_eq!(
        db.lookup(ip("2001:db8::1")),
        info(Some("US"), Some(13335), Some("Cloudflare, Inc."))
    );
    assert_eq!(
        db.asn_networks(13335).unwrap(),
        nets(&["198.51.100.0/24", "2001:db8::/32"])
    );
    assert_eq!(
        db.country_networks("CN").unwrap(),
        nets(&["203.0.113.0/24"])
    );
}

#[test]
fn ip_location_db_country() {
    let db = GeoDb::open(Some(&fixture("ip-location-db-country.mmdb")), None).unwrap();
    assert_eq!(db.lookup(ip("203.0.113.1")).country.as_deref(), Some("CN"));
    assert_eq!(db.country_networks("DE").unwrap(), nets(&["2001:db8::/32"]));
}
