#![allow(clippy::unwrap_used)]

use super::*;

fn sri(data: &[u8]) -> String {
    format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(Sha512::digest(data))
    )
}

#[test]
fn integrity() {
    let good = sri(b"tarball");
    assert!(check_integrity(b"tarball", &good).is_ok());
    assert!(check_integrity(b"tarball", &format!("sha1-AAAA {good}")).is_ok());
    assert!(check_integrity(b"tarball", &format!("{good}?opt")).is_ok());
    let err = check_integrity(b"other", &good).unwrap_err();
    assert!(err.contains("registry says"), "{err}");
    let err = check_integrity(b"tarball", "sha1-AAAA").unwrap_err();
    assert!(err.contains("no sha512"), "{err}");
    assert!(check_integrity(b"tarball", "").is_err());
}

#[test]
fn urls() {
    assert_eq!(
        metadata_url("https://registry.npmjs.org/", "@ip-location-db/asn"),
        "https://registry.npmjs.org/@ip-location-db%2fasn/latest"
    );
    assert_eq!(
        metadata_url(
            "http://127.0.0.1:9",
            "@ip-location-db/geo-whois-asn-country-mmdb"
        ),
        "http://127.0.0.1:9/@ip-location-db%2fgeo-whois-asn-country-mmdb/latest"
    );
    assert!(is_loopback_url("http://127.0.0.1:8080"));
    assert!(is_loopback_url("http://[::1]:8080/x"));
    assert!(is_loopback_url("http://localhost/"));
    assert!(!is_loopback_url("https://registry.npmjs.org"));
    assert!(!is_loopback_url("not a url"));
}
