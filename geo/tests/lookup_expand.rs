//! Lookups and expansion against fixture databases.

#![allow(clippy::unwrap_used)] // Tests panic on failure by design.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use ollama_egress_geo::fixture::{
    documentation_fixture, write_asn_db, write_country_db, write_country_db_maxmind,
};
use ollama_egress_geo::{AsnMmdbBuilder, GeoDb, GeoError, GeoInfo};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn info(cc: Option<&str>, asn: Option<u32>, org: Option<&str>) -> GeoInfo {
    GeoInfo {
        country: cc.map(str::to_owned),
        asn,
        as_org: org.map(str::to_owned),
    }
}

fn check_documentation_lookups(db: &GeoDb) {
    let cn = info(Some("CN"), Some(64500), Some("Example CN Net"));
    assert_eq!(db.lookup(ip("203.0.113.7")), cn);
    assert_eq!(
        db.lookup(ip("::ffff:203.0.113.7")),
        cn,
        "IPv4-mapped is looked up as IPv4"
    );
    assert_eq!(
        db.lookup(ip("198.51.100.1")),
        info(Some("US"), Some(64501), Some("Example US Net"))
    );
    assert_eq!(db.lookup(ip("192.0.2.200")), info(Some("US"), None, None));
    assert_eq!(
        db.lookup(ip("2001:db8:ffff::1")),
        info(Some("DE"), Some(64502), Some("Example DE Net"))
    );
    assert_eq!(db.lookup(ip("8.8.8.8")), GeoInfo::default());
    assert_eq!(db.lookup(ip("2001:4860::1")), GeoInfo::default());
    // Cached answers are the same answers.
    assert_eq!(db.lookup(ip("203.0.113.7")), cn);
}

#[test]
fn documentation_fixture_ip_location_db_layout() {
    let dir = tempfile::tempdir().unwrap();
    let (country, asn) = documentation_fixture().write_to(dir.path()).unwrap();
    let db = GeoDb::open(Some(&country), Some(&asn)).unwrap();
    assert!(db.has_country() && db.has_asn());
    check_documentation_lookups(&db);
    assert_eq!(db.country_info().unwrap().database_type, "country");
    assert_eq!(db.asn_info().unwrap().database_type, "GeoLite2-ASN");
}

#[test]
fn documentation_fixture_maxmind_layout() {
    let dir = tempfile::tempdir().unwrap();
    let fx = documentation_fixture();
    let country = dir.path().join("GeoLite2-Country.mmdb");
    let asn = dir.path().join("GeoLite2-ASN.mmdb");
    write_country_db_maxmind(&country, &fx.countries).unwrap();
    write_asn_db(&asn, &fx.asns).unwrap();
    let db = GeoDb::open(Some(&country), Some(&asn)).unwrap();
    check_documentation_lookups(&db);
    assert_eq!(
        db.country_networks("CN").unwrap(),
        vec![net("203.0.113.0/24")]
    );
}

#[test]
fn maxmind_registered_country_fallback() {
    use mmdb_writer::{Value, Writer};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.mmdb");
    let mut w = Writer::builder("GeoLite2-Country")
        .description(&[("en", "test")])
        .build();
    // An anycast-style record: no `country`, only `registered_country`.
    let reg = Value::map([(
        "registered_country",
        Value::map([("iso_code", Value::from("JP"))]),
    )]);
    w.insert_value(net("203.0.113.0/25"), reg).unwrap();
    let both = Value::map([
        ("country", Value::map([("iso_code", Value::from("FR"))])),
        (
            "registered_country",
            Value::map([("iso_code", Value::from("JP"))]),
        ),
    ]);
    w.insert_value(net("203.0.113.128/25"), both).unwrap();
    std::fs::write(&path, w.to_bytes().unwrap()).unwrap();
    let db = GeoDb::open(Some(&path), None).unwrap();
    assert_eq!(db.lookup(ip("203.0.113.1")).country.as_deref(), Some("JP"));
    assert_eq!(
        db.lookup(ip("203.0.113.200")).country.as_deref(),
        Some("FR")
    );
    assert_eq!(
        db.country_networks("JP").unwrap(),
        vec![net("203.0.113.0/25")]
    );
    assert_eq!(
        db.country_networks("fr").unwrap(),
        vec![net("203.0.113.128/25")]
    );
}

