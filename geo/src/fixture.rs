//! Small country/ASN databases for tests (feature `fixtures`).
//!
//! Tests route traffic only to documentation ranges; [`documentation_fixture`] maps them to
//! countries and ASNs so policies with `countries`/`asns` rules can be exercised:
//!
//! | network | country | ASN |
//! |---|---|---|
//! | `203.0.113.0/24` | CN | 64500 "Example CN Net" |
//! | `198.51.100.0/24` | US | 64501 "Example US Net" |
//! | `192.0.2.0/24` | US | — |
//! | `2001:db8::/32` | DE | 64502 "Example DE Net" |

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use mmdb_writer::{Value, Writer};

use crate::convert::AsnMmdbBuilder;
use crate::error::GeoError;
use crate::update::{ASN_FILE, COUNTRY_FILE};

const DESCRIPTION: &str = "ollama-egress test fixture";

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), GeoError> {
    std::fs::write(path, bytes).map_err(|source| GeoError::Io {
        action: "cannot write fixture database",
        path: path.to_path_buf(),
        source,
    })
}

fn write_country(
    path: &Path,
    database_type: &str,
    entries: &[(IpNet, &str)],
    record: impl Fn(&str) -> Value,
) -> Result<(), GeoError> {
    let mut w = Writer::builder(database_type)
        .description(&[("en", DESCRIPTION)])
        .build();
    for (net, cc) in entries {
        w.insert_value(*net, record(cc))?;
    }
    write_file(path, &w.to_bytes()?)
}

/// Write a country database in ip-location-db layout (`{"country_code": "CN"}`).
///
/// The database is IPv6 with IPv4 aliases (`::ffff:0:0/96`, 6to4, Teredo) installed, as
/// MaxMind-style writers do, so expansion tests see that aliases are left out.
pub fn write_country_db(path: &Path, entries: &[(IpNet, &str)]) -> Result<(), GeoError> {
    write_country(path, "country", entries, |cc| {
        Value::map([("country_code", Value::from(cc))])
    })
}

/// Write a country database in MaxMind GeoLite2-Country layout
/// (`{"country": {"iso_code": "CN", ...}, "registered_country": {...}}`).
pub fn write_country_db_maxmind(path: &Path, entries: &[(IpNet, &str)]) -> Result<(), GeoError> {
    write_country(path, "GeoLite2-Country", entries, |cc| {
        let country = Value::map([
            ("iso_code", Value::from(cc)),
            ("names", Value::map([("en", Value::from(cc))])),
        ]);
        Value::map([
            ("country", country.clone()),
            ("registered_country", country),
        ])
    })
}

/// Write an ASN database in GeoLite2-ASN layout
/// (`autonomous_system_number`, `autonomous_system_organization`).
pub fn write_asn_db(path: &Path, entries: &[(IpNet, u32, &str)]) -> Result<(), GeoError> {
    let mut b = AsnMmdbBuilder::new(DESCRIPTION);
    for (net, asn, org) in entries {
        b.add_network(*net, *asn, org)?;
    }
    write_file(path, &b.finish()?)
}

/// The standard test mapping of the documentation ranges (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentationFixture {
    /// Network → country code.
    pub countries: Vec<(IpNet, &'static str)>,
    /// Network → AS number and organisation.
    pub asns: Vec<(IpNet, u32, &'static str)>,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len))
}

const CN_NET: IpNet = v4(203, 0, 113, 0, 24);
const US_NET: IpNet = v4(198, 51, 100, 0, 24);
const US_NET2: IpNet = v4(192, 0, 2, 0, 24);
const DE_NET: IpNet = IpNet::V6(Ipv6Net::new_assert(
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
    32,
));

/// The standard test mapping: 203.0.113.0/24 → CN (AS64500 "Example CN Net"),
/// 198.51.100.0/24 → US (AS64501 "Example US Net"), 192.0.2.0/24 → US (no ASN),
/// 2001:db8::/32 → DE (AS64502 "Example DE Net").
pub fn documentation_fixture() -> DocumentationFixture {
    DocumentationFixture {
        countries: vec![
            (CN_NET, "CN"),
            (US_NET, "US"),
            (US_NET2, "US"),
            (DE_NET, "DE"),
        ],
        asns: vec![
            (CN_NET, 64500, "Example CN Net"),
            (US_NET, 64501, "Example US Net"),
            (DE_NET, 64502, "Example DE Net"),
        ],
    }
}

impl DocumentationFixture {
    /// Write `country.mmdb` (ip-location-db layout) and `asn.mmdb` into `dir`; returns their
    /// paths (country, ASN).
    pub fn write_to(&self, dir: &Path) -> Result<(PathBuf, PathBuf), GeoError> {
        let country = dir.join(COUNTRY_FILE);
        let asn = dir.join(ASN_FILE);
        write_country_db(&country, &self.countries)?;
        write_asn_db(&asn, &self.asns)?;
        Ok((country, asn))
    }
}
