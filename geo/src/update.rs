//! `ollama-egress geo update`: download the free country and ASN data from the npm registry,
//! check it, and install it atomically.
//!
//! For each package: `GET {registry}/@ip-location-db%2f{name}/latest`, download `dist.tarball`,
//! check it against `dist.integrity` (`sha512-<base64>`), unpack it (a truncated or corrupt
//! archive is rejected), build the mmdb (the country mmdb is used as shipped; the ASN CSVs are
//! converted to GeoLite2-ASN layout), write it to a temporary file in the target directory,
//! open it and check it answers known lookups. Only when both packages got that far are the
//! files renamed over `country.mmdb` and `asn.mmdb` and the directory fsynced. Any failure
//! leaves the previously installed files as they were and names the package and the step.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::convert::AsnMmdbBuilder;
use crate::error::{GeoError, UpdateStep};
use crate::fetch::{
    Http, Latest, MAX_METADATA_BYTES, MAX_TARBALL_BYTES, Timeouts, check_integrity, unpack,
};
use crate::lookup::GeoDb;

/// File name of the installed country database.
pub const COUNTRY_FILE: &str = "country.mmdb";
/// File name of the installed ASN database.
pub const ASN_FILE: &str = "asn.mmdb";
/// File name of the provenance record written next to the databases.
pub const SOURCE_FILE: &str = "SOURCE.json";
/// Where `geo update` installs the databases by default.
pub const DEFAULT_DIR: &str = "/var/lib/ollama-egress/geo";
/// The npm registry used by default.
pub const DEFAULT_REGISTRY: &str = "https://registry.npmjs.org";
/// Default time limit for one HTTP request (metadata or tarball), body included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Default time limit for setting up a connection (DNS, TCP, TLS).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Default longest wait for the next bytes from the server (a stalled request fails).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(20);

/// npm package with the country mmdb.
pub const COUNTRY_PACKAGE: &str = "@ip-location-db/geo-whois-asn-country-mmdb";
/// npm package with the ASN CSVs.
pub const ASN_PACKAGE: &str = "@ip-location-db/asn";
/// The country mmdb inside [`COUNTRY_PACKAGE`]'s tarball (IPv4 and IPv6 in one file).
pub const COUNTRY_MMDB_IN_TARBALL: &str = "geo-whois-asn-country.mmdb";
/// The CSVs inside [`ASN_PACKAGE`]'s tarball.
pub const ASN_CSVS_IN_TARBALL: [&str; 2] = ["asn-ipv4.csv", "asn-ipv6.csv"];

macro_rules! country_attribution {
    () => {
        "Country data: ip-location-db geo-whois-asn-country \
(https://github.com/sapics/ip-location-db), built from GeoFeed, the WHOIS data of the five \
RIRs (AFRINIC, APNIC, ARIN, LACNIC, RIPE NCC) and their IP-ASN-country data. The RIR data \
is provided by the Number Resource Organization (NRO, https://www.nro.net/) under the Creative \
Commons Attribution 4.0 International licence (CC BY 4.0); copyright holder: NRO."
    };
}

macro_rules! asn_attribution {
    () => {
        "ASN data: ip-location-db asn (https://github.com/sapics/ip-location-db), CC BY 4.0, \
created from the Route Views IP to AS Number database (https://www.routeviews.org/, \
CC BY 4.0), the RIR data of the NRO (https://www.nro.net/, CC BY 4.0) and the DB-IP IP to \
ASN Lite database (IP Geolocation by DB-IP, https://db-ip.com, CC BY 4.0), with \
modifications; converted from CSV to MMDB (GeoLite2-ASN layout) by ollama-egress."
    };
}

/// Attribution for the country data (from the package's README and NRO_LICENSE).
pub const COUNTRY_ATTRIBUTION: &str = country_attribution!();

/// Attribution for the ASN data (from the package's README, ROUTEVIEWS-LICENSE, DBIP-LICENSE,
/// NRO_LICENSE and MODIFICATIONS).
pub const ASN_ATTRIBUTION: &str = asn_attribution!();

