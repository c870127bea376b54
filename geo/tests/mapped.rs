//! Databases are mapped, not read: what that means for files replaced or changed while open.

#![allow(clippy::unwrap_used)] // Tests panic on failure by design.

use std::fs::File;
use std::net::IpAddr;

use ipnet::IpNet;
use ollama_egress_geo::GeoDb;
use ollama_egress_geo::fixture::write_country_db;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn country(db: &GeoDb, ip: &str) -> Option<String> {
    db.lookup(ip.parse::<IpAddr>().unwrap()).country
}

/// `geo update` installs a database by renaming a new file over the old one: a daemon that
/// mapped the old one keeps answering from it, expansions included, until it reopens.
#[test]
fn a_database_renamed_over_keeps_the_mapped_one_answering() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("country.mmdb");
    write_country_db(&path, &[(net("203.0.113.0/24"), "CN")]).unwrap();
    let db = GeoDb::open(Some(&path), None).unwrap();
    let next = dir.path().join("next.mmdb");
    write_country_db(&next, &[(net("203.0.113.0/24"), "DE")]).unwrap();
    std::fs::rename(&next, &path).unwrap();
    assert_eq!(country(&db, "203.0.113.9").as_deref(), Some("CN"));
    assert_eq!(
        db.country_networks("CN").unwrap(),
        vec![net("203.0.113.0/24")]
    );
    let reopened = GeoDb::open(Some(&path), None).unwrap();
    assert_eq!(country(&reopened, "203.0.113.9").as_deref(), Some("DE"));
}

/// A file opened (and checked) by the caller is refused when the path names another file by
/// the time it is mapped: what was checked is what is used.
#[test]
fn a_file_replaced_between_open_and_map_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("country.mmdb");
    write_country_db(&path, &[(net("203.0.113.0/24"), "CN")]).unwrap();
    let checked = File::open(&path).unwrap();
    let next = dir.path().join("next.mmdb");
    write_country_db(&next, &[(net("203.0.113.0/24"), "DE")]).unwrap();
    std::fs::rename(&next, &path).unwrap();
    let err = GeoDb::open_files(Some((&path, &checked)), None).unwrap_err();
    assert!(err.to_string().contains("replaced"), "{err}");
    let fresh = File::open(&path).unwrap();
    let db = GeoDb::open_files(Some((&path, &fresh)), None).unwrap();
    assert_eq!(country(&db, "203.0.113.9").as_deref(), Some("DE"));
}

/// An empty file is refused with an error naming it, not mapped.
#[test]
fn an_empty_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("country.mmdb");
    File::create(&path).unwrap();
    let err = GeoDb::open(Some(&path), None).unwrap_err().to_string();
    assert!(
        err.contains("country.mmdb") && err.contains("empty"),
        "{err}"
    );
}
