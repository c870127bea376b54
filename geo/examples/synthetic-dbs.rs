//! Writes a synthetic country and ASN database (one record per /20 of the IPv4 space and as
//! many IPv6 /32s: 3 MB and 5 MB) for measuring the daemon's memory without the download.
//!
//! ```text
//! cargo run -p ollama-egress-geo --example synthetic-dbs -- DIR
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use ollama_egress_geo::fixture::{write_asn_db, write_country_db};

const CODES: [&str; 8] = ["CN", "US", "DE", "FR", "JP", "BR", "IN", "RU"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or("usage: synthetic-dbs DIR")?);
    std::fs::create_dir_all(&dir)?;
    let mut nets = Vec::new();
    for i in 0u32..(1 << 20) / 4 {
        let v4 = Ipv4Net::new(Ipv4Addr::from(i << 12), 20)?;
        nets.push(IpNet::V4(v4));
        let v6 = Ipv6Net::new(Ipv6Addr::from((0x2400_0000u128 + u128::from(i)) << 96), 32)?;
        nets.push(IpNet::V6(v6));
    }
    let countries: Vec<_> = nets
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, CODES[i % CODES.len()]))
        .collect();
    write_country_db(&dir.join("country.mmdb"), &countries)?;
    let orgs: Vec<String> = (0..60_000)
        .map(|i| format!("Example Network {i}"))
        .collect();
    let asns: Vec<_> = nets
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, 64_512 + (i % 60_000) as u32, orgs[i % 60_000].as_str()))
        .collect();
    write_asn_db(&dir.join("asn.mmdb"), &asns)?;
    Ok(())
}
