//! GeoIP and ASN support for ollama-egress.
//!
//! - [`GeoDb`] opens a country database and/or an ASN database (MaxMind GeoLite2/GeoIP2,
//!   DB-IP lite, IPinfo lite, ip-location-db layouts, any valid integer encoding) and answers [`GeoDb::lookup`] with a
//!   [`GeoInfo`], through a small bounded cache.
//! - [`GeoDb::country_networks`] / [`GeoDb::asn_networks`] expand a country or AS number
//!   into every network of it, in both families, for the policy compiler.
//! - [`update()`] downloads the free ip-location-db data from the npm registry, checks it and
//!   installs it atomically (`ollama-egress geo update`).
//! - [`fixture`] (feature `fixtures`) writes small databases for tests.
//!
//! Data attribution: see [`ATTRIBUTION`].

mod cache;
mod convert;
mod country;
mod error;
mod expand;
mod fetch;
#[cfg(feature = "fixtures")]
pub mod fixture;
mod lookup;
mod mapped;
mod record;
mod update;

pub use convert::{ASN_DATABASE_TYPE, AsnMmdbBuilder, range_to_cidrs};
pub use country::{CountryCode, InvalidCountryCode};
pub use error::{GeoError, UpdateStep};
pub use expand::normalize_country_code;
pub use fetch::{check_integrity, metadata_url};
pub use lookup::{DatabaseInfo, GeoDb, GeoInfo, LOOKUP_CACHE_ENTRIES, normalize_ip};
pub use update::{
    ASN_ATTRIBUTION, ASN_CSVS_IN_TARBALL, ASN_FILE, ASN_PACKAGE, ATTRIBUTION, COUNTRY_ATTRIBUTION,
    COUNTRY_FILE, COUNTRY_MMDB_IN_TARBALL, COUNTRY_PACKAGE, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DIR,
    DEFAULT_READ_TIMEOUT, DEFAULT_REGISTRY, DEFAULT_TIMEOUT, PackageReport, SOURCE_FILE,
    UpdateOptions, UpdateReport, update,
};

#[cfg(test)]
mod tests;
