//! Opening country/ASN databases and looking addresses up in them.

use std::collections::HashMap;
use std::fs::File;
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use ipnet::IpNet;
use maxminddb::WithinOptions;
use maxminddb::{LookupResult, Reader};

use crate::cache::ClockCache;
use crate::error::GeoError;
use crate::mapped::Mapped;
use crate::record::{Any, GeoRecord, describe};

/// How many lookup results [`GeoDb`] keeps (one entry per destination address).
pub const LOOKUP_CACHE_ENTRIES: usize = 4096;

/// What the databases say about one address. Fields are `None` when the address is not in a
/// database, or when that database is not loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GeoInfo {
    /// ISO 3166-1 alpha-2 country code, e.g. `"CN"`.
    pub country: Option<String>,
    /// Autonomous system number, e.g. `45102`.
    pub asn: Option<u32>,
    /// Autonomous system organisation, e.g. `"Alibaba (US) Technology Co., Ltd."`.
    pub as_org: Option<String>,
}

/// Facts about one loaded database file, for `status` output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DatabaseInfo {
    /// The file it was read from.
    pub path: PathBuf,
    /// The `database_type` field of the mmdb metadata.
    pub database_type: String,
    /// Build time, seconds since the Unix epoch.
    pub build_epoch: u64,
    /// 4 or 6.
    pub ip_version: u16,
}

/// One opened mmdb file.
pub(crate) struct Db {
    pub(crate) path: PathBuf,
    pub(crate) reader: Reader<Mapped>,
    /// The reader's mapping, for [`Mapped::release`] after a walk.
    mapped: Mapped,
}

/// What a database is opened as; decides which fields its records must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Country,
    Asn,
}

/// How many distinct records [`Db::open`] reads looking for one it understands.
const PROBE_RECORDS: usize = 4096;

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Country => "country",
            Kind::Asn => "ASN",
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Kind::Country => {
                "`country_code`, `country.iso_code` or `registered_country.iso_code` with a \
                 two-letter code"
            }
            Kind::Asn => {
                "`autonomous_system_number`, `asn` or `traits.autonomous_system_number` with \
                 an AS number (an integer of any width, or a string such as \"AS13335\")"
            }
        }
    }
}

