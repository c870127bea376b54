//! The crate's error type.

use std::path::PathBuf;

/// How to get a database when none is loaded; shared by several messages.
const GET_COUNTRY_DB: &str = "run `ollama-egress geo update` or pass --geo-db FILE";
const GET_ASN_DB: &str = "run `ollama-egress geo update` or pass --asn-db FILE";

/// Everything that can go wrong in geo lookups, expansion and database updates.
///
/// Every message says what failed and what the user can do about it. Update errors name the
/// npm package and the step that failed; an update that fails never replaces the files that
/// were installed before it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GeoError {
    /// A database file could not be opened or is not a valid MaxMind DB.
    #[error(
        "cannot open geo database {path}: {source}; check the path, or re-download it with \
         `ollama-egress geo update`"
    )]
    Open {
        /// The file that failed.
        path: PathBuf,
        /// What the reader reported.
        source: maxminddb::MaxMindDbError,
    },

    /// A database opened but failed while its networks were read (corrupt or truncated tree).
    #[error(
        "geo database {path} is damaged: {source}; re-download it with `ollama-egress geo update`"
    )]
    Corrupt {
        /// The file that failed.
        path: PathBuf,
        /// What the reader reported.
        source: maxminddb::MaxMindDbError,
    },

    /// A database holds valid data, but in no layout this crate can read a country (or an
    /// AS number) from.
    #[error(
        "geo database {path} has an unsupported layout for a {kind} database: its records hold \
         {fields}; expected {expected}"
    )]
    UnsupportedLayout {
        /// The file concerned.
        path: PathBuf,
        /// "country" or "ASN".
        kind: &'static str,
        /// The fields of its first record, with their types.
        fields: String,
        /// The fields this crate reads for that kind of database.
        expected: &'static str,
    },

    /// A country rule was expanded but no country database is loaded.
    #[error("no country database is loaded: {GET_COUNTRY_DB}")]
    NoCountryDatabase,

    /// An ASN rule was expanded but no ASN database is loaded.
    #[error("no ASN database is loaded: {GET_ASN_DB}")]
    NoAsnDatabase,

    /// A country code is not two ASCII letters.
    #[error("invalid country code {0:?}: use an ISO 3166-1 alpha-2 code such as \"CN\" or \"US\"")]
    InvalidCountryCode(String),

    /// The country database has no network for this country code.
    #[error(
        "country {0} has no networks in the country database: check the ISO 3166-1 alpha-2 \
         code, or update the database with `ollama-egress geo update`"
    )]
    UnknownCountry(String),

    /// The ASN database has no network for this AS number.
    #[error(
        "AS{0} has no networks in the ASN database: check the number, or update the database \
         with `ollama-egress geo update`"
    )]
    UnknownAsn(u32),

    /// A line of the ASN CSV could not be converted.
    #[error("ASN CSV line {line}: {reason}")]
    AsnCsv {
        /// 1-based line number in the CSV.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },

    /// An address range given to the ASN builder is reversed or mixes families.
    #[error("invalid address range: {0}")]
    InvalidRange(String),

    /// Writing an mmdb (ASN conversion or a test fixture) failed.
    #[error("cannot build mmdb: {0}")]
    Write(#[from] mmdb_writer::Error),

    /// An update step failed for one package; the previously installed files are untouched.
    #[error(
        "geo update of {package} failed while {step}: {reason}; the previous database files \
         were kept{hint}"
    )]
    Update {
        /// The npm package, e.g. `@ip-location-db/asn`.
        package: String,
        /// The step that failed.
        step: UpdateStep,
        /// What went wrong.
        reason: String,
        /// Advice for the user, starting with "; " (empty when there is none).
        hint: &'static str,
    },

    /// A file system operation outside a package update failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "cannot create directory".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// The step of `geo update` at which a package failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpdateStep {
    /// Fetching or parsing `{registry}/{package}/latest`.
    Metadata,
    /// Downloading the tarball.
    Download,
    /// Checking the tarball against `dist.integrity`.
    Integrity,
    /// Gunzipping and untarring the tarball, or finding the data file in it.
    Unpack,
    /// Converting the ASN CSV into an mmdb.
    Convert,
    /// Opening the new database and checking that it answers known lookups.
    Verify,
    /// Writing the new file next to the old one and renaming it into place.
    Install,
}

impl std::fmt::Display for UpdateStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UpdateStep::Metadata => "fetching the registry metadata",
            UpdateStep::Download => "downloading the tarball",
            UpdateStep::Integrity => "checking the tarball's integrity",
            UpdateStep::Unpack => "unpacking the tarball",
            UpdateStep::Convert => "converting the CSV to mmdb",
            UpdateStep::Verify => "verifying the new database",
            UpdateStep::Install => "installing the new database",
        })
    }
}

impl GeoError {
    /// The update step that failed, if this is an update error.
    pub fn update_step(&self) -> Option<UpdateStep> {
        match self {
            GeoError::Update { step, .. } => Some(*step),
            _ => None,
        }
    }
}
