//! The OCI image of `cargo xtask dist` in real tools: loaded into a real Docker engine (a
//! private `dockerd`, see `engine.rs`) and run there (`--version`, `policy check` of the policy
//! it ships, with a read-only root and no capabilities), its entrypoint and labels as `docker
//! image inspect` shows them; and read as an OCI layout archive by `skopeo`, which checks every
//! blob's digest while copying it.
//!
//! Needs `OLLAMA_EGRESS_IMAGE` (the archive), which `cargo xtask test` sets.

use std::{
    collections::BTreeMap,
    io::Read as _,
    path::{Path, PathBuf},
    process::Command,
};

use ollama_egress_tests::{engine::Engine, require_root, unique};
use serde_json::Value;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn image_archive() -> PathBuf {
    let p = std::env::var_os("OLLAMA_EGRESS_IMAGE").unwrap_or_else(|| {
        panic!("OLLAMA_EGRESS_IMAGE is not set: run `cargo xtask test`, which builds the image (`cargo xtask dist`)")
    });
    let p = PathBuf::from(p);
    assert!(
        p.is_file(),
        "OLLAMA_EGRESS_IMAGE={} does not exist",
        p.display()
    );
    p
}

/// The files of the archive (the test's own reading of it, independent of the tools).
fn archive_files(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let file = std::fs::File::open(path).expect("open the image archive");
    let mut archive = tar::Archive::new(file);
    let mut files = BTreeMap::new();
    for entry in archive.entries().expect("a tar archive") {
        let mut entry = entry.expect("entry");
        if entry.header().entry_type().is_file() {
            let name = entry.path().expect("path").display().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("read entry");
            files.insert(name, data);
        }
    }
    files
}

fn json(files: &BTreeMap<String, Vec<u8>>, name: &str) -> Value {
    serde_json::from_slice(
        files
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in the image")),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn the_image_loads_into_docker_and_runs_there() {
    require_root();
    let archive = image_archive();
    let files = archive_files(&archive);
    let docker_manifest = json(&files, "manifest.json");
    let config_path = docker_manifest[0]["Config"]
        .as_str()
        .expect("Config path")
        .to_owned();

    let mut engine = Engine::start();
    let loaded = engine.docker_ok(&["load", "--input", &archive.display().to_string()]);
    let tag = format!("ollama-egress:{VERSION}");
    assert!(
        loaded.contains(&format!("Loaded image: {tag}")),
        "docker load: {loaded}"
    );

    // Docker's image id is the config's digest: the one the archive names its config blob by.
    let inspect: Value =
        serde_json::from_str(&engine.docker_ok(&["image", "inspect", &tag])).expect("inspect JSON");
    let image = &inspect[0];
    assert_eq!(
        image["Id"].as_str().map(|id| id.replacen(':', "/", 1)),
        Some(config_path.trim_start_matches("blobs/").to_owned()),
        "image id vs the archive's config blob"
    );
    let config = &image["Config"];
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/bin/ollama-egress"])
    );
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], VERSION);
    assert_eq!(labels["org.opencontainers.image.title"], "ollama-egress");
    assert_eq!(
        labels["org.opencontainers.image.licenses"],
        "MIT OR Apache-2.0"
    );
    for key in [
        "org.opencontainers.image.created",
        "org.opencontainers.image.source",
        "org.opencontainers.image.description",
    ] {
        assert!(
            labels[key].as_str().is_some_and(|v| !v.is_empty()),
            "label {key} missing: {labels}"
        );
    }
    assert_eq!(image["Os"], "linux");
    assert_eq!(image["Architecture"], "amd64");

    // The static binary runs alone in the image, as the entrypoint; the shipped policy is
    // valid; with a read-only root and no capabilities (what `policy check` needs is nothing).
    let run = |engine: &mut Engine, args: &[&str]| -> String {
        let name = unique("oe-img");
        engine.track(&name);
        let mut full = vec![
            "run",
            "--name",
            &name,
            "--network",
            "none",
            "--read-only",
            "--cap-drop",
            "ALL",
            &tag,
        ];
        full.extend_from_slice(args);
        let out = engine.docker_ok(&full);
        let _ = engine.docker(&["rm", "-f", &name]);
        out
    };
    let version = run(&mut engine, &["--version"]);
    assert!(
        version.starts_with(&format!("ollama-egress {VERSION}"))
            && version.contains("kernel object"),
        "--version in the image: {version}"
    );
    let check = run(
        &mut engine,
        &["policy", "check", "/etc/ollama-egress/policy.toml"],
    );
    assert!(
        check.contains("policy OK"),
        "policy check in the image: {check}"
    );
    // The entrypoint is really the binary: an unknown command is its own error.
    let name = unique("oe-img");
    engine.track(&name);
    let bad = engine.docker(&[
        "run",
        "--name",
        &name,
        "--network",
        "none",
        &tag,
        "no-such-command",
    ]);
    assert!(!bad.status.success(), "an unknown command succeeded");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("unrecognized subcommand"),
        "stderr: {}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn the_image_is_an_oci_layout_whose_digests_skopeo_verifies() {
    require_root();
    let skopeo = "/usr/bin/skopeo";
    assert!(
        Path::new(skopeo).is_file(),
        "{skopeo} is missing: install Debian's skopeo (`apt-get install skopeo`, which `cargo xtask setup` does)"
    );
    let archive = image_archive();
    let files = archive_files(&archive);
    assert_eq!(
        json(&files, "oci-layout"),
        serde_json::json!({"imageLayoutVersion": "1.0.0"})
    );
    let index = json(&files, "index.json");
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .expect("manifest digest")
        .to_owned();

    let source = format!("oci-archive:{}", archive.display());
    let out = Command::new(skopeo)
        .args(["inspect", &source])
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inspect: Value = serde_json::from_slice(&out.stdout).expect("skopeo JSON");
    assert_eq!(inspect["Digest"], manifest_digest.as_str());
    assert_eq!(
        inspect["Labels"]["org.opencontainers.image.version"],
        VERSION
    );

    // A copy reads every blob and fails on one whose content does not match its digest.
    let dest = tempfile::tempdir().expect("tempdir");
    let out = Command::new(skopeo)
        .args(["copy", &source])
        .arg(format!("dir:{}", dest.path().join("copy").display()))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copied: Value = serde_json::from_slice(
        &std::fs::read(dest.path().join("copy/manifest.json")).expect("copied manifest"),
    )
    .expect("manifest JSON");
    assert_eq!(
        copied["layers"].as_array().map(Vec::len),
        Some(1),
        "{copied}"
    );
}
