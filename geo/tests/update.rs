//! `update()` against a registry served on 127.0.0.1 by the test itself.

#![allow(clippy::unwrap_used)] // Tests panic on failure by design.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use ipnet::{IpNet, Ipv4Net};
use ollama_egress_geo::fixture::write_country_db;
use ollama_egress_geo::{
    ASN_FILE, ASN_PACKAGE, COUNTRY_FILE, COUNTRY_PACKAGE, GeoDb, GeoError, SOURCE_FILE,
    UpdateOptions, UpdateStep, update,
};
use sha2::{Digest, Sha512};

type Routes = Arc<Mutex<HashMap<String, Vec<u8>>>>;

/// A minimal HTTP/1.1 server on 127.0.0.1 answering GETs from a route table.
struct Registry {
    port: u16,
    routes: Routes,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Registry {
    fn start() -> Registry {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let routes: Routes = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (routes.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    serve(stream, &r);
                }
            }
        });
        Registry {
            port,
            routes,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set(&self, path: &str, body: Vec<u8>) {
        self.routes.lock().unwrap().insert(path.to_owned(), body);
    }

    /// Publish `package` with `tgz` as its tarball; `integrity` overrides the real hash.
    fn publish(&self, package: &str, version: &str, tgz: &[u8], integrity: Option<&str>) {
        let short = package.rsplit('/').next().unwrap();
        let tarball_path = format!("/tarballs/{short}-{version}.tgz");
        let real = format!(
            "sha512-{}",
            base64::engine::general_purpose::STANDARD.encode(Sha512::digest(tgz))
        );
        let meta = serde_json::json!({
            "name": package,
            "version": version,
            "dist": {
                "integrity": integrity.unwrap_or(&real),
                "shasum": "0000",
                "tarball": format!("{}{tarball_path}", self.url()),
            }
        });
        self.set(
            &format!("/{}/latest", package.replacen('/', "%2f", 1)),
            meta.to_string().into_bytes(),
        );
        self.set(&tarball_path, tgz.to_vec());
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so the thread ends.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, routes: &Routes) {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let body = routes.lock().unwrap().get(path).cloned();
    let mut out = &stream;
    let (status, body) = match body {
        Some(b) => ("200 OK", b),
        None => ("404 Not Found", b"{\"error\":\"not found\"}".to_vec()),
    };
    let _ = write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = out.write_all(&body);
    let _ = out.flush();
}

/// A gzipped npm-style tarball with `files` under `package/`.
fn tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, format!("package/{name}"), *data)
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// A country mmdb that passes the update's checks: > 1000 IPv4 networks and 8.8.8.8 → US.
fn good_country_mmdb(dir: &Path) -> Vec<u8> {
    let mut entries: Vec<(IpNet, &str)> = (0..1100u32)
        .map(|i| {
            let net =
                Ipv4Net::new(Ipv4Addr::new(10, (i / 256) as u8, (i % 256) as u8, 0), 24).unwrap();
            (IpNet::V4(net), if i % 2 == 0 { "US" } else { "CA" })
        })
        .collect();
    entries.push(("8.8.8.0/24".parse().unwrap(), "US"));
    entries.push(("203.0.113.0/24".parse().unwrap(), "CN"));
    entries.push(("2001:db8::/32".parse().unwrap(), "DE"));
    let path = dir.join("built-country.mmdb");
    write_country_db(&path, &entries).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    bytes
}

fn country_tgz(mmdb: &[u8]) -> Vec<u8> {
    tgz(&[
        (
            "package.json",
            br#"{"name":"@ip-location-db/geo-whois-asn-country-mmdb"}"#,
        ),
        ("NRO_LICENSE", b"licence"),
        ("geo-whois-asn-country-ipv4.mmdb", b"not used"),
        ("geo-whois-asn-country.mmdb", mmdb),
    ])
}

const ASN_V4: &[u8] = b"1.0.0.0,1.0.0.255,13335,\"Cloudflare, Inc.\"
8.8.4.0,8.8.4.255,15169,Google LLC
8.8.8.0,8.8.8.255,15169,Google LLC
203.0.113.0,203.0.113.255,64500,Example CN Net
";
const ASN_V6: &[u8] = b"2001:4860::,2001:4860:ffff:ffff:ffff:ffff:ffff:ffff,15169,Google LLC
";

