//! The database layouts users have, written by an encoder independent of the project's own
//! writer (`support/spec_mmdb.rs`, from the MaxMind DB specification), with the integer
//! widths, record sizes and pointers real files use.

#![allow(clippy::unwrap_used)] // Tests panic on failure by design.

mod support;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use ollama_egress_geo::{GeoDb, GeoError, GeoInfo};
use support::spec_mmdb::{SpecMmdb, V, map, names, s};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn write(dir: &Path, name: &str, db: &SpecMmdb) -> PathBuf {
    let path = dir.join(name);
    db.write(&path);
    // The file is valid for the reference reader's own verifier too.
    maxminddb::Reader::open_readfile(&path)
        .unwrap()
        .verify()
        .unwrap();
    path
}

fn info(cc: Option<&str>, asn: Option<u32>, org: Option<&str>) -> GeoInfo {
    GeoInfo {
        country: cc.map(str::to_owned),
        asn,
        as_org: org.map(str::to_owned),
    }
}

/// A MaxMind/DB-IP `country` or `registered_country` map.
fn mm_country(cc: &str, geoname_id: V, eu: bool) -> V {
    let mut m = vec![("geoname_id", geoname_id)];
    if eu {
        m.push(("is_in_european_union", V::Bool(true)));
    }
    m.push(("iso_code", s(cc)));
    m.push(("names", names(cc)));
    map(m)
}

fn mm_continent(code: &str) -> V {
    map(vec![
        ("code", s(code)),
        ("geoname_id", V::U32(6_255_148)),
        ("names", names(code)),
    ])
}

/// GeoLite2-Country / GeoIP2-Country records.
fn maxmind_country_record(cc: &str, registered: &str) -> V {
    map(vec![
        ("continent", mm_continent("EU")),
        ("country", mm_country(cc, V::U32(2_921_044), true)),
        (
            "registered_country",
            mm_country(registered, V::U32(2_921_044), true),
        ),
    ])
}

/// A GeoLite2-City record: city, location with a uint16 accuracy radius and doubles,
/// postal, subdivisions as an array.
fn maxmind_city_record(cc: &str) -> V {
    map(vec![
        (
            "city",
            map(vec![
                ("geoname_id", V::U32(2_950_159)),
                ("names", names("Berlin")),
            ]),
        ),
        ("continent", mm_continent("EU")),
        ("country", mm_country(cc, V::U32(2_921_044), true)),
        (
            "location",
            map(vec![
                ("accuracy_radius", V::U16(200)),
                ("latitude", V::F64(52.5196)),
                ("longitude", V::F64(13.4069)),
                ("metro_code", V::U16(0)),
                ("time_zone", s("Europe/Berlin")),
            ]),
        ),
        ("postal", map(vec![("code", s("10115"))])),
        (
            "registered_country",
            mm_country(cc, V::U32(2_921_044), true),
        ),
        (
            "subdivisions",
            V::Array(vec![map(vec![
                ("geoname_id", V::U32(2_950_157)),
                ("iso_code", s("BE")),
                ("names", names("Land Berlin")),
            ])]),
        ),
    ])
}

fn asn_record(number: V, org: &str) -> V {
    map(vec![
        ("autonomous_system_number", number),
        ("autonomous_system_organization", s(org)),
    ])
}

/// MaxMind GeoLite2-Country (IPv6 tree, 24-bit records) and GeoLite2-City (28-bit records).
#[test]
fn maxmind_geolite2_country_and_city() {
    let dir = tempfile::tempdir().unwrap();
    let mut country = SpecMmdb::new("GeoLite2-Country");
    country.record_size = 24;
    country
        .insert("203.0.113.0/24", maxmind_country_record("CN", "CN"))
        .insert("198.51.100.0/24", maxmind_country_record("US", "US"))
        .insert(
            // Anycast-style: only the registered country.
            "192.0.2.0/25",
            map(vec![(
                "registered_country",
                mm_country("JP", V::U32(1_861_060), false),
            )]),
        )
        .insert("2001:db8::/32", maxmind_country_record("DE", "DE"));
    let path = write(dir.path(), "GeoLite2-Country.mmdb", &country);
    let db = GeoDb::open(Some(&path), None).unwrap();
    assert_eq!(db.lookup(ip("203.0.113.9")), info(Some("CN"), None, None));
    assert_eq!(db.lookup(ip("192.0.2.1")), info(Some("JP"), None, None));
    assert_eq!(db.lookup(ip("2001:db8::1")), info(Some("DE"), None, None));
    assert_eq!(
        db.country_networks("cn").unwrap(),
        nets(&["203.0.113.0/24"])
    );
    assert_eq!(db.country_networks("DE").unwrap(), nets(&["2001:db8::/32"]));

    let mut city = SpecMmdb::new("GeoLite2-City");
    city.insert("203.0.113.0/25", maxmind_city_record("CN"))
        .insert("203.0.113.128/25", maxmind_city_record("DE"))
        .insert("2001:db8:1::/48", maxmind_city_record("DE"));
    let path = write(dir.path(), "GeoLite2-City.mmdb", &city);
    let db = GeoDb::open(Some(&path), None).unwrap();
    assert_eq!(
        db.lookup(ip("203.0.113.200")).country.as_deref(),
        Some("DE")
    );
    assert_eq!(
        db.country_networks("DE").unwrap(),
        nets(&["203.0.113.128/25", "2001:db8:1::/48"])
    );
}

