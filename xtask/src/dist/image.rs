//! The OCI image of `cargo xtask dist`, written here byte by byte rather than by a container
//! engine: no engine (and no daemon running as root) is needed to build it, and the same inputs
//! always give the same bytes, hence the same digests (fixed mtimes and owners, sorted entries,
//! canonical JSON, an uncompressed layer).
//!
//! One archive that both `docker load` (`manifest.json`, docker-archive) and OCI tools
//! (`oci-layout`, `index.json`, e.g. `skopeo copy oci-archive:…`) read, sharing the blobs under
//! `blobs/sha256/`. One layer, `FROM scratch`-like: the static binary at
//! `/usr/bin/ollama-egress` (the entrypoint), the default policy at
//! `/etc/ollama-egress/policy.toml`, and the empty `/var/lib/ollama-egress` for the log and
//! state. It runs as root: loading and attaching eBPF programs needs capabilities that a
//! non-root user in a container does not get (the DaemonSet grants only those).

use std::path::Path;

use anyhow::Context as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// The OCI media types used.
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// The repository name the image is tagged with (`ollama-egress:VERSION`).
pub const REPOSITORY: &str = "ollama-egress";

/// What goes into the image.
pub struct ImageInputs<'a> {
    /// The static binary.
    pub binary: &'a [u8],
    /// The default policy.
    pub policy: &'a [u8],
    /// The version (tag and label).
    pub version: &'a str,
    /// The source revision (a label), when known.
    pub revision: Option<&'a str>,
    /// The time stamp of every file and of the image (seconds since the epoch), e.g.
    /// `SOURCE_DATE_EPOCH`.
    pub epoch: u64,
}

/// A file or directory of a tar archive.
enum Entry<'a> {
    Dir(&'a str, u32),
    File(&'a str, u32, &'a [u8]),
}

/// An image archive.
pub struct Image {
    /// The archive's bytes.
    pub bytes: Vec<u8>,
    /// The digest of its manifest (`sha256:…`): the image's name-independent identity.
    pub manifest_digest: String,
}

/// The image archive of `inputs`.
pub fn build(inputs: &ImageInputs<'_>) -> anyhow::Result<Image> {
    let layer = tar(
        &[
            Entry::Dir("etc/", 0o755),
            Entry::Dir("etc/ollama-egress/", 0o755),
            Entry::File("etc/ollama-egress/policy.toml", 0o644, inputs.policy),
            Entry::Dir("usr/", 0o755),
            Entry::Dir("usr/bin/", 0o755),
            Entry::File("usr/bin/ollama-egress", 0o755, inputs.binary),
            Entry::Dir("var/", 0o755),
            Entry::Dir("var/lib/", 0o755),
            Entry::Dir("var/lib/ollama-egress/", 0o750),
        ],
        inputs.epoch,
    )?;
    let layer_digest = digest(&layer);
    let config = canonical(&config(inputs, &layer_digest))?;
    let config_digest = digest(&config);
    let manifest = canonical(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": LAYER_TYPE, "digest": layer_digest, "size": layer.len()}],
        "annotations": labels(inputs),
    }))?;
    let manifest_digest = digest(&manifest);
    let tag = format!("{REPOSITORY}:{}", inputs.version);
    let index = canonical(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [{
            "mediaType": MANIFEST_TYPE,
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                "org.opencontainers.image.ref.name": inputs.version,
                "io.containerd.image.name": format!("docker.io/library/{tag}"),
            },
        }],
    }))?;
    let docker_manifest = canonical(&json!([{
        "Config": blob_path(&config_digest),
        "RepoTags": [tag],
        "Layers": [blob_path(&layer_digest)],
    }]))?;
    let oci_layout = canonical(&json!({"imageLayoutVersion": "1.0.0"}))?;

    let mut blobs = [
        (blob_path(&layer_digest), layer),
        (blob_path(&config_digest), config),
        (blob_path(&manifest_digest), manifest),
    ];
    blobs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut entries = vec![
        Entry::Dir("blobs/", 0o755),
        Entry::Dir("blobs/sha256/", 0o755),
    ];
    entries.extend(blobs.iter().map(|(p, b)| Entry::File(p, 0o644, b)));
    entries.extend([
        Entry::File("index.json", 0o644, &index),
        Entry::File("manifest.json", 0o644, &docker_manifest),
        Entry::File("oci-layout", 0o644, &oci_layout),
    ]);
    Ok(Image {
        bytes: tar(&entries, inputs.epoch)?,
        manifest_digest,
    })
}

/// Writes the archive of `inputs` to `path`; returns its manifest's digest.
pub fn write(path: &Path, inputs: &ImageInputs<'_>) -> anyhow::Result<String> {
    let image = build(inputs)?;
    std::fs::write(path, &image.bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(image.manifest_digest)
}

/// The image configuration: what `docker image inspect` shows.
fn config(inputs: &ImageInputs<'_>, layer_digest: &str) -> Value {
    let created = time_stamp(inputs.epoch);
    json!({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            "Entrypoint": ["/usr/bin/ollama-egress"],
            "Cmd": ["--help"],
            "Env": ["PATH=/usr/bin"],
            "WorkingDir": "/",
            "StopSignal": "SIGTERM",
            "Labels": labels(inputs),
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{
            "created": created,
            "created_by": "cargo xtask dist",
            "comment": "the static ollama-egress binary and its default policy",
        }],
    })
}

fn labels(inputs: &ImageInputs<'_>) -> Value {
    let mut labels = json!({
        "org.opencontainers.image.title": "ollama-egress",
        "org.opencontainers.image.description":
            "eBPF egress monitor and blocker for Ollama (needs CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN)",
        "org.opencontainers.image.version": inputs.version,
        "org.opencontainers.image.licenses": "MIT OR Apache-2.0",
        "org.opencontainers.image.url": "https://example.invalid/ollama-egress",
        "org.opencontainers.image.source": "https://example.invalid/ollama-egress",
        "org.opencontainers.image.vendor": "ollama-egress developers",
        "org.opencontainers.image.created": time_stamp(inputs.epoch),
    });
    if let (Some(rev), Some(map)) = (inputs.revision, labels.as_object_mut()) {
        map.insert("org.opencontainers.image.revision".into(), rev.into());
    }
    labels
}

/// `sha256:HEX` of `data`.
pub fn digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in hash {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// JSON with sorted keys and no insignificant white space.
fn canonical(v: &Value) -> anyhow::Result<Vec<u8>> {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sort(&m[k]))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    Ok(serde_json::to_vec(&sort(v))?)
}

/// RFC 3339 UTC of `epoch` seconds.
fn time_stamp(epoch: u64) -> String {
    let days = epoch / 86_400;
    let secs = epoch % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// A ustar archive of `entries` in the given order, owned by root, every mtime `epoch`.
fn tar(entries: &[Entry<'_>], epoch: u64) -> anyhow::Result<Vec<u8>> {
    let mut b = ::tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = ::tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_username("root")?;
        h.set_groupname("root")?;
        h.set_mtime(epoch);
        let (path, data): (&str, &[u8]) = match e {
            Entry::Dir(p, mode) => {
                h.set_entry_type(::tar::EntryType::Directory);
                h.set_mode(*mode);
                (p, &[])
            }
            Entry::File(p, mode, data) => {
                h.set_entry_type(::tar::EntryType::Regular);
                h.set_mode(*mode);
                (p, data)
            }
        };
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data)
            .with_context(|| format!("adding {path} to the archive"))?;
    }
    Ok(b.into_inner()?)
}

#[cfg(test)]
mod tests;
