//! Measure the geo crate on real data (not a test: needs the real files).
//!
//! ```text
//! npm pack @ip-location-db/geo-whois-asn-country-mmdb @ip-location-db/asn   # in /tmp
//! tar xzf ...; cargo run --release -p ollama-egress-geo --example geo-measure -- \
//!     COUNTRY.mmdb ASN_CSV_DIR [COUNTRY_CODE...]
//! ```
//!
//! Prints the time to open, expand countries (cold and memoised), convert the ASN CSVs, and
//! look addresses up.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Instant;

use ipnet::IpNet;
use ollama_egress_geo::{ASN_CSVS_IN_TARBALL, AsnMmdbBuilder, GeoDb, GeoError};

fn families(nets: &[IpNet]) -> (usize, usize) {
    let v4 = nets.iter().filter(|n| matches!(n, IpNet::V4(_))).count();
    (v4, nets.len() - v4)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(country), Some(csv_dir)) = (args.next(), args.next()) else {
        return Err("usage: geo-measure COUNTRY.mmdb ASN_CSV_DIR [CC...]".into());
    };
    let mut ccs: Vec<String> = args.collect();
    if ccs.is_empty() {
        ccs = vec!["CN".into(), "US".into(), "RU".into()];
    }
    let country = PathBuf::from(country);
    let csv_dir = PathBuf::from(csv_dir);

    let t = Instant::now();
    let mut builder = AsnMmdbBuilder::new("measure");
    for name in ASN_CSVS_IN_TARBALL {
        builder.add_csv(std::fs::File::open(csv_dir.join(name))?)?;
    }
    let asn_bytes = builder.finish()?;
    println!(
        "ASN conversion: {} rows -> {} CIDRs -> {} bytes in {:?}",
        builder.rows(),
        builder.networks(),
        asn_bytes.len(),
        t.elapsed()
    );
    let asn_path = std::env::temp_dir().join("geo-measure-asn.mmdb");
    std::fs::write(&asn_path, &asn_bytes)?;

    let t = Instant::now();
    let db = GeoDb::open(Some(&country), Some(&asn_path))?;
    println!("open both: {:?}", t.elapsed());

    for cc in &ccs {
        // A fresh GeoDb each time so the memo does not hide the walk.
        let fresh = GeoDb::open(Some(&country), None)?;
        let t = Instant::now();
        let nets = fresh.country_networks(cc)?;
        let cold = t.elapsed();
        let t = Instant::now();
        let again = fresh.country_networks(cc)?;
        let warm = t.elapsed();
        assert_eq!(nets, again);
        let (v4, v6) = families(&nets);
        println!("{cc}: {v4} IPv4 + {v6} IPv6 networks; cold {cold:?}, memoised {warm:?}");
    }
    let refs: Vec<&str> = ccs.iter().map(String::as_str).collect();
    let fresh = GeoDb::open(Some(&country), None)?;
    let t = Instant::now();
    let all = fresh.countries_networks(&refs)?;
    println!("{} countries in one walk: {:?}", all.len(), t.elapsed());

    for asn in [15169u32, 13335, 4134, 37963] {
        let t = Instant::now();
        match db.asn_networks(asn) {
            Ok(nets) => {
                let (v4, v6) = families(&nets);
                println!(
                    "AS{asn}: {v4} IPv4 + {v6} IPv6 networks in {:?}",
                    t.elapsed()
                );
            }
            Err(GeoError::UnknownAsn(_)) => println!("AS{asn}: unknown"),
            Err(e) => return Err(e.into()),
        }
    }

    let probes: Vec<IpAddr> = [
        "8.8.8.8",
        "1.1.1.1",
        "::ffff:114.114.114.114",
        "2400:3200::1",
    ]
    .iter()
    .map(|s| s.parse())
    .collect::<Result<_, _>>()?;
    for ip in &probes {
        println!("{ip}: {:?}", db.lookup(*ip));
    }
    let n = 100_000u32;
    let t = Instant::now();
    for i in 0..n {
        let ip = IpAddr::from(i.wrapping_mul(2_654_435_761).to_be_bytes());
        std::hint::black_box(db.lookup(ip));
    }
    println!("{n} uncached-ish lookups: {:?} per lookup", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(db.lookup(probes[0]));
    }
    println!("{n} cached lookups: {:?} per lookup", t.elapsed() / n);
    std::fs::remove_file(&asn_path)?;
    Ok(())
}
