#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use ollama_egress_geo::PackageReport;

use super::*;
use crate::terminal::is_unsafe;

const NASTY: &str = "Evil\u{1b}]0;x\u{7}\u{9b}2J\u{85}Org\u{202e}gro\u{2066}";

fn assert_safe(out: &[u8]) -> String {
    let out = String::from_utf8(out.to_vec()).unwrap();
    assert!(
        !out.chars().any(|c| c != '\n' && is_unsafe(c)),
        "raw control or bidi character reaches the terminal: {out:?}"
    );
    out
}

#[test]
fn lookup_output_is_sanitised() {
    let info = GeoInfo {
        country: Some("CN".into()),
        asn: Some(64500),
        as_org: Some(NASTY.into()),
    };
    let mut out = Vec::new();
    print_lookup(&mut out, "203.0.113.7".parse().unwrap(), &info).unwrap();
    let out = assert_safe(&out);
    assert!(out.contains("as_org:  Evil?]0;x??2J?Org?gro?\n"), "{out}");
    assert!(
        out.contains("country: CN\n") && out.contains("asn:     64500\n"),
        "{out}"
    );
}

#[test]
fn update_output_is_sanitised() {
    let package = |version: &str| PackageReport {
        package: "@ip-location-db/asn".into(),
        version: version.into(),
        integrity: "sha512-x".into(),
        tarball: "http://127.0.0.1/t.tgz".into(),
        path: PathBuf::from("/var/lib/ollama-egress/geo/asn.mmdb"),
        bytes: 1,
        ipv4_networks: 1,
        ipv6_networks: 0,
    };
    let report = UpdateReport {
        country: package(NASTY),
        asn: package("1.2.3"),
        source_file: PathBuf::from("/var/lib/ollama-egress/geo/SOURCE.json"),
        elapsed: Duration::from_secs(1),
    };
    let mut out = Vec::new();
    print_update(&mut out, &report).unwrap();
    let out = assert_safe(&out);
    assert!(
        out.contains("@ip-location-db/asn Evil?]0;x??2J?Org?gro? -> "),
        "{out}"
    );
    assert!(out.contains("@ip-location-db/asn 1.2.3 -> "), "{out}");
}