/// GeoLite2-ASN with the AS number in every width the format has: uint16 (valid per the
/// specification and read by libmaxminddb), uint32, uint64, uint128 and int32, in IPv4 and
/// IPv6 trees and all three record sizes.
#[test]
fn geolite2_asn_any_integer_width() {
    let dir = tempfile::tempdir().unwrap();
    for (ip_version, record_size) in [(6, 24), (6, 28), (6, 32), (4, 24), (4, 32)] {
        let mut asn = SpecMmdb::new("GeoLite2-ASN");
        asn.ip_version = ip_version;
        asn.record_size = record_size;
        asn.insert(
            "203.0.113.0/25",
            asn_record(V::U16(13335), "Cloudflare, Inc."),
        )
        .insert(
            "203.0.113.128/25",
            asn_record(V::U32(64500), "Example CN Net"),
        )
        .insert(
            "198.51.100.0/25",
            asn_record(V::U64(4_200_000_000), "Private 32-bit"),
        )
        .insert(
            "198.51.100.128/25",
            asn_record(V::U128(64501), "Example US Net"),
        )
        .insert("192.0.2.0/24", asn_record(V::I32(64502), "Example Signed"));
        if ip_version == 6 {
            asn.insert(
                "2001:db8::/32",
                asn_record(V::U16(13335), "Cloudflare, Inc."),
            );
        }
        let path = write(
            dir.path(),
            &format!("asn-v{ip_version}-{record_size}.mmdb"),
            &asn,
        );
        let db = GeoDb::open(None, Some(&path))
            .unwrap_or_else(|e| panic!("IPv{ip_version}/{record_size}: {e}"));
        let at = format!("IPv{ip_version} tree, {record_size}-bit records");
        assert_eq!(
            db.lookup(ip("203.0.113.1")),
            info(None, Some(13335), Some("Cloudflare, Inc.")),
            "{at}"
        );
        assert_eq!(db.lookup(ip("203.0.113.200")).asn, Some(64500), "{at}");
        assert_eq!(
            db.lookup(ip("198.51.100.1")).asn,
            Some(4_200_000_000),
            "{at}"
        );
        assert_eq!(db.lookup(ip("198.51.100.200")).asn, Some(64501), "{at}");
        assert_eq!(db.lookup(ip("192.0.2.7")).asn, Some(64502), "{at}");
        let mut want = vec!["203.0.113.0/25"];
        if ip_version == 6 {
            want.push("2001:db8::/32");
        }
        assert_eq!(db.asn_networks(13335).unwrap(), nets(&want), "{at}");
        assert_eq!(
            db.asn_networks(4_200_000_000).unwrap(),
            nets(&["198.51.100.0/25"]),
            "{at}"
        );
        assert_eq!(
            db.asn_networks(64502).unwrap(),
            nets(&["192.0.2.0/24"]),
            "{at}"
        );
    }
}

/// DB-IP lite: `dbip-country-lite` (no registered_country) and `dbip-asn-lite`.
#[test]
fn dbip_lite_country_and_asn() {
    let dir = tempfile::tempdir().unwrap();
    let record = |cc: &str| {
        map(vec![
            ("continent", mm_continent("AS")),
            ("country", mm_country(cc, V::U32(1_814_991), false)),
        ])
    };
    let mut country = SpecMmdb::new("DBIP-Country-Lite");
    country
        .insert("203.0.113.0/24", record("CN"))
        .insert("2001:db8::/33", record("CN"))
        .insert("2001:db8:8000::/33", record("FR"));
    let country = write(dir.path(), "dbip-country-lite.mmdb", &country);
    let mut asn = SpecMmdb::new("DBIP-ASN-Lite (compat=GeoLite2-ASN)");
    asn.insert("203.0.113.0/24", asn_record(V::U32(4134), "Chinanet"))
        .insert("2001:db8::/32", asn_record(V::U16(4134), "Chinanet"));
    let asn = write(dir.path(), "dbip-asn-lite.mmdb", &asn);
    let db = GeoDb::open(Some(&country), Some(&asn)).unwrap();
    assert_eq!(
        db.lookup(ip("203.0.113.5")),
        info(Some("CN"), Some(4134), Some("Chinanet"))
    );
    assert_eq!(
        db.country_networks("CN").unwrap(),
        nets(&["203.0.113.0/24", "2001:db8::/33"])
    );
    assert_eq!(
        db.asn_networks(4134).unwrap(),
        nets(&["203.0.113.0/24", "2001:db8::/32"])
    );
}