impl Db {
    /// Open `path` and check that its records are in a layout this crate reads as `kind`.
    pub(crate) fn open(path: &Path, kind: Kind) -> Result<Db, GeoError> {
        let file = File::open(path).map_err(|e| GeoError::Open {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Db::map(path, &file, kind)
    }

    /// Map `file` (opened from `path`) and check that its records are in a layout this crate
    /// reads as `kind`.
    ///
    /// The file must be a regular file that is still the one at `path` once mapped (see
    /// [`Mapped`] for why). Up to [`PROBE_RECORDS`] distinct records are read; if none holds
    /// a country code (an AS number), the database is refused as an unsupported layout,
    /// naming the fields of the first record. A database with no data at all opens (it
    /// answers nothing).
    pub(crate) fn map(path: &Path, file: &File, kind: Kind) -> Result<Db, GeoError> {
        let io_err = |source| GeoError::Io {
            action: "cannot map geo database",
            path: path.to_path_buf(),
            source,
        };
        let meta = file.metadata().map_err(io_err)?;
        if !meta.file_type().is_file() {
            return Err(io_err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "it is not a regular file",
            )));
        }
        let mapped = Mapped::map(file, meta.len()).map_err(io_err)?;
        let now = std::fs::metadata(path).map_err(io_err)?;
        if (now.dev(), now.ino(), now.len()) != (meta.dev(), meta.ino(), meta.len()) {
            return Err(io_err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "it was replaced while it was opened (an update may be running)",
            )));
        }
        let reader = Reader::from_source(mapped.clone()).map_err(|source| GeoError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let db = Db {
            path: path.to_path_buf(),
            reader,
            mapped,
        };
        db.probe(kind)?;
        Ok(db)
    }

    fn probe(&self, kind: Kind) -> Result<(), GeoError> {
        let mut seen = std::collections::HashSet::new();
        let mut first = None;
        let mut known = false;
        self.each_network(|item| {
            let Some(offset) = item.offset() else {
                return Ok(ControlFlow::Continue(()));
            };
            if !seen.insert(offset) {
                return Ok(ControlFlow::Continue(()));
            }
            known = match kind {
                Kind::Country => decode_country(item)?.is_some(),
                Kind::Asn => decode_asn(item)?.is_some(),
            };
            if known {
                return Ok(ControlFlow::Break(()));
            }
            if first.is_none() {
                first = Some(describe(
                    &item.decode::<Any<'_>>()?.unwrap_or(Any::Map(vec![])),
                ));
            }
            Ok(if seen.len() >= PROBE_RECORDS {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })?;
        if known {
            return Ok(());
        }
        match first {
            None => Ok(()),
            Some(fields) => Err(GeoError::UnsupportedLayout {
                path: self.path.clone(),
                kind: kind.name(),
                fields,
                expected: kind.expected(),
            }),
        }
    }

    /// Visits every network of the tree with its record, in tree order, until `visit` breaks;
    /// an error reading the tree or decoding a record is [`GeoError::Corrupt`].
    pub(crate) fn each_network<F>(&self, mut visit: F) -> Result<(), GeoError>
    where
        F: FnMut(&LookupResult<'_, Mapped>) -> Result<ControlFlow<()>, maxminddb::MaxMindDbError>,
    {
        let corrupt = |source| GeoError::Corrupt {
            path: self.path.clone(),
            source,
        };
        for item in self
            .reader
            .networks(WithinOptions::default())
            .map_err(corrupt)?
        {
            if visit(&item.map_err(corrupt)?).map_err(corrupt)?.is_break() {
                break;
            }
        }
        self.mapped.release();
        Ok(())
    }

    fn info(&self) -> DatabaseInfo {
        let m = self.reader.metadata();
        DatabaseInfo {
            path: self.path.clone(),
            database_type: m.database_type.clone(),
            build_epoch: m.build_epoch,
            ip_version: m.ip_version,
        }
    }
}

/// Already expanded country/ASN network lists, so a policy reload does not walk the tree again.
#[derive(Default)]
pub(crate) struct ExpansionMemo {
    pub(crate) countries: HashMap<String, Arc<Vec<IpNet>>>,
    pub(crate) asns: HashMap<u32, Arc<Vec<IpNet>>>,
}

/// Country and ASN databases, either of which may be absent.
///
/// Lookups go through a small bounded cache (events are per connection, so the same
/// destinations repeat); the API takes `&self` and is safe to share between threads.
pub struct GeoDb {
    pub(crate) country: Option<Db>,
    pub(crate) asn: Option<Db>,
    cache: Mutex<ClockCache<IpAddr, GeoInfo>>,
    pub(crate) memo: Mutex<ExpansionMemo>,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field("country", &self.country.as_ref().map(|d| &d.path))
            .field("asn", &self.asn.as_ref().map(|d| &d.path))
            .finish_non_exhaustive()
    }
}

/// The country code (upper case) of a record, in any supported layout.
pub(crate) fn decode_country<S: AsRef<[u8]>>(
    r: &LookupResult<'_, S>,
) -> Result<Option<String>, maxminddb::MaxMindDbError> {
    Ok(r.decode::<GeoRecord<'_>>()?.and_then(|rec| rec.country()))
}

/// The AS number and organisation of a record, in any supported layout.
pub(crate) fn decode_asn<'a, S: AsRef<[u8]>>(
    r: &LookupResult<'a, S>,
) -> Result<Option<(u32, Option<&'a str>)>, maxminddb::MaxMindDbError> {
    Ok(r.decode::<GeoRecord<'a>>()?.and_then(|rec| rec.asn()))
}

/// The address a lookup uses: IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes IPv4.
pub fn normalize_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

impl GeoDb {
    /// Open a country database and/or an ASN database; either may be `None`.
    ///
    /// Either file may be in any supported layout (MaxMind GeoLite2/GeoIP2 Country, City,
    /// ASN; DB-IP lite; IPinfo lite; ip-location-db), with numbers in any integer width; one
    /// file holding both (IPinfo lite) may be given for both. Errors name the file that
    /// failed: [`GeoError::Open`] for a file that is not a MaxMind DB,
    /// [`GeoError::UnsupportedLayout`] for valid data without the fields needed,
    /// [`GeoError::Corrupt`] for a damaged data section.
    pub fn open(country: Option<&Path>, asn: Option<&Path>) -> Result<GeoDb, GeoError> {
        let country = country.map(|p| Db::open(p, Kind::Country)).transpose()?;
        let asn = asn.map(|p| Db::open(p, Kind::Asn)).transpose()?;
        Ok(GeoDb::with(country, asn))
    }

    /// Like [`GeoDb::open`], with files the caller opened (and checked) from those paths: each
    /// is mapped, not read into memory, and must still be the file at its path once mapped.
    pub fn open_files(
        country: Option<(&Path, &File)>,
        asn: Option<(&Path, &File)>,
    ) -> Result<GeoDb, GeoError> {
        let country = country
            .map(|(p, f)| Db::map(p, f, Kind::Country))
            .transpose()?;
        let asn = asn.map(|(p, f)| Db::map(p, f, Kind::Asn)).transpose()?;
        Ok(GeoDb::with(country, asn))
    }

    fn with(country: Option<Db>, asn: Option<Db>) -> GeoDb {
        GeoDb {
            country,
            asn,
            cache: Mutex::new(ClockCache::new(LOOKUP_CACHE_ENTRIES)),
            memo: Mutex::new(ExpansionMemo::default()),
        }
    }

    /// A `GeoDb` with no databases: every lookup answers nothing, every expansion fails.
    pub fn empty() -> GeoDb {
        GeoDb::with(None, None)
    }

    /// Whether a country database is loaded.
    pub fn has_country(&self) -> bool {
        self.country.is_some()
    }

    /// Whether an ASN database is loaded.
    pub fn has_asn(&self) -> bool {
        self.asn.is_some()
    }

    /// Metadata of the loaded country database.
    pub fn country_info(&self) -> Option<DatabaseInfo> {
        self.country.as_ref().map(Db::info)
    }

    /// Metadata of the loaded ASN database.
    pub fn asn_info(&self) -> Option<DatabaseInfo> {
        self.asn.as_ref().map(Db::info)
    }

    /// Country, ASN and AS organisation of `ip`.
    ///
    /// IPv4-mapped IPv6 addresses are looked up as IPv4. An address a database does not
    /// cover, or a damaged record, leaves the fields `None` (a damaged record is logged).
    pub fn lookup(&self, ip: IpAddr) -> GeoInfo {
        self.lookup_with(ip, GeoInfo::clone)
    }

    /// [`lookup`](Self::lookup), handing `f` the answer borrowed (from the cache when it holds
    /// it), so a caller that copies the strings into buffers of its own allocates nothing.
    pub fn lookup_with<R>(&self, ip: IpAddr, f: impl FnOnce(&GeoInfo) -> R) -> R {
        let ip = normalize_ip(ip);
        if let Some(hit) = self.lock_cache().get(&ip) {
            return f(hit);
        }
        let info = self.lookup_uncached(ip);
        let answer = f(&info);
        self.lock_cache().insert(ip, info);
        answer
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, ClockCache<IpAddr, GeoInfo>> {
        // A panic while holding the lock cannot leave the cache inconsistent in a harmful
        // way (at worst one stale entry), so keep using it.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lookup_uncached(&self, ip: IpAddr) -> GeoInfo {
        let mut info = GeoInfo::default();
        if let Some(db) = &self.country {
            match db.reader.lookup(ip).and_then(|r| decode_country(&r)) {
                Ok(cc) => info.country = cc,
                Err(e) => {
                    tracing::debug!(%ip, path = %db.path.display(), error = %e, "country lookup failed")
                }
            }
        }
        if let Some(db) = &self.asn {
            match db
                .reader
                .lookup(ip)
                .and_then(|r| decode_asn(&r).map(|a| a.map(|(n, org)| (n, org.map(str::to_owned)))))
            {
                Ok(Some((n, org))) => {
                    info.asn = Some(n);
                    info.as_org = org;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(%ip, path = %db.path.display(), error = %e, "ASN lookup failed")
                }
            }
        }
        info
    }
}