#[test]
fn only_one_database_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let (country, asn) = documentation_fixture().write_to(dir.path()).unwrap();
    let c = GeoDb::open(Some(&country), None).unwrap();
    assert_eq!(c.lookup(ip("203.0.113.7")), info(Some("CN"), None, None));
    let a = GeoDb::open(None, Some(&asn)).unwrap();
    assert_eq!(
        a.lookup(ip("203.0.113.7")),
        info(None, Some(64500), Some("Example CN Net"))
    );
    assert_eq!(GeoDb::empty().lookup(ip("203.0.113.7")), GeoInfo::default());
}

#[test]
fn open_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.mmdb");
    let err = GeoDb::open(Some(&missing), None).unwrap_err();
    assert!(matches!(err, GeoError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.mmdb"), "{err}");

    let garbage = dir.path().join("garbage.mmdb");
    std::fs::write(&garbage, b"this is not an mmdb").unwrap();
    let (country, _) = documentation_fixture().write_to(dir.path()).unwrap();
    let err = GeoDb::open(Some(&country), Some(&garbage)).unwrap_err();
    assert!(err.to_string().contains("garbage.mmdb"), "{err}");
}

/// Several networks per country in both families, written with IPv4 aliases installed.
fn multi_fixture(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let country = dir.join("country.mmdb");
    let asn = dir.join("asn.mmdb");
    write_country_db(
        &country,
        &[
            (net("203.0.113.0/24"), "CN"),
            (net("198.51.100.0/25"), "CN"),
            (net("198.51.100.128/25"), "US"),
            (net("100.64.0.0/16"), "CN"),
            (net("100.64.3.0/24"), "US"), // a hole punched into the CN /16
            (net("2001:db8:1::/48"), "CN"),
            (net("2001:db8:3::/48"), "CN"),
            (net("2001:db8:2::/48"), "US"),
            (net("192.0.2.0/24"), "DE"),
        ],
    )
    .unwrap();
    write_asn_db(
        &asn,
        &[
            (net("203.0.113.0/24"), 64500, "Example CN Net"),
            (net("100.64.0.0/16"), 64500, "Example CN Net"),
            (net("2001:db8:1::/48"), 64500, "Example CN Net"),
            (net("198.51.100.0/24"), 64501, "Example US Net"),
        ],
    )
    .unwrap();
    (country, asn)
}

fn set(nets: &[IpNet]) -> BTreeSet<IpNet> {
    nets.iter().copied().collect()
}

#[test]
fn country_expansion_both_families_without_aliases() {
    let dir = tempfile::tempdir().unwrap();
    let (country, asn) = multi_fixture(dir.path());
    let db = GeoDb::open(Some(&country), Some(&asn)).unwrap();

    // Aliases really are in the file: a 6to4 and an IPv4-mapped query find CN...
    assert_eq!(
        db.lookup(ip("2002:cb00:7101::1")).country.as_deref(),
        Some("CN")
    );
    // ...but expansion lists each network once, as IPv4.
    let cn = db.country_networks("CN").unwrap();
    let v4: Vec<_> = cn.iter().filter(|n| matches!(n, IpNet::V4(_))).collect();
    let v6: Vec<_> = cn.iter().filter(|n| matches!(n, IpNet::V6(_))).collect();
    let expected_v4: BTreeSet<IpNet> = [
        "100.64.0.0/23",
        "100.64.2.0/24",
        "100.64.4.0/22",
        "100.64.8.0/21",
        "100.64.16.0/20",
        "100.64.32.0/19",
        "100.64.64.0/18",
        "100.64.128.0/17",
        "198.51.100.0/25",
        "203.0.113.0/24",
    ]
    .iter()
    .map(|s| net(s))
    .collect();
    assert_eq!(
        set(&cn
            .iter()
            .copied()
            .filter(|n| matches!(n, IpNet::V4(_)))
            .collect::<Vec<_>>()),
        expected_v4
    );
    assert_eq!(v4.len(), 10);
    assert_eq!(v6.len(), 2);
    assert_eq!(
        set(&cn[v4.len()..]),
        set(&[net("2001:db8:1::/48"), net("2001:db8:3::/48")])
    );
    // Sorted, IPv4 first.
    let mut sorted = cn.clone();
    sorted.sort();
    assert_eq!(cn, sorted);
    for n in &cn {
        if let IpNet::V6(n) = n {
            let s = n.network().segments();
            assert_ne!(s[0], 0x2002, "6to4 alias leaked: {n}");
            assert!(!(s[0] == 0x2001 && s[1] == 0), "Teredo alias leaked: {n}");
            assert!(s[0] != 0, "IPv4-mapped/compatible alias leaked: {n}");
        }
    }

    let us = db.country_networks("us").unwrap();
    assert_eq!(
        set(&us),
        set(&[
            net("100.64.3.0/24"),
            net("198.51.100.128/25"),
            net("2001:db8:2::/48")
        ])
    );

    let many = db.countries_networks(&["CN", "de", "US"]).unwrap();
    assert_eq!(many.keys().collect::<Vec<_>>(), ["CN", "DE", "US"]);
    assert_eq!(many["CN"], cn);
    assert_eq!(many["DE"], vec![net("192.0.2.0/24")]);
    assert_eq!(many["US"], us);
}

#[test]
fn asn_expansion() {
    let dir = tempfile::tempdir().unwrap();
    let (country, asn) = multi_fixture(dir.path());
    let db = GeoDb::open(Some(&country), Some(&asn)).unwrap();
    assert_eq!(
        db.asn_networks(64500).unwrap(),
        vec![
            net("100.64.0.0/16"),
            net("203.0.113.0/24"),
            net("2001:db8:1::/48")
        ]
    );
    assert_eq!(
        db.asn_networks(64501).unwrap(),
        vec![net("198.51.100.0/24")]
    );
    let both = db.asns_networks(&[64501, 64500]).unwrap();
    assert_eq!(both.len(), 2);
}

#[test]
fn unknown_and_invalid_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (country, asn) = multi_fixture(dir.path());
    let db = GeoDb::open(Some(&country), Some(&asn)).unwrap();
    match db.country_networks("FR") {
        Err(GeoError::UnknownCountry(cc)) => assert_eq!(cc, "FR"),
        other => panic!("expected UnknownCountry, got {other:?}"),
    }
    match db.countries_networks(&["CN", "fr"]) {
        Err(GeoError::UnknownCountry(cc)) => assert_eq!(cc, "FR"),
        other => panic!("expected UnknownCountry, got {other:?}"),
    }
    for bad in ["CHN", "C", "", "1A", "ÇN"] {
        assert!(
            matches!(
                db.country_networks(bad),
                Err(GeoError::InvalidCountryCode(_))
            ),
            "{bad:?}"
        );
    }
    match db.asn_networks(4_200_000_000) {
        Err(GeoError::UnknownAsn(n)) => assert_eq!(n, 4_200_000_000),
        other => panic!("expected UnknownAsn, got {other:?}"),
    }
    let msg = GeoError::UnknownCountry("FR".into()).to_string();
    assert!(msg.contains("FR") && msg.contains("geo update"), "{msg}");
}