/// IPinfo lite: one file with `asn` as a string ("AS13335"), `country_code`, and `country`
/// as the country's name; used as both the country and the ASN database. The older IPinfo
/// country/ASN files (`country` as the code, `asn` + `name`) too.
#[test]
fn ipinfo_lite_and_legacy() {
    let dir = tempfile::tempdir().unwrap();
    let record = |asn: &str, name: &str, cc: &str, country: &str| {
        map(vec![
            ("as_domain", s("example.net")),
            ("as_name", s(name)),
            ("asn", s(asn)),
            ("continent", s("Asia")),
            ("continent_code", s("AS")),
            ("country", s(country)),
            ("country_code", s(cc)),
        ])
    };
    let mut lite = SpecMmdb::new("ipinfo_lite.mmdb");
    lite.insert(
        "203.0.113.0/24",
        record("AS4134", "Chinanet", "CN", "China"),
    )
    .insert(
        "198.51.100.0/24",
        record("AS13335", "Cloudflare, Inc.", "US", "United States"),
    )
    .insert(
        "2001:db8::/32",
        record("AS13335", "Cloudflare, Inc.", "US", "United States"),
    )
    // A network without an AS: only the country fields.
    .insert(
        "192.0.2.0/24",
        map(vec![("country", s("Japan")), ("country_code", s("JP"))]),
    );
    let path = write(dir.path(), "ipinfo_lite.mmdb", &lite);
    let db = GeoDb::open(Some(&path), Some(&path)).unwrap();
    assert_eq!(
        db.lookup(ip("203.0.113.1")),
        info(Some("CN"), Some(4134), Some("Chinanet"))
    );
    assert_eq!(
        db.lookup(ip("2001:db8::5")),
        info(Some("US"), Some(13335), Some("Cloudflare, Inc."))
    );
    assert_eq!(db.lookup(ip("192.0.2.1")), info(Some("JP"), None, None));
    assert_eq!(
        db.asn_networks(13335).unwrap(),
        nets(&["198.51.100.0/24", "2001:db8::/32"])
    );
    assert_eq!(db.country_networks("jp").unwrap(), nets(&["192.0.2.0/24"]));

    // Older IPinfo files: country.mmdb with `country` as the code, asn.mmdb with `asn`/`name`.
    let mut country = SpecMmdb::new("ipinfo country.mmdb");
    country.insert(
        "203.0.113.0/24",
        map(vec![
            ("continent", s("AS")),
            ("continent_name", s("Asia")),
            ("country", s("CN")),
            ("country_name", s("China")),
        ]),
    );
    let country = write(dir.path(), "country.mmdb", &country);
    let mut asn = SpecMmdb::new("ipinfo asn.mmdb");
    asn.insert(
        "203.0.113.0/24",
        map(vec![
            ("asn", s("AS4134")),
            ("domain", s("chinatelecom.cn")),
            ("name", s("Chinanet")),
        ]),
    );
    let asn = write(dir.path(), "asn.mmdb", &asn);
    let db = GeoDb::open(Some(&country), Some(&asn)).unwrap();
    assert_eq!(
        db.lookup(ip("203.0.113.1")),
        info(Some("CN"), Some(4134), Some("Chinanet"))
    );
    assert_eq!(db.asn_networks(4134).unwrap(), nets(&["203.0.113.0/24"]));
}

/// ip-location-db: `{"country_code": …}` country files, GeoLite2-ASN-layout ASN files, and
/// the city files (`country_code` with coordinates as floats). Codes in lower case too.
#[test]
fn ip_location_db_country_city_asn() {
    let dir = tempfile::tempdir().unwrap();
    let mut country = SpecMmdb::new("geo-whois-asn-country");
    country.record_size = 32;
    country
        .insert("203.0.113.0/24", map(vec![("country_code", s("CN"))]))
        .insert("198.51.100.0/24", map(vec![("country_code", s("us"))]));
    let country = write(dir.path(), "country.mmdb", &country);
    let mut city = SpecMmdb::new("dbip-city");
    city.insert(
        "203.0.113.0/24",
        map(vec![
            ("city", s("Beijing")),
            ("country_code", s("CN")),
            ("latitude", V::F32(39.9)),
            ("longitude", V::F32(116.4)),
            ("postcode", s("")),
            ("state1", s("Beijing")),
            ("state2", s("")),
            ("timezone", s("Asia/Shanghai")),
        ]),
    );
    let city = write(dir.path(), "city.mmdb", &city);
    let mut asn = SpecMmdb::new("asn");
    asn.pointers = false;
    asn.insert("203.0.113.0/24", asn_record(V::U32(4134), "Chinanet"));
    let asn = write(dir.path(), "asn.mmdb", &asn);

    let db = GeoDb::open(Some(&country), Some(&asn)).unwrap();
    assert_eq!(
        db.lookup(ip("198.51.100.1")),
        info(Some("US"), None, None),
        "a lower-case code in the data is reported upper case"
    );
    assert_eq!(
        db.country_networks("US").unwrap(),
        nets(&["198.51.100.0/24"])
    );
    assert_eq!(
        db.country_networks("us").unwrap(),
        nets(&["198.51.100.0/24"])
    );
    assert_eq!(db.lookup(ip("203.0.113.1")).asn, Some(4134));

    let db = GeoDb::open(Some(&city), None).unwrap();
    assert_eq!(db.lookup(ip("203.0.113.1")).country.as_deref(), Some("CN"));
    assert_eq!(
        db.country_networks("CN").unwrap(),
        nets(&["203.0.113.0/24"])
    );
}

