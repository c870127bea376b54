//! Tests of the image archive: reproducible, and every digest and reference in it right.

use std::{collections::BTreeMap, io::Read as _};

use super::*;

const EPOCH: u64 = 1_700_000_000;

fn inputs<'a>(binary: &'a [u8], revision: Option<&'a str>) -> ImageInputs<'a> {
    ImageInputs {
        binary,
        policy: b"default = \"deny\"\n",
        version: "1.2.3",
        revision,
        epoch: EPOCH,
    }
}

/// Path → (header, data) of every entry, in archive order.
fn entries(archive: &[u8]) -> Vec<(String, ::tar::Header, Vec<u8>)> {
    let mut a = ::tar::Archive::new(archive);
    a.entries()
        .expect("entries")
        .map(|e| {
            let mut e = e.expect("entry");
            let path = e.path().expect("path").display().to_string();
            let header = e.header().clone();
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("read entry");
            (path, header, data)
        })
        .collect()
}

fn files(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
    entries(archive)
        .into_iter()
        .filter(|(_, h, _)| h.entry_type().is_file())
        .map(|(p, _, d)| (p, d))
        .collect()
}

fn json_of(files: &BTreeMap<String, Vec<u8>>, path: &str) -> Value {
    serde_json::from_slice(files.get(path).unwrap_or_else(|| panic!("{path} missing")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn blob<'a>(files: &'a BTreeMap<String, Vec<u8>>, digest: &Value) -> &'a [u8] {
    let d = digest.as_str().expect("digest string");
    let path = blob_path(d);
    let data = files.get(&path).unwrap_or_else(|| panic!("{path} missing"));
    assert_eq!(super::digest(data), d, "{path} does not hash to its name");
    data
}

#[test]
fn the_same_inputs_give_the_same_bytes() {
    let a = build(&inputs(b"\x7fELF binary", Some("abc"))).expect("build");
    let b = build(&inputs(b"\x7fELF binary", Some("abc"))).expect("build");
    assert_eq!(a.bytes, b.bytes, "two builds differ");
    assert_eq!(a.manifest_digest, b.manifest_digest);
    let c = build(&inputs(b"\x7fELF other binary", Some("abc"))).expect("build");
    assert_ne!(
        a.manifest_digest, c.manifest_digest,
        "the binary is not in the digest"
    );
}

#[test]
fn entries_are_sorted_owned_by_root_and_stamped_with_the_epoch() {
    let image = build(&inputs(b"bin", None)).expect("build");
    let outer = entries(&image.bytes);
    let files = files(&image.bytes);
    let docker = json_of(&files, "manifest.json");
    let layer = files
        .get(docker[0]["Layers"][0].as_str().expect("layer path"))
        .expect("the layer")
        .clone();
    for list in [outer, entries(&layer)] {
        let names: Vec<&String> = list.iter().map(|(p, ..)| p).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "entries not sorted");
        for (p, h, _) in &list {
            assert_eq!(h.mtime().expect("mtime"), EPOCH, "{p}");
            assert_eq!(h.uid().expect("uid"), 0, "{p}");
            assert_eq!(h.gid().expect("gid"), 0, "{p}");
        }
    }
}

#[test]
fn docker_and_oci_references_resolve_to_blobs_with_the_right_digests() {
    let image = build(&inputs(b"\x7fELF the binary", Some("0123abc"))).expect("build");
    let files = files(&image.bytes);
    assert_eq!(
        json_of(&files, "oci-layout"),
        json!({"imageLayoutVersion": "1.0.0"})
    );

    // OCI: index → manifest → config and layer.
    let index = json_of(&files, "index.json");
    let desc = &index["manifests"][0];
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(1));
    assert_eq!(desc["digest"], image.manifest_digest.as_str());
    assert_eq!(
        desc["annotations"]["org.opencontainers.image.ref.name"],
        "1.2.3"
    );
    let manifest_bytes = blob(&files, &desc["digest"]);
    assert_eq!(desc["size"], manifest_bytes.len());
    let manifest: Value = serde_json::from_slice(manifest_bytes).expect("manifest");
    assert_eq!(manifest["mediaType"], MANIFEST_TYPE);
    let config_bytes = blob(&files, &manifest["config"]["digest"]);
    assert_eq!(manifest["config"]["size"], config_bytes.len());
    let layer_desc = &manifest["layers"][0];
    let layer = blob(&files, &layer_desc["digest"]);
    assert_eq!(layer_desc["size"], layer.len());
    assert_eq!(layer_desc["mediaType"], LAYER_TYPE);

    // The config: the layer's diff id is its digest (uncompressed), entrypoint, labels.
    let config: Value = serde_json::from_slice(config_bytes).expect("config");
    assert_eq!(config["rootfs"]["diff_ids"], json!([digest(layer)]));
    assert_eq!(
        config["config"]["Entrypoint"],
        json!(["/usr/bin/ollama-egress"])
    );
    let labels = &config["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], "1.2.3");
    assert_eq!(labels["org.opencontainers.image.revision"], "0123abc");
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");

    // docker-archive: the same config and layer.
    let docker = json_of(&files, "manifest.json");
    assert_eq!(
        docker,
        json!([{
            "Config": blob_path(manifest["config"]["digest"].as_str().expect("digest")),
            "RepoTags": ["ollama-egress:1.2.3"],
            "Layers": [blob_path(layer_desc["digest"].as_str().expect("digest"))],
        }])
    );

    // The layer: the binary (executable) and the policy where the entrypoint and the default
    // --policy look for them.
    let inside = entries(layer);
    let find = |p: &str| {
        inside
            .iter()
            .find(|(q, ..)| q == p)
            .unwrap_or_else(|| panic!("{p} not in the layer"))
    };
    let (_, h, data) = find("usr/bin/ollama-egress");
    assert_eq!(data.as_slice(), b"\x7fELF the binary");
    assert_eq!(h.mode().expect("mode"), 0o755);
    assert_eq!(
        find("etc/ollama-egress/policy.toml").2,
        b"default = \"deny\"\n"
    );
    assert!(find("var/lib/ollama-egress/").1.entry_type().is_dir());
}

#[test]
fn time_stamps_are_rfc3339_utc() {
    assert_eq!(time_stamp(0), "1970-01-01T00:00:00Z");
    assert_eq!(time_stamp(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(time_stamp(EPOCH), "2023-11-14T22:13:20Z");
}
