//! Building an mmdb in GeoLite2-ASN layout, e.g. from the ip-location-db ASN CSV.
//!
//! The CSV (`@ip-location-db/asn`, files `asn-ipv4.csv` and `asn-ipv6.csv`) has no header and
//! four columns: `ip_range_start, ip_range_end, autonomous_system_number,
//! autonomous_system_organization`, where the range is inclusive and the organisation is
//! quoted when it holds a comma. Each range becomes the minimal set of CIDR networks that
//! covers exactly that range.

use std::io::Read;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};
use mmdb_writer::{Ipv4Aliasing, Value, Writer};

use crate::error::GeoError;

/// `database_type` of the ASN databases this crate writes (the same as MaxMind's).
pub const ASN_DATABASE_TYPE: &str = "GeoLite2-ASN";

/// The GeoLite2-ASN record for one AS.
pub(crate) fn asn_value(asn: u32, org: &str) -> Value {
    let mut entries = vec![("autonomous_system_number", Value::from(asn))];
    if !org.is_empty() {
        entries.push(("autonomous_system_organization", Value::from(org)));
    }
    Value::map(entries)
}

/// The minimal list of CIDR networks covering exactly `start..=end` (same family).
pub fn range_to_cidrs(start: IpAddr, end: IpAddr) -> Result<Vec<IpNet>, String> {
    match (start, end) {
        (IpAddr::V4(s), IpAddr::V4(e)) if s <= e => {
            Ok(Ipv4Subnets::new(s, e, 0).map(IpNet::V4).collect())
        }
        (IpAddr::V6(s), IpAddr::V6(e)) if s <= e => {
            Ok(Ipv6Subnets::new(s, e, 0).map(IpNet::V6).collect())
        }
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
            Err(format!("range start {start} is above its end {end}"))
        }
        _ => Err(format!(
            "range {start} - {end} mixes IPv4 and IPv6 addresses"
        )),
    }
}

/// Accumulates AS ranges and writes them as an mmdb in GeoLite2-ASN layout
/// (`autonomous_system_number`, `autonomous_system_organization`).
///
/// The database is IPv6 (IPv4 under `::/96`) without IPv4 aliases, so real data inside
/// `2001::/32` (Teredo) and `2002::/16` (6to4) can be stored; look IPv4-mapped addresses up
/// as IPv4 (as [`GeoDb::lookup`](crate::GeoDb::lookup) does). Later ranges win where ranges
/// overlap.
pub struct AsnMmdbBuilder {
    writer: Writer,
    rows: u64,
    networks: u64,
}

impl std::fmt::Debug for AsnMmdbBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsnMmdbBuilder")
            .field("rows", &self.rows)
            .field("networks", &self.networks)
            .finish_non_exhaustive()
    }
}

impl AsnMmdbBuilder {
    /// A builder whose database carries `description` (English) in its metadata.
    pub fn new(description: &str) -> Self {
        AsnMmdbBuilder {
            writer: Writer::builder(ASN_DATABASE_TYPE)
                .description(&[("en", description)])
                .ipv4_aliasing(Ipv4Aliasing::Disabled)
                .build(),
            rows: 0,
            networks: 0,
        }
    }

    /// Map one network to an AS.
    pub fn add_network(&mut self, net: IpNet, asn: u32, org: &str) -> Result<(), GeoError> {
        self.writer.insert_value(net, asn_value(asn, org))?;
        self.networks += 1;
        Ok(())
    }

    /// Map the inclusive range `start..=end` to an AS.
    pub fn add_range(
        &mut self,
        start: IpAddr,
        end: IpAddr,
        asn: u32,
        org: &str,
    ) -> Result<(), GeoError> {
        let value = asn_value(asn, org);
        let nets = range_to_cidrs(start, end).map_err(GeoError::InvalidRange)?;
        for net in nets {
            self.writer.insert_value(net, value.clone())?;
            self.networks += 1;
        }
        Ok(())
    }

    /// Add every row of an ip-location-db ASN CSV; returns the number of rows read.
    ///
    /// A malformed row fails the whole conversion with its line number.
    pub fn add_csv<R: Read>(&mut self, input: R) -> Result<u64, GeoError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(input);
        let mut record = csv::StringRecord::new();
        let mut rows = 0;
        loop {
            let line = reader.position().line();
            let more = reader
                .read_record(&mut record)
                .map_err(|e| GeoError::AsnCsv {
                    line,
                    reason: e.to_string(),
                })?;
            if !more {
                break;
            }
            let bad = |reason: String| GeoError::AsnCsv { line, reason };
            if record.len() < 3 {
                return Err(bad(format!(
                    "expected 4 columns (start, end, ASN, organisation), found {}",
                    record.len()
                )));
            }
            let start: IpAddr = record[0]
                .trim()
                .parse()
                .map_err(|_| bad(format!("bad range start {:?}", &record[0])))?;
            let end: IpAddr = record[1]
                .trim()
                .parse()
                .map_err(|_| bad(format!("bad range end {:?}", &record[1])))?;
            let asn: u32 = record[2]
                .trim()
                .parse()
                .map_err(|_| bad(format!("bad AS number {:?}", &record[2])))?;
            let org = record.get(3).map(str::trim).unwrap_or("");
            let nets = range_to_cidrs(start, end).map_err(bad)?;
            let value = asn_value(asn, org);
            for net in nets {
                self.writer.insert_value(net, value.clone())?;
                self.networks += 1;
            }
            rows += 1;
            self.rows += 1;
        }
        Ok(rows)
    }

    /// Rows added so far through [`add_csv`](Self::add_csv).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// CIDR networks inserted so far.
    pub fn networks(&self) -> u64 {
        self.networks
    }

    /// Serialise the database.
    pub fn finish(&self) -> Result<Vec<u8>, GeoError> {
        Ok(self.writer.to_bytes()?)
    }
}