/// Both attributions, one per line, for `geo update` output, `--help` and the README.
pub const ATTRIBUTION: &str = concat!(country_attribution!(), "\n", asn_attribution!());

/// A country database must hold at least this many IPv4 networks to be installed.
const MIN_COUNTRY_IPV4_NETWORKS: usize = 1000;
/// A well-known address every real database covers.
const PROBE_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(8, 8, 8, 8));
/// The AS that announces [`PROBE_IP`] (Google).
const PROBE_ASN: u32 = 15169;

/// Where and how to update.
#[derive(Debug, Clone)]
pub struct UpdateOptions {
    /// Directory that receives `country.mmdb`, `asn.mmdb` and `SOURCE.json`
    /// (default [`DEFAULT_DIR`]); created if missing.
    pub dir: PathBuf,
    /// npm registry base URL (default [`DEFAULT_REGISTRY`]); `http://` works too.
    pub registry: String,
    /// Time limit for each HTTP request, body included (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// Time limit for setting up each connection (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a response (default [`DEFAULT_READ_TIMEOUT`]).
    pub read_timeout: Duration,
}

impl Default for UpdateOptions {
    fn default() -> Self {
        UpdateOptions {
            dir: PathBuf::from(DEFAULT_DIR),
            registry: DEFAULT_REGISTRY.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
        }
    }
}

/// What one package update installed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PackageReport {
    /// npm package name.
    pub package: String,
    /// Version that was installed.
    pub version: String,
    /// `dist.integrity` the tarball matched.
    pub integrity: String,
    /// Where the tarball came from.
    pub tarball: String,
    /// The installed database file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// IPv4 networks in the database.
    pub ipv4_networks: usize,
    /// IPv6 networks in the database.
    pub ipv6_networks: usize,
}

/// What [`update`] installed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UpdateReport {
    /// The country database.
    pub country: PackageReport,
    /// The ASN database.
    pub asn: PackageReport,
    /// The provenance file written next to them.
    pub source_file: PathBuf,
    /// Wall time of the whole update.
    pub elapsed: Duration,
}

/// Download, check and install both databases; see the module docs.
pub fn update(opts: &UpdateOptions) -> Result<UpdateReport, GeoError> {
    let started = Instant::now();
    std::fs::create_dir_all(&opts.dir).map_err(|source| GeoError::Io {
        action: "cannot create the geo database directory",
        path: opts.dir.clone(),
        source,
    })?;
    let http = Http::new(
        &opts.registry,
        Timeouts {
            total: opts.timeout,
            connect: opts.connect_timeout,
            read: opts.read_timeout,
        },
    );

    // Prepare both before touching either installed file.
    let country = prepare(&http, opts, COUNTRY_PACKAGE, COUNTRY_FILE, |pkg, tgz| {
        let mut files = unpack(tgz, &[COUNTRY_MMDB_IN_TARBALL])
            .map_err(|e| fail(pkg, UpdateStep::Unpack, e))?;
        files.remove(COUNTRY_MMDB_IN_TARBALL).ok_or_else(|| {
            fail(
                pkg,
                UpdateStep::Unpack,
                format!("the tarball has no {COUNTRY_MMDB_IN_TARBALL}"),
            )
        })
    })?;
    let asn = prepare(&http, opts, ASN_PACKAGE, ASN_FILE, |pkg, tgz| {
        let files =
            unpack(tgz, &ASN_CSVS_IN_TARBALL).map_err(|e| fail(pkg, UpdateStep::Unpack, e))?;
        let convert_started = Instant::now();
        let mut builder = AsnMmdbBuilder::new("ip-location-db asn, converted by ollama-egress");
        for name in ASN_CSVS_IN_TARBALL {
            let csv = files.get(name).ok_or_else(|| {
                fail(
                    pkg,
                    UpdateStep::Unpack,
                    format!("the tarball has no {name}"),
                )
            })?;
            builder
                .add_csv(csv.as_slice())
                .map_err(|e| fail(pkg, UpdateStep::Convert, format!("{name}: {e}")))?;
        }
        let bytes = builder
            .finish()
            .map_err(|e| fail(pkg, UpdateStep::Convert, e.to_string()))?;
        tracing::info!(
            rows = builder.rows(),
            networks = builder.networks(),
            bytes = bytes.len(),
            elapsed = ?convert_started.elapsed(),
            "converted the ASN CSV to mmdb"
        );
        Ok(bytes)
    })?;

    let country = country.install()?;
    let asn = asn.install()?;
    let source_file = write_source(opts, &country, &asn)?;
    Ok(UpdateReport {
        country,
        asn,
        source_file,
        elapsed: started.elapsed(),
    })
}

