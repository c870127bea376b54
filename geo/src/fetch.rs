//! The network and archive half of `geo update`: registry metadata, downloads, integrity
//! checks and tarball unpacking.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest, Sha512};

/// Largest registry metadata document accepted.
pub(crate) const MAX_METADATA_BYTES: u64 = 4 << 20;
/// Largest tarball, and largest file inside one, accepted.
pub(crate) const MAX_TARBALL_BYTES: u64 = 512 << 20;

/// The time limits of every request of an update.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// The whole request, body included.
    pub(crate) total: Duration,
    /// Connection setup: DNS, TCP, TLS.
    pub(crate) connect: Duration,
    /// Waiting for the next bytes from the server.
    pub(crate) read: Duration,
}

/// A blocking HTTP client with the update's time limits.
pub(crate) struct Http {
    agent: ureq::Agent,
    timeouts: Timeouts,
}

impl Http {
    pub(crate) fn new(registry: &str, timeouts: Timeouts) -> Http {
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(timeouts.total))
            .timeout_resolve(Some(timeouts.connect))
            .timeout_connect(Some(timeouts.connect))
            .timeout_per_read(Some(timeouts.read))
            .timeout_per_write(Some(timeouts.read))
            .user_agent(concat!("ollama-egress/", env!("CARGO_PKG_VERSION")));
        if is_loopback_url(registry) {
            // A local registry (tests, a local mirror) must not go through an env proxy.
            config = config.proxy(None);
        }
        if let Some(roots) = system_root_certs() {
            // Trust what the system trusts (e.g. a company's TLS-inspecting proxy CA), as
            // npm and curl do; ureq's built-in Mozilla roots are the fallback.
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
                    .build(),
            );
        }
        Http {
            agent: config.build().into(),
            timeouts,
        }
    }

    pub(crate) fn get(&self, url: &str, limit: u64) -> Result<Vec<u8>, String> {
        let mut resp = self
            .agent
            .get(url)
            .call()
            .map_err(|e| format!("GET {url}: {}", self.describe(&e)))?;
        resp.body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| format!("GET {url}: reading the body: {}", self.describe(&e)))
    }

    /// A request error in words; timeouts say which limit ran out.
    fn describe(&self, e: &ureq::Error) -> String {
        use ureq::Timeout as T;
        let secs = |d: Duration| d.as_secs_f64();
        let t = self.timeouts;
        match e {
            ureq::Error::Timeout(T::PerRead | T::RecvResponse | T::RecvBody) => format!(
                "no data from the server for {:.0} s: it accepted the connection but stalled",
                secs(t.read)
            ),
            ureq::Error::Timeout(T::PerWrite | T::SendRequest | T::SendBody) => {
                format!("the server took no data for {:.0} s", secs(t.read))
            }
            ureq::Error::Timeout(T::Resolve | T::Connect) => {
                format!("could not connect within {:.0} s", secs(t.connect))
            }
            ureq::Error::Timeout(_) => {
                format!("the request took longer than {:.0} s in all", secs(t.total))
            }
            other => other.to_string(),
        }
    }
}

/// System CA bundles, in the order distributions put them.
const CA_BUNDLES: [&str; 5] = [
    "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Arch, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL
    "/etc/ssl/ca-bundle.pem",             // openSUSE
    "/etc/pki/tls/cacert.pem",            // OpenELEC
    "/etc/ssl/cert.pem",                  // Alpine, macOS-style
];

/// The system's trusted CA certificates: `$SSL_CERT_FILE`, else the first distribution
/// bundle that holds any certificate. `None` means "use ureq's built-in roots".
fn system_root_certs() -> Option<Vec<ureq::tls::Certificate<'static>>> {
    let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    env.into_iter()
        .chain(CA_BUNDLES.iter().map(PathBuf::from))
        .find_map(|path| {
            let pem = std::fs::read(&path).ok()?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            tracing::debug!(path = %path.display(), certs = certs.len(), "CA bundle");
            (!certs.is_empty()).then_some(certs)
        })
}

fn is_loopback_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<ureq::http::Uri>() else {
        return false;
    };
    match uri.host() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// `{registry}/@scope%2fname/latest`.
pub fn metadata_url(registry: &str, package: &str) -> String {
    format!(
        "{}/{}/latest",
        registry.trim_end_matches('/'),
        package.replacen('/', "%2f", 1)
    )
}

#[derive(serde::Deserialize)]
pub(crate) struct Latest {
    pub(crate) version: String,
    pub(crate) dist: Dist,
}

#[derive(serde::Deserialize)]
pub(crate) struct Dist {
    pub(crate) tarball: String,
    pub(crate) integrity: Option<String>,
}

/// Check `data` against an SRI string such as `sha512-<base64>` (several may be listed,
/// separated by spaces; the sha512 ones count and one must match).
pub fn check_integrity(data: &[u8], integrity: &str) -> Result<(), String> {
    let wanted: Vec<&str> = integrity
        .split_whitespace()
        .filter_map(|h| h.strip_prefix("sha512-"))
        .collect();
    if wanted.is_empty() {
        return Err(format!(
            "dist.integrity {integrity:?} has no sha512 hash to check the tarball against"
        ));
    }
    let actual = base64::engine::general_purpose::STANDARD.encode(Sha512::digest(data));
    // Ignore SRI options ("sha512-...?opt").
    if wanted
        .iter()
        .any(|w| w.split('?').next() == Some(actual.as_str()))
    {
        Ok(())
    } else {
        Err(format!(
            "sha512 of the tarball is {actual}, but the registry says {integrity}"
        ))
    }
}

/// Gunzip and untar `tgz` completely (so a truncated or corrupt archive is rejected even if
/// the wanted files come first) and return the wanted files, found by file name.
pub(crate) fn unpack(tgz: &[u8], wanted: &[&str]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    let mut found = BTreeMap::new();
    let mut entries_seen = 0usize;
    for entry in archive
        .entries()
        .map_err(|e| format!("not a tar.gz archive: {e}"))?
    {
        let mut entry = entry.map_err(|e| format!("damaged archive: {e}"))?;
        entries_seen += 1;
        let path = entry
            .path()
            .map_err(|e| format!("damaged archive entry name: {e}"))?
            .into_owned();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let take = entry.header().entry_type().is_file()
            && wanted.contains(&name)
            && !found.contains_key(name);
        if take {
            let size = entry.size();
            if size > MAX_TARBALL_BYTES {
                return Err(format!("{name} is {size} bytes, more than accepted"));
            }
            let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            entry
                .read_to_end(&mut data)
                .map_err(|e| format!("damaged archive while reading {name}: {e}"))?;
            found.insert(name.to_owned(), data);
        } else {
            std::io::copy(&mut entry, &mut std::io::sink())
                .map_err(|e| format!("damaged archive: {e}"))?;
        }
    }
    // The tar end marker was read; the gzip trailer (CRC, length) must follow intact.
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink())
        .map_err(|e| format!("damaged gzip stream: {e}"))?;
    if entries_seen == 0 {
        return Err("the archive is empty or truncated".to_owned());
    }
    Ok(found)
}

#[cfg(test)]
mod tests;