fn asn_tgz(v4: &[u8], v6: &[u8]) -> Vec<u8> {
    tgz(&[
        ("package.json", br#"{"name":"@ip-location-db/asn"}"#),
        ("asn-ipv4.csv", v4),
        ("asn-ipv6.csv", v6),
        ("ROUTEVIEWS-LICENSE", b"licence"),
    ])
}

fn options(registry: &Registry, dir: &Path) -> UpdateOptions {
    UpdateOptions {
        dir: dir.to_path_buf(),
        registry: registry.url(),
        timeout: Duration::from_secs(30),
        ..UpdateOptions::default()
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn update_installs_both_databases() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start();
    reg.publish(
        COUNTRY_PACKAGE,
        "2.3.1",
        &country_tgz(&good_country_mmdb(tmp.path())),
        None,
    );
    reg.publish(ASN_PACKAGE, "2.3.1", &asn_tgz(ASN_V4, ASN_V6), None);
    let dir = tmp.path().join("geo"); // created by update()

    let report = update(&options(&reg, &dir)).unwrap();
    assert_eq!(listing(&dir), [SOURCE_FILE, ASN_FILE, COUNTRY_FILE]);
    assert_eq!(report.country.version, "2.3.1");
    assert_eq!(report.country.ipv4_networks, 1102);
    assert_eq!(report.country.ipv6_networks, 1);
    assert!(report.asn.integrity.starts_with("sha512-"));
    assert_eq!(report.asn.path, dir.join(ASN_FILE));

    let db = GeoDb::open(Some(&dir.join(COUNTRY_FILE)), Some(&dir.join(ASN_FILE))).unwrap();
    let google = db.lookup(IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)));
    assert_eq!(google.country.as_deref(), Some("US"));
    assert_eq!(google.asn, Some(15169));
    assert_eq!(google.as_org.as_deref(), Some("Google LLC"));
    let cf = db.lookup("1.0.0.1".parse().unwrap());
    assert_eq!(cf.as_org.as_deref(), Some("Cloudflare, Inc."));
    assert_eq!(
        db.country_networks("CN").unwrap(),
        vec!["203.0.113.0/24".parse().unwrap()]
    );
    assert_eq!(db.asn_networks(15169).unwrap().len(), 3);

    let source: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(SOURCE_FILE)).unwrap()).unwrap();
    assert_eq!(source["country"]["package"], COUNTRY_PACKAGE);
    assert_eq!(source["asn"]["version"], "2.3.1");
    assert!(
        source["asn"]["attribution"]
            .as_str()
            .unwrap()
            .contains("DB-IP")
    );
    assert!(
        source["country"]["attribution"]
            .as_str()
            .unwrap()
            .contains("nro.net")
    );

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join(COUNTRY_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);

    // A second update replaces the files in place.
    reg.publish(ASN_PACKAGE, "2.3.2", &asn_tgz(ASN_V4, b""), None);
    let report = update(&options(&reg, &dir)).unwrap();
    assert_eq!(report.asn.version, "2.3.2");
    assert_eq!(report.asn.ipv6_networks, 0);
    assert_eq!(listing(&dir), [SOURCE_FILE, ASN_FILE, COUNTRY_FILE]);
}

/// Install sentinel "old" files, run a failing update, and check nothing changed.
fn assert_failure_keeps_old_files(
    reg: &Registry,
    tmp: &Path,
    package: &str,
    step: UpdateStep,
    reason_contains: &str,
) {
    let dir = tmp.join("geo");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(COUNTRY_FILE), b"old country bytes").unwrap();
    std::fs::write(dir.join(ASN_FILE), b"old asn bytes").unwrap();
    let before = listing(&dir);

    let err = update(&options(reg, &dir)).unwrap_err();
    match &err {
        GeoError::Update {
            package: p,
            step: s,
            reason,
            ..
        } => {
            assert_eq!(p, package, "{err}");
            assert_eq!(*s, step, "{err}");
            assert!(reason.contains(reason_contains), "{err}");
        }
        other => panic!("expected an update error, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(package) && msg.contains("previous database files were kept"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read(dir.join(COUNTRY_FILE)).unwrap(),
        b"old country bytes"
    );
    assert_eq!(std::fs::read(dir.join(ASN_FILE)).unwrap(), b"old asn bytes");
    assert_eq!(listing(&dir), before, "no temporary files are left behind");
}