fn fail(package: &str, step: UpdateStep, reason: impl Into<String>) -> GeoError {
    let hint = match step {
        UpdateStep::Metadata | UpdateStep::Download => {
            "; check the network connection and the --registry URL, then retry"
        }
        UpdateStep::Integrity | UpdateStep::Unpack => {
            "; the download was damaged or tampered with: retry later"
        }
        UpdateStep::Convert | UpdateStep::Verify => {
            "; the published data looks broken: retry later or pass --geo-db/--asn-db FILE"
        }
        UpdateStep::Install => "; check that the directory is writable and has free space",
    };
    GeoError::Update {
        package: package.to_owned(),
        step,
        reason: reason.into(),
        hint,
    }
}

/// A checked database waiting in a temporary file next to its final name.
struct Prepared {
    package: &'static str,
    temp: tempfile::NamedTempFile,
    target: PathBuf,
    report: PackageReport,
}

fn prepare<F>(
    http: &Http,
    opts: &UpdateOptions,
    package: &'static str,
    file: &str,
    build: F,
) -> Result<Prepared, GeoError>
where
    F: FnOnce(&str, &[u8]) -> Result<Vec<u8>, GeoError>,
{
    let url = crate::fetch::metadata_url(&opts.registry, package);
    let meta = http
        .get(&url, MAX_METADATA_BYTES)
        .map_err(|e| fail(package, UpdateStep::Metadata, e))?;
    let latest: Latest = serde_json::from_slice(&meta).map_err(|e| {
        fail(
            package,
            UpdateStep::Metadata,
            format!("{url} is not package metadata with dist.tarball: {e}"),
        )
    })?;
    let integrity = latest.dist.integrity.ok_or_else(|| {
        fail(
            package,
            UpdateStep::Metadata,
            format!("{url} has no dist.integrity"),
        )
    })?;
    tracing::info!(package, version = %latest.version, tarball = %latest.dist.tarball, "downloading");
    let tgz = http
        .get(&latest.dist.tarball, MAX_TARBALL_BYTES)
        .map_err(|e| fail(package, UpdateStep::Download, e))?;
    check_integrity(&tgz, &integrity).map_err(|e| fail(package, UpdateStep::Integrity, e))?;
    let bytes = build(package, &tgz)?;
    drop(tgz);

    let install =
        |e: std::io::Error, what: &str| fail(package, UpdateStep::Install, format!("{what}: {e}"));
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{file}."))
        .suffix(".tmp")
        .tempfile_in(&opts.dir)
        .map_err(|e| {
            install(
                e,
                &format!("cannot create a temporary file in {}", opts.dir.display()),
            )
        })?;
    temp.write_all(&bytes)
        .and_then(|()| {
            // Readable by `ollama-egress geo lookup` run as a normal user.
            temp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
        })
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| install(e, &format!("cannot write {}", temp.path().display())))?;

    let (ipv4_networks, ipv6_networks) =
        verify(package, file, temp.path()).map_err(|e| fail(package, UpdateStep::Verify, e))?;
    let target = opts.dir.join(file);
    Ok(Prepared {
        package,
        temp,
        report: PackageReport {
            package: package.to_owned(),
            version: latest.version,
            integrity,
            tarball: latest.dist.tarball,
            path: target.clone(),
            bytes: bytes.len() as u64,
            ipv4_networks,
            ipv6_networks,
        },
        target,
    })
}

