//! Expanding a country or an AS number into every network the database assigns to it.
//!
//! One expansion walks the whole search tree once (about a million networks in the real
//! country database). Three things keep it cheap: a record is decoded once per distinct data
//! offset (the real country file has ~250 distinct records), several countries or ASNs can be
//! expanded in one walk ([`GeoDb::countries_networks`]), and results are remembered for the
//! life of the `GeoDb`, so a policy reload that names the same countries walks nothing.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv6Addr;
use std::ops::ControlFlow;
use std::sync::{Arc, PoisonError};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use ipnetwork::IpNetwork;
use maxminddb::LookupResult;

use crate::country::CountryCode;
use crate::error::GeoError;
use crate::lookup::{Db, GeoDb, decode_asn, decode_country};

/// IPv6 ranges that only ever alias IPv4 space and are never returned: IPv4-mapped
/// (`::ffff:0:0/96`) and IPv4-compatible (`::/96`). The kernel side judges IPv4-mapped
/// destinations as IPv4, so the IPv4 networks already cover them.
///
/// Aliases that a database installs by pointing a subtree at the IPv4 tree (`::ffff:0:0/96`,
/// 6to4 `2002::/16`, Teredo `2001::/32` in MaxMind-style writers) are skipped by the tree
/// walk itself; real data a database stores inside `2002::/16` or `2001::/32` (e.g. a 6to4
/// relay) is kept.
const IPV6_EXCLUDED: [(Ipv6Addr, u8); 2] = [
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96),
    (Ipv6Addr::UNSPECIFIED, 96),
];

fn excluded_v6(net: &Ipv6Net) -> bool {
    IPV6_EXCLUDED.iter().any(|&(addr, len)| {
        Ipv6Net::new(addr, len)
            .map(|ex| ex.contains(net))
            .unwrap_or(false)
    })
}

/// Normalise a country code: two ASCII letters, upper-cased.
/// Surrounding white space is ignored; the check is [`CountryCode::parse`].
pub fn normalize_country_code(cc: &str) -> Result<String, GeoError> {
    CountryCode::parse(cc.trim())
        .map(String::from)
        .map_err(|e| GeoError::InvalidCountryCode(e.0))
}

fn to_ipnet(n: IpNetwork) -> Option<IpNet> {
    match n {
        IpNetwork::V4(n) => Ipv4Net::new(n.network(), n.prefix()).ok().map(IpNet::V4),
        IpNetwork::V6(n) => {
            let net = Ipv6Net::new(n.network(), n.prefix()).ok()?;
            (!excluded_v6(&net)).then_some(IpNet::V6(net))
        }
    }
}

/// Walk every network of `db` once; `classify` maps a record to the index of the group it
/// belongs to (or `None`). Records are classified once per distinct data offset.
fn walk<F>(db: &Db, groups: usize, mut classify: F) -> Result<Vec<Vec<IpNet>>, GeoError>
where
    F: FnMut(
        &LookupResult<'_, crate::mapped::Mapped>,
    ) -> Result<Option<usize>, maxminddb::MaxMindDbError>,
{
    let mut out = vec![Vec::new(); groups];
    let mut by_offset: HashMap<usize, Option<usize>> = HashMap::new();
    db.each_network(|item| {
        let Some(offset) = item.offset() else {
            return Ok(ControlFlow::Continue(()));
        };
        let group = match by_offset.get(&offset) {
            Some(g) => *g,
            None => {
                let g = classify(item)?;
                by_offset.insert(offset, g);
                g
            }
        };
        if let Some(g) = group
            && let Some(net) = to_ipnet(item.network()?)
        {
            out[g].push(net);
        }
        Ok(ControlFlow::Continue(()))
    })?;
    // The tree is normally minimal already; this merges neighbours that carry different
    // records with the same answer (e.g. GeoLite2 records that differ in other fields) and
    // sorts the list, IPv4 first.
    Ok(out
        .into_iter()
        .map(|nets| IpNet::aggregate(&nets))
        .collect())
}

impl GeoDb {
    /// Every network the country database assigns to `cc` (ISO 3166-1 alpha-2, any case),
    /// IPv4 then IPv6, sorted and aggregated. IPv4-mapped/compatible IPv6 aliases are left out.
    ///
    /// Errors: [`GeoError::NoCountryDatabase`], [`GeoError::InvalidCountryCode`],
    /// [`GeoError::UnknownCountry`] when the database has no network for it.
    pub fn country_networks(&self, cc: &str) -> Result<Vec<IpNet>, GeoError> {
        let mut all = self.countries_networks(&[cc])?;
        Ok(all.pop_first().map(|(_, v)| v).unwrap_or_default())
    }