#[test]
fn bad_integrity_keeps_old_files() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start();
    let country = country_tgz(&good_country_mmdb(tmp.path()));
    let wrong = format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(Sha512::digest(b"something else"))
    );
    reg.publish(COUNTRY_PACKAGE, "1", &country, Some(&wrong));
    reg.publish(ASN_PACKAGE, "1", &asn_tgz(ASN_V4, ASN_V6), None);
    assert_failure_keeps_old_files(
        &reg,
        tmp.path(),
        COUNTRY_PACKAGE,
        UpdateStep::Integrity,
        "sha512",
    );

    // Only a sha1 hash: nothing to check against, refused.
    reg.publish(COUNTRY_PACKAGE, "1", &country, Some("sha1-AAAA"));
    assert_failure_keeps_old_files(
        &reg,
        tmp.path(),
        COUNTRY_PACKAGE,
        UpdateStep::Integrity,
        "no sha512",
    );

    // The ASN package fails after the country one was prepared: still nothing replaced.
    reg.publish(COUNTRY_PACKAGE, "1", &country, None);
    reg.publish(ASN_PACKAGE, "1", &asn_tgz(ASN_V4, ASN_V6), Some(&wrong));
    assert_failure_keeps_old_files(
        &reg,
        tmp.path(),
        ASN_PACKAGE,
        UpdateStep::Integrity,
        "sha512",
    );
}

#[test]
fn truncated_tarball_keeps_old_files() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start();
    let country = country_tgz(&good_country_mmdb(tmp.path()));
    let asn = asn_tgz(ASN_V4, ASN_V6);
    reg.publish(COUNTRY_PACKAGE, "1", &country, None);
    // The registry's integrity matches the truncated bytes, so unpacking must catch it.
    reg.publish(ASN_PACKAGE, "1", &asn[..asn.len() * 2 / 3], None);
    assert_failure_keeps_old_files(&reg, tmp.path(), ASN_PACKAGE, UpdateStep::Unpack, "damaged");

    // Cut off only the gzip trailer (CRC and length): the tar data is all there.
    reg.publish(COUNTRY_PACKAGE, "1", &country[..country.len() - 4], None);
    reg.publish(ASN_PACKAGE, "1", &asn, None);
    assert_failure_keeps_old_files(
        &reg,
        tmp.path(),
        COUNTRY_PACKAGE,
        UpdateStep::Unpack,
        "damaged",
    );

    // Not gzip at all.
    reg.publish(COUNTRY_PACKAGE, "1", b"<html>oops</html>", None);
    assert_failure_keeps_old_files(&reg, tmp.path(), COUNTRY_PACKAGE, UpdateStep::Unpack, "");
}

#[test]
fn unreadable_mmdb_keeps_old_files() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start();
    reg.publish(
        COUNTRY_PACKAGE,
        "1",
        &country_tgz(b"definitely not an mmdb"),
        None,
    );
    reg.publish(ASN_PACKAGE, "1", &asn_tgz(ASN_V4, ASN_V6), None);
    assert_failure_keeps_old_files(
        &reg,
        tmp.path(),
        COUNTRY_PACKAGE,
        UpdateStep::Verify,
        "does not open",
    );

    // A valid mmdb that is too small to be the real thing.
    let small = tmp.path().join("small.mmdb");
    write_country_db(&small, &[("8.8.8.0/24".parse().unwrap(), "US")]).unwrap();
    let small = std::fs::read(&small).unwrap();
    reg.publish(COUNTRY_PACKAGE, "1", &country_tgz(&small), None);
    assert_failure_keeps_old_files(
        &reg,
        tmp.path(),
        COUNTRY_PACKAGE,
        UpdateStep::Verify,
        "IPv4 networks",
    );

    // An ASN CSV that converts but does not know 8.8.8.8.
    reg.publish(
        COUNTRY_PACKAGE,
        "1",
        &country_tgz(&good_country_mmdb(tmp.path())),
        None,
    );
    reg.publish(
        ASN_PACKAGE,
        "1",
        &asn_tgz(b"1.0.0.0,1.0.0.255,13335,X\n", b""),
        None,
    );
    assert_failure_keeps_old_files(&reg, tmp.path(), ASN_PACKAGE, UpdateStep::Verify, "AS15169");

    // A malformed CSV row.
    reg.publish(
        ASN_PACKAGE,
        "1",
        &asn_tgz(b"1.0.0.0,oops,13335,X\n", b""),
        None,
    );
    assert_failure_keeps_old_files(&reg, tmp.path(), ASN_PACKAGE, UpdateStep::Convert, "line 1");

    // The data file is missing from the tarball.
    reg.publish(ASN_PACKAGE, "1", &tgz(&[("asn-ipv4.csv", ASN_V4)]), None);
    assert_failure_keeps_old_files(
        &reg,
        tmp.path(),
        ASN_PACKAGE,
        UpdateStep::Unpack,
        "asn-ipv6.csv",
    );
}