/// Open the new file the way the daemon will and check it answers a known lookup.
fn verify(package: &str, file: &str, path: &Path) -> Result<(usize, usize), String> {
    let is_country = file == COUNTRY_FILE;
    let db = if is_country {
        GeoDb::open(Some(path), None)
    } else {
        GeoDb::open(None, Some(path))
    }
    .map_err(|e| format!("the new {file} from {package} does not open: {e}"))?;
    let (v4, v6) = db
        .count_networks(is_country)
        .map_err(|e| format!("the new {file} is damaged: {e}"))?;
    let info = db.lookup(PROBE_IP);
    if is_country {
        if v4 < MIN_COUNTRY_IPV4_NETWORKS {
            return Err(format!(
                "the new {file} has only {v4} IPv4 networks (expected at least {MIN_COUNTRY_IPV4_NETWORKS})"
            ));
        }
        if info.country.is_none() {
            return Err(format!("the new {file} has no country for {PROBE_IP}"));
        }
    } else if info.asn != Some(PROBE_ASN) {
        return Err(format!(
            "the new {file} maps {PROBE_IP} to {:?}, expected AS{PROBE_ASN}",
            info.asn
        ));
    }
    Ok((v4, v6))
}

impl Prepared {
    /// Rename the temporary file over the installed one and fsync the directory.
    fn install(self) -> Result<PackageReport, GeoError> {
        let package = self.package;
        let target = self.target.clone();
        self.temp.persist(&target).map_err(|e| {
            fail(
                package,
                UpdateStep::Install,
                format!("cannot rename into {}: {}", target.display(), e.error),
            )
        })?;
        sync_dir(&target).map_err(|e| fail(package, UpdateStep::Install, e))?;
        tracing::info!(package, version = %self.report.version, path = %target.display(), "installed");
        Ok(self.report)
    }
}

fn sync_dir(file: &Path) -> Result<(), String> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot fsync {}: {e}", dir.display()))
}

/// Write `SOURCE.json`: packages, versions, integrity and the attribution.
fn write_source(
    opts: &UpdateOptions,
    country: &PackageReport,
    asn: &PackageReport,
) -> Result<PathBuf, GeoError> {
    let updated = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let doc = serde_json::json!({
        "updated_unix": updated,
        "registry": opts.registry,
        "country": {
            "file": COUNTRY_FILE,
            "package": country.package,
            "version": country.version,
            "integrity": country.integrity,
            "tarball": country.tarball,
            "licence": "CC BY 4.0",
            "attribution": COUNTRY_ATTRIBUTION,
        },
        "asn": {
            "file": ASN_FILE,
            "package": asn.package,
            "version": asn.version,
            "integrity": asn.integrity,
            "tarball": asn.tarball,
            "licence": "CC BY 4.0",
            "attribution": ASN_ATTRIBUTION,
        },
    });
    let path = opts.dir.join(SOURCE_FILE);
    let io = |e: std::io::Error| GeoError::Io {
        action: "cannot write",
        path: path.clone(),
        source: e,
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".SOURCE.")
        .tempfile_in(&opts.dir)
        .map_err(io)?;
    let text = serde_json::to_string_pretty(&doc).map_err(|e| io(std::io::Error::other(e)))?;
    temp.write_all(text.as_bytes())
        .and_then(|()| temp.write_all(b"\n"))
        .and_then(|()| {
            temp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
        })
        .and_then(|()| temp.as_file().sync_all())
        .map_err(io)?;
    temp.persist(&path).map_err(|e| io(e.error))?;
    sync_dir(&path).map_err(|e| GeoError::Io {
        action: "cannot fsync the directory of",
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    Ok(path)
}
