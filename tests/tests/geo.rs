//! Country and ASN rules against the real kernel, with fixture databases the test writes:
//! 203.0.113.0/24 is CN, 198.51.100.0/24 US, 2001:db8::/32 DE.

use std::{process::Command, time::Duration};

use ollama_egress_geo::fixture::{documentation_fixture, write_country_db};
use ollama_egress_tests::{Scenario, ScenarioSpec, daemon_bin, probe, with, write_policy};

const ADDRS: &[&str] = &["203.0.113.7/32", "198.51.100.1/32", "2001:db8::7/128"];
const LISTEN: &[&str] = &[
    "203.0.113.7:8080",
    "198.51.100.1:8080",
    "[2001:db8::7]:8080",
];

#[test]
fn country_rules_block_cn_and_de_and_events_carry_geo() {
    let s = Scenario::start(ScenarioSpec {
        geo: true,
        ..ScenarioSpec::new(
            "oe-geo",
            ADDRS,
            "--enforce",
            "default = \"allow\"\n[deny]\ncountries = [\"CN\", \"DE\"]\n",
        )
    });
    let d = &s.daemon;
    let inside = s.inside(LISTEN);
    probe(&with(&inside, &["tcp", "203.0.113.7:8080"])).assert_eperm("CN host");
    probe(&with(&inside, &["tcp", "[2001:db8::7]:8080"])).assert_eperm("DE host");
    probe(&with(&inside, &["tcp", "198.51.100.1:8080"])).assert_ok("US host");

    let evs = d.wait_events(3, |_| true);
    let find = |dst: &str| {
        evs.iter()
            .find(|e| e["dst"] == dst)
            .unwrap_or_else(|| panic!("no event for {dst}: {evs:#?}"))
    };
    let cn = find("203.0.113.7");
    assert_eq!(cn["verdict"], "blocked");
    assert_eq!(cn["country"], "CN");
    assert_eq!(cn["asn"], 64500);
    assert_eq!(cn["as_org"], "Example CN Net");
    assert_eq!(cn["rule"], "deny.countries:CN");
    let de = find("2001:db8::7");
    assert_eq!(de["verdict"], "blocked");
    assert_eq!(de["country"], "DE");
    assert_eq!(de["rule"], "deny.countries:DE");
    let us = find("198.51.100.1");
    assert_eq!(us["verdict"], "allowed");
    assert_eq!(us["country"], "US");
    assert_eq!(us["asn"], 64501);
    assert_eq!(us["rule"], "default");
}

#[test]
fn a_changed_country_database_is_picked_up_without_restart() {
    let s = Scenario::start(ScenarioSpec {
        geo: true,
        ..ScenarioSpec::new(
            "oe-geo-upd",
            ADDRS,
            "--enforce",
            "default = \"allow\"\n[deny]\ncountries = [\"CN\"]\n",
        )
    });
    let d = &s.daemon;
    let inside = s.inside(LISTEN);
    probe(&with(&inside, &["tcp", "198.51.100.1:8080"])).assert_ok("US host before the update");

    // The new database also places 198.51.100.0/24 in CN; it replaces the old file atomically.
    let country = s.tmp.path().join(ollama_egress_geo::COUNTRY_FILE);
    let next = s.tmp.path().join("country.next.mmdb");
    write_country_db(
        &next,
        &[
            ("203.0.113.0/24".parse().expect("net"), "CN"),
            ("198.51.100.0/24".parse().expect("net"), "CN"),
        ],
    )
    .expect("new fixture");
    std::fs::rename(&next, &country).expect("replace database");
    let mut blocked = false;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        if probe(&with(&inside, &["tcp", "198.51.100.1:8080"])).errno() == Some(libc::EPERM) {
            blocked = true;
            break;
        }
    }
    assert!(
        blocked,
        "the daemon did not pick up the new database:\n{}",
        d.stderr_text()
    );
}

#[test]
fn policy_check_and_geo_lookup_use_the_databases() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (country, asn) = documentation_fixture()
        .write_to(tmp.path())
        .expect("fixture dbs");
    let policy = write_policy(
        tmp.path(),
        "default = \"allow\"\n[allow]\ncidrs = [\"203.0.113.9/32\"]\n[deny]\ncountries = [\"CN\"]\nasns = [64502]\n",
    );
    let run = |args: &[&str]| {
        let out = Command::new(daemon_bin())
            .args(args)
            .output()
            .expect("run ollama-egress");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let geo = [
        "--geo-db",
        country.to_str().expect("utf8"),
        "--asn-db",
        asn.to_str().expect("utf8"),
    ];
    let (ok, text) = run(&[
        &["policy", "check", policy.to_str().expect("utf8")][..],
        &geo,
        &["--explain", "203.0.113.9", "--explain", "203.0.113.10"],
    ]
    .concat());
    assert!(ok, "{text}");
    assert!(
        text.contains("deny.countries:CN") && text.contains("deny.asns:64502"),
        "{text}"
    );
    assert!(
        text.contains("203.0.113.9: allow by allow.cidrs:203.0.113.9/32"),
        "{text}"
    );
    assert!(
        text.contains("203.0.113.10: deny by deny.countries:CN"),
        "{text}"
    );

    let (ok, text) = run(&[&["geo", "lookup", "::ffff:203.0.113.7"][..], &geo].concat());
    assert!(ok, "{text}");
    assert!(
        text.contains("country: CN") && text.contains("64500") && text.contains("Example CN Net"),
        "{text}"
    );

    // An unknown country is an error naming it; no database is an error saying how to get one.
    let bad = write_policy(tmp.path(), "[deny]\ncountries = [\"ZZ\"]\n");
    let (ok, text) = run(&[&["policy", "check", bad.to_str().expect("utf8")][..], &geo].concat());
    assert!(!ok && text.contains("ZZ"), "{text}");
    let (ok, text) = run(&[
        "policy",
        "check",
        bad.to_str().expect("utf8"),
        "--geo-db",
        "/nonexistent/country.mmdb",
    ]);
    assert!(!ok && text.contains("/nonexistent/country.mmdb"), "{text}");
}