#[test]
fn no_database_errors_say_how_to_get_one() {
    let db = GeoDb::empty();
    let err = db.country_networks("CN").unwrap_err();
    assert!(matches!(err, GeoError::NoCountryDatabase));
    let msg = err.to_string();
    assert!(
        msg.contains("ollama-egress geo update") && msg.contains("--geo-db FILE"),
        "{msg}"
    );
    let err = db.asn_networks(64500).unwrap_err();
    assert!(matches!(err, GeoError::NoAsnDatabase));
    let msg = err.to_string();
    assert!(
        msg.contains("ollama-egress geo update") && msg.contains("--asn-db FILE"),
        "{msg}"
    );

    // A country database alone cannot expand ASNs, and vice versa.
    let dir = tempfile::tempdir().unwrap();
    let (country, asn) = documentation_fixture().write_to(dir.path()).unwrap();
    let c = GeoDb::open(Some(&country), None).unwrap();
    assert!(matches!(
        c.asn_networks(64500),
        Err(GeoError::NoAsnDatabase)
    ));
    let a = GeoDb::open(None, Some(&asn)).unwrap();
    assert!(matches!(
        a.country_networks("CN"),
        Err(GeoError::NoCountryDatabase)
    ));
}

#[test]
fn asn_csv_conversion() {
    let csv = "\
10.0.0.1,10.0.0.6,64510,\"Odd, Range Inc.\"
198.51.100.0,198.51.100.255,64511,Plain Org
2001:db8::,2001:db8:0:ffff:ffff:ffff:ffff:ffff,64511,Plain Org
2001::,2001::ffff:ffff:ffff:ffff:ffff:ffff,6939,Teredo Relay
2002::,2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff,6939,Six To Four
";
    let mut b = AsnMmdbBuilder::new("test");
    assert_eq!(b.add_csv(csv.as_bytes()).unwrap(), 5);
    assert_eq!(b.rows(), 5);
    // 10.0.0.1-10.0.0.6 is /32 + /31 + /31 + /32.
    assert_eq!(b.networks(), 4 + 1 + 1 + 1 + 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("asn.mmdb");
    std::fs::write(&path, b.finish().unwrap()).unwrap();

    let reader = maxminddb::Reader::open_readfile(&path).unwrap();
    reader.verify().unwrap();
    assert_eq!(reader.metadata().database_type, "GeoLite2-ASN");

    let db = GeoDb::open(None, Some(&path)).unwrap();
    assert_eq!(
        db.lookup(ip("10.0.0.1")),
        info(None, Some(64510), Some("Odd, Range Inc."))
    );
    assert_eq!(db.lookup(ip("10.0.0.6")).asn, Some(64510));
    assert_eq!(db.lookup(ip("10.0.0.0")).asn, None);
    assert_eq!(db.lookup(ip("10.0.0.7")).asn, None);
    assert_eq!(db.lookup(ip("::ffff:10.0.0.3")).asn, Some(64510));
    assert_eq!(db.lookup(ip("2001:db8::42")).asn, Some(64511));
    assert_eq!(db.lookup(ip("2001:db8:1::")).asn, None);
    assert_eq!(db.lookup(ip("2001::1")).asn, Some(6939));
    assert_eq!(
        db.asn_networks(64510).unwrap(),
        vec![
            net("10.0.0.1/32"),
            net("10.0.0.2/31"),
            net("10.0.0.4/31"),
            net("10.0.0.6/32")
        ]
    );
    assert_eq!(
        db.asn_networks(64511).unwrap(),
        vec![net("198.51.100.0/24"), net("2001:db8::/48")]
    );
    // Real data in the Teredo and 6to4 ranges is kept (no aliases in converted databases).
    assert_eq!(
        db.asn_networks(6939).unwrap(),
        vec![net("2001::/32"), net("2002::/16")]
    );
}

#[test]
fn asn_csv_errors_name_the_line() {
    let cases = [
        (
            "1.0.0.0,1.0.0.255,13335,Ok\nnot-an-ip,1.0.0.1,5,X\n",
            2,
            "range start",
        ),
        ("1.0.0.9,1.0.0.1,5,X\n", 1, "above"),
        ("1.0.0.0,::1,5,X\n", 1, "mixes"),
        ("1.0.0.0,1.0.0.1,AS5,X\n", 1, "AS number"),
        ("1.0.0.0,1.0.0.1\n", 1, "columns"),
    ];
    for (csv, line, what) in cases {
        let err = AsnMmdbBuilder::new("t")
            .add_csv(csv.as_bytes())
            .unwrap_err();
        match &err {
            GeoError::AsnCsv { line: l, reason } => {
                assert_eq!(*l, line, "{csv:?}: {err}");
                assert!(reason.contains(what), "{csv:?}: {err}");
            }
            other => panic!("{csv:?}: expected AsnCsv, got {other:?}"),
        }
    }
}