/// Valid data in a layout the crate does not understand is "unsupported layout", naming the
/// fields found, not "damaged".
#[test]
fn unsupported_layout_names_the_fields() {
    let dir = tempfile::tempdir().unwrap();
    let mut anon = SpecMmdb::new("GeoIP2-Anonymous-IP");
    anon.insert(
        "203.0.113.0/24",
        map(vec![
            ("is_anonymous", V::Bool(true)),
            ("is_tor_exit_node", V::Bool(true)),
        ]),
    );
    let anon = write(dir.path(), "anon.mmdb", &anon);
    for (country, asn) in [(Some(anon.as_path()), None), (None, Some(anon.as_path()))] {
        let err = GeoDb::open(country, asn).unwrap_err();
        assert!(matches!(err, GeoError::UnsupportedLayout { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("unsupported layout"), "{msg}");
        assert!(
            msg.contains("is_anonymous") && msg.contains("is_tor_exit_node"),
            "{msg}"
        );
        assert!(
            msg.contains("anon.mmdb") && !msg.contains("damaged"),
            "{msg}"
        );
    }

    // A country database given as the ASN database, and the other way round.
    let mut country = SpecMmdb::new("country");
    country.insert("203.0.113.0/24", map(vec![("country_code", s("CN"))]));
    let country = write(dir.path(), "country.mmdb", &country);
    let msg = GeoDb::open(None, Some(&country)).unwrap_err().to_string();
    assert!(
        msg.contains("unsupported layout") && msg.contains("ASN") && msg.contains("country_code"),
        "{msg}"
    );
    let mut asn = SpecMmdb::new("GeoLite2-ASN");
    asn.insert("203.0.113.0/24", asn_record(V::U32(4134), "Chinanet"));
    let asn = write(dir.path(), "asn.mmdb", &asn);
    let msg = GeoDb::open(Some(&asn), None).unwrap_err().to_string();
    assert!(
        msg.contains("unsupported layout")
            && msg.contains("country")
            && msg.contains("autonomous_system_number"),
        "{msg}"
    );

    // A field of a known name with a type that cannot hold it is named with its type.
    let mut odd = SpecMmdb::new("odd");
    odd.insert("203.0.113.0/24", map(vec![("country_code", V::U32(86))]));
    let odd = write(dir.path(), "odd.mmdb", &odd);
    let msg = GeoDb::open(Some(&odd), None).unwrap_err().to_string();
    assert!(
        msg.contains("unsupported layout") && msg.contains("country_code (uint"),
        "{msg}"
    );
}

/// A database whose data section really is broken is still reported as damaged.
#[test]
fn broken_data_is_still_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = SpecMmdb::new("GeoLite2-ASN");
    db.pointers = false;
    db.insert("203.0.113.0/24", asn_record(V::U32(4134), "Chinanet"));
    let mut bytes = db.to_bytes();
    // Turn the record's map control byte (type 7, 2 entries), the first byte after the tree
    // and its 16-byte separator, into a pointer far beyond the data section.
    let mut sep = vec![0u8; 16];
    sep.push((7 << 5) | 2);
    let map_byte = bytes.windows(17).position(|w| w == sep.as_slice()).unwrap() + 16;
    bytes[map_byte] = (1 << 5) | (3 << 3);
    bytes[map_byte + 1..map_byte + 5].copy_from_slice(&0x00ff_ffffu32.to_be_bytes());
    let path = dir.path().join("broken.mmdb");
    std::fs::write(&path, &bytes).unwrap();
    let err = match GeoDb::open(None, Some(&path)) {
        Err(e) => e,
        Ok(db) => db.asn_networks(4134).unwrap_err(),
    };
    assert!(matches!(err, GeoError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("damaged"), "{err}");
}