    /// [`country_networks`](Self::country_networks) for several countries in one walk of the
    /// tree, keyed by the upper-cased code. Fails on the first unknown country.
    pub fn countries_networks(
        &self,
        ccs: &[&str],
    ) -> Result<BTreeMap<String, Vec<IpNet>>, GeoError> {
        let db = self.country.as_ref().ok_or(GeoError::NoCountryDatabase)?;
        let wanted = ccs
            .iter()
            .map(|cc| normalize_country_code(cc))
            .collect::<Result<Vec<_>, _>>()?;
        let mut memo = self.memo.lock().unwrap_or_else(PoisonError::into_inner);
        let mut missing: Vec<String> = wanted
            .iter()
            .filter(|cc| !memo.countries.contains_key(*cc))
            .cloned()
            .collect();
        missing.sort();
        missing.dedup();
        if !missing.is_empty() {
            let started = std::time::Instant::now();
            let found = walk(db, missing.len(), |r| {
                Ok(decode_country(r)?.and_then(|cc| missing.iter().position(|m| *m == cc)))
            })?;
            tracing::debug!(countries = ?missing, elapsed = ?started.elapsed(), "expanded countries");
            for (cc, nets) in missing.into_iter().zip(found) {
                memo.countries.insert(cc, Arc::new(nets));
            }
        }
        let mut out = BTreeMap::new();
        for cc in wanted {
            let nets = memo.countries.get(&cc).cloned().unwrap_or_default();
            if nets.is_empty() {
                return Err(GeoError::UnknownCountry(cc));
            }
            out.insert(cc, nets.as_ref().clone());
        }
        Ok(out)
    }

    /// Every network the ASN database assigns to AS `asn`, IPv4 then IPv6, sorted and
    /// aggregated.
    ///
    /// Errors: [`GeoError::NoAsnDatabase`], [`GeoError::UnknownAsn`] when the database has no
    /// network for it.
    pub fn asn_networks(&self, asn: u32) -> Result<Vec<IpNet>, GeoError> {
        let mut all = self.asns_networks(&[asn])?;
        Ok(all.pop_first().map(|(_, v)| v).unwrap_or_default())
    }

    /// [`asn_networks`](Self::asn_networks) for several AS numbers in one walk of the tree.
    /// Fails on the first unknown AS number.
    pub fn asns_networks(&self, asns: &[u32]) -> Result<BTreeMap<u32, Vec<IpNet>>, GeoError> {
        let db = self.asn.as_ref().ok_or(GeoError::NoAsnDatabase)?;
        let mut memo = self.memo.lock().unwrap_or_else(PoisonError::into_inner);
        let mut missing: Vec<u32> = asns
            .iter()
            .copied()
            .filter(|n| !memo.asns.contains_key(n))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            let started = std::time::Instant::now();
            let found = walk(db, missing.len(), |r| {
                Ok(decode_asn(r)?.and_then(|(n, _)| missing.binary_search(&n).ok()))
            })?;
            tracing::debug!(asns = ?missing, elapsed = ?started.elapsed(), "expanded ASNs");
            for (n, nets) in missing.into_iter().zip(found) {
                memo.asns.insert(n, Arc::new(nets));
            }
        }
        let mut out = BTreeMap::new();
        for &n in asns {
            let nets = memo.asns.get(&n).cloned().unwrap_or_default();
            if nets.is_empty() {
                return Err(GeoError::UnknownAsn(n));
            }
            out.insert(n, nets.as_ref().clone());
        }
        Ok(out)
    }

    /// Number of (IPv4, IPv6) networks with data in the country (`country == true`) or ASN
    /// database, as the tree stores them.
    pub(crate) fn count_networks(&self, country: bool) -> Result<(usize, usize), GeoError> {
        let db = if country { &self.country } else { &self.asn };
        let db = db.as_ref().ok_or(if country {
            GeoError::NoCountryDatabase
        } else {
            GeoError::NoAsnDatabase
        })?;
        let (mut v4, mut v6) = (0, 0);
        db.each_network(|item| {
            match item.network()? {
                IpNetwork::V4(_) => v4 += 1,
                IpNetwork::V6(_) => v6 += 1,
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok((v4, v6))
    }
}