#[test]
fn registry_errors_name_the_step() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start();
    // Nothing published: 404 on the metadata.
    assert_failure_keeps_old_files(
        &reg,
        tmp.path(),
        COUNTRY_PACKAGE,
        UpdateStep::Metadata,
        "404",
    );

    reg.set(
        &format!("/{}/latest", COUNTRY_PACKAGE.replacen('/', "%2f", 1)),
        b"{\"version\":\"1\"}".to_vec(),
    );
    assert_failure_keeps_old_files(
        &reg,
        tmp.path(),
        COUNTRY_PACKAGE,
        UpdateStep::Metadata,
        "dist",
    );

    // Metadata fine, tarball missing.
    reg.publish(COUNTRY_PACKAGE, "1", b"x", None);
    reg.routes
        .lock()
        .unwrap()
        .retain(|k, _| !k.starts_with("/tarballs/"));
    assert_failure_keeps_old_files(
        &reg,
        tmp.path(),
        COUNTRY_PACKAGE,
        UpdateStep::Download,
        "404",
    );

    // Nobody listening.
    let closed = {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tmp.path().join("geo");
    let err = update(&UpdateOptions {
        dir: dir.clone(),
        registry: format!("http://127.0.0.1:{closed}/"),
        timeout: Duration::from_secs(5),
        ..UpdateOptions::default()
    })
    .unwrap_err();
    assert_eq!(err.update_step(), Some(UpdateStep::Metadata), "{err}");
    assert!(err.to_string().contains("--registry"), "{err}");
}

/// A registry that accepts connections and never answers: `update` with the default options
/// gives up after the read timeout with a clear error, not after minutes.
#[test]
fn a_registry_that_never_answers_times_out() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let held = Arc::new(Mutex::new(Vec::new()));
    listener.set_nonblocking(true).unwrap();
    let (stop2, held2) = (Arc::clone(&stop), Arc::clone(&held));
    let server = std::thread::spawn(move || {
        while !stop2.load(Ordering::SeqCst) {
            match listener.accept() {
                // Keep the connection open, read nothing, send nothing.
                Ok((s, _)) => held2.lock().unwrap().push(s),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let opts = UpdateOptions {
        dir: tmp.path().join("geo"),
        registry: format!("http://127.0.0.1:{port}"),
        ..UpdateOptions::default()
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let started = std::time::Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(update(&opts));
    });
    let result = rx.recv_timeout(Duration::from_secs(45));
    stop.store(true, Ordering::SeqCst);
    server.join().unwrap();
    let err = result
        .expect("update gives up on a silent registry within 45 s")
        .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.update_step(), Some(UpdateStep::Metadata), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("no data") && msg.contains("--registry"),
        "{msg}"
    );
    assert!(elapsed < Duration::from_secs(45), "{elapsed:?}");
    assert!(
        !held.lock().unwrap().is_empty(),
        "the request reached the server"
    );
}

/// A response that stops in the middle of its body fails after the read timeout, naming it.
#[test]
fn a_stalled_body_times_out() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut line = String::new();
        let mut r = BufReader::new(s.try_clone().unwrap());
        while r.read_line(&mut line).unwrap() > 2 {
            line.clear();
        }
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{\"version\":")
            .unwrap();
        // Hold the connection until the client gives up.
        let mut buf = [0u8; 16];
        let _ = std::io::Read::read(&mut s, &mut buf);
    });
    let tmp = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let err = update(&UpdateOptions {
        dir: tmp.path().join("geo"),
        registry: format!("http://127.0.0.1:{port}"),
        read_timeout: Duration::from_secs(1),
        ..UpdateOptions::default()
    })
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    server.join().unwrap();
    let msg = err.to_string();
    assert_eq!(err.update_step(), Some(UpdateStep::Metadata), "{msg}");
    assert!(
        msg.contains("reading the body") && msg.contains("no data from the server for 1 s"),
        "{msg}"
    );
}
