//! `cargo xtask dist`: what users install, under `target/dist/`.
//!
//! - `ollama-egress` — a static x86_64 binary (musl, kernel programs embedded, stripped), checked
//!   to run in an empty root (no interpreter, no shared library);
//! - `ollama-egress_VERSION_amd64.deb` — that binary, the systemd unit, the default policy as a
//!   conffile, bash/zsh/fish completions and man pages generated from the clap definitions, and
//!   maintainer scripts that reload systemd but never start enforcement by themselves;
//! - `ollama-egress-image_VERSION_amd64.tar` — the OCI image (`image.rs`), loadable with
//!   `docker load` and readable as an OCI layout archive, reproducible.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};

use crate::setup::{sh, workspace_root};

mod image;

/// The static target.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// Where `dist` puts its output.
pub fn dist_dir() -> PathBuf {
    target_dir().join("dist")
}

pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// What `dist` built.
pub struct Artifacts {
    /// The static binary.
    pub binary: PathBuf,
    /// The Debian package.
    pub deb: PathBuf,
    /// The OCI image archive.
    pub image: PathBuf,
}

/// Builds the static binary and the `.deb`.
pub fn run() -> anyhow::Result<Artifacts> {
    crate::setup::run()?;
    crate::setup::musl()?;
    let root = workspace_root();
    sh(Command::new("cargo").current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "ollama-egress",
        "--target",
        MUSL_TARGET,
    ]))?;
    let built = target_dir()
        .join(MUSL_TARGET)
        .join("release")
        .join("ollama-egress");
    let out = dist_dir();
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    fs::create_dir_all(&out)?;
    let binary = out.join("ollama-egress");
    fs::copy(&built, &binary).with_context(|| format!("copying {}", built.display()))?;
    sh(Command::new("strip").arg(&binary))?;
    check_static(&binary)?;
    let version = version(&binary)?;
    let deb = build_deb(&root, &binary, &version, &out)?;
    let image = build_image(&root, &binary, &version, &out)?;
    println!("{}", binary.display());
    println!("{}", deb.display());
    println!("{}", image.display());
    Ok(Artifacts { binary, deb, image })
}

/// The image archive; its time stamps are `SOURCE_DATE_EPOCH`, else the commit's time, so the
/// same commit gives the same image digest.
fn build_image(root: &Path, bin: &Path, version: &str, out: &Path) -> anyhow::Result<PathBuf> {
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
    };
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => s
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={s:?} is not a number of seconds"))?,
        Err(_) => git(&["log", "-1", "--format=%ct"])
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    };
    let revision = git(&["rev-parse", "HEAD"]);
    let path = out.join(format!("ollama-egress-image_{version}_amd64.tar"));
    let digest = image::write(
        &path,
        &image::ImageInputs {
            binary: &fs::read(bin)?,
            policy: &fs::read(root.join("packaging/policy.toml"))?,
            version,
            revision: revision.as_deref(),
            epoch,
        },
    )?;
    println!("image {}:{version} {digest}", image::REPOSITORY);
    Ok(path)
}

/// Fails unless `bin` is a static ELF that runs alone in an empty root.
fn check_static(bin: &Path) -> anyhow::Result<()> {
    let bytes = fs::read(bin)?;
    ensure!(
        bytes.starts_with(b"\x7fELF"),
        "{} is not an ELF file",
        bin.display()
    );
    // PT_INTERP (3) in the program headers means a dynamic loader is needed.
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into()?) as usize;
    let phentsize = u16::from_le_bytes(bytes[0x36..0x38].try_into()?) as usize;
    let phnum = u16::from_le_bytes(bytes[0x38..0x3a].try_into()?) as usize;
    for i in 0..phnum {
        let off = phoff + i * phentsize;
        let p_type = u32::from_le_bytes(bytes[off..off + 4].try_into()?);
        ensure!(
            p_type != 3,
            "{} needs a dynamic loader (PT_INTERP): not static",
            bin.display()
        );
    }
    // And it runs where nothing else exists.
    let empty = tempfile::tempdir()?;
    let inside = empty.path().join("ollama-egress");
    fs::copy(bin, &inside)?;
    let out = Command::new("chroot")
        .arg(empty.path())
        .args(["/ollama-egress", "--version"])
        .output()
        .context("running chroot")?;
    ensure!(
        out.status.success(),
        "{} does not run in an empty root: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The package version: the crate version of the binary (`ollama-egress 0.1.0 (…)`).
fn version(bin: &Path) -> anyhow::Result<String> {
    let out = Command::new(bin).arg("--version").output()?;
    let text = String::from_utf8(out.stdout)?;
    text.split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .with_context(|| format!("unexpected --version output {text:?}"))
}

fn build_deb(root: &Path, bin: &Path, version: &str, out: &Path) -> anyhow::Result<PathBuf> {
    let stage = out.join("deb-root");
    let put = |rel: &str, mode: u32, data: &[u8]| -> anyhow::Result<()> {
        let path = stage.join(rel);
        fs::create_dir_all(path.parent().context("path without parent")?)?;
        fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    put("usr/bin/ollama-egress", 0o755, &fs::read(bin)?)?;
    // The unit in packaging/ runs a hand-installed /usr/local/bin binary; the package's is in
    // /usr/bin.
    let unit = fs::read_to_string(root.join("packaging/ollama-egress.service"))?;
    ensure!(
        unit.contains("/usr/local/bin/ollama-egress"),
        "packaging/ollama-egress.service no longer names /usr/local/bin/ollama-egress"
    );
    put(
        "lib/systemd/system/ollama-egress.service",
        0o644,
        unit.replace("/usr/local/bin/ollama-egress", "/usr/bin/ollama-egress")
            .as_bytes(),
    )?;
    // Ollama's own slice, and the drop-in that puts ollama.service in it.
    for (file, rel) in [
        ("ollama.slice", "lib/systemd/system/ollama.slice"),
        (
            "ollama-egress.conf",
            "usr/lib/systemd/system/ollama.service.d/ollama-egress.conf",
        ),
    ] {
        put(rel, 0o644, &fs::read(root.join("packaging").join(file))?)?;
    }
    put(
        "etc/ollama-egress/policy.toml",
        0o644,
        &fs::read(root.join("packaging/policy.toml"))?,
    )?;
    for (shell, rel) in [
        (
            "bash",
            "usr/share/bash-completion/completions/ollama-egress",
        ),
        ("zsh", "usr/share/zsh/vendor-completions/_ollama-egress"),
        (
            "fish",
            "usr/share/fish/vendor_completions.d/ollama-egress.fish",
        ),
    ] {
        let o = Command::new(bin).args(["completions", shell]).output()?;
        ensure!(o.status.success(), "completions {shell} failed");
        put(rel, 0o644, &o.stdout)?;
    }
    let man = tempfile::tempdir()?;
    sh(Command::new(bin).arg("manpages").arg(man.path()))?;
    for entry in fs::read_dir(man.path())? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .context("man page name")?
            .to_owned();
        put(
            &format!("usr/share/man/man1/{name}.gz"),
            0o644,
            &gzip(&fs::read(&path)?)?,
        )?;
    }
    put(
        "usr/share/doc/ollama-egress/copyright",
        0o644,
        COPYRIGHT.as_bytes(),
    )?;
    let size_kib = dir_size(&stage)? / 1024;
    put(
        "DEBIAN/control",
        0o644,
        format!(
            "Package: ollama-egress\nVersion: {version}\nArchitecture: amd64\n\
             Maintainer: ollama-egress developers <ollama-egress@example.invalid>\n\
             Installed-Size: {size_kib}\nSection: net\nPriority: optional\n\
             Homepage: https://example.invalid/ollama-egress\n\
             Description: eBPF egress monitor and blocker for local LLM servers\n \
             ollama-egress attaches eBPF programs to Ollama's cgroup, records every\n \
             connection with the process, country and ASN, and in enforce mode drops\n \
             denied traffic in the kernel. The package installs the program, a systemd\n \
             unit (not enabled or started) and a default policy.\n"
        )
        .as_bytes(),
    )?;
    put(
        "DEBIAN/conffiles",
        0o644,
        b"/etc/ollama-egress/policy.toml\n",
    )?;
    put("DEBIAN/postinst", 0o755, POSTINST.as_bytes())?;
    put("DEBIAN/postrm", 0o755, POSTRM.as_bytes())?;
    let deb = out.join(format!("ollama-egress_{version}_amd64.deb"));
    sh(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&deb))?;
    fs::remove_dir_all(&stage)?;
    if !deb.is_file() {
        bail!("dpkg-deb wrote no {}", deb.display());
    }
    Ok(deb)
}

fn gzip(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("gzip stdin")?;
    let data = data.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &data));
    let out = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("gzip writer panicked"))??;
    ensure!(out.status.success(), "gzip failed");
    Ok(out.stdout)
}

fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Reload systemd's view of units after install; never enable or start the daemon: enforcing
/// is the administrator's decision (`systemctl enable --now ollama-egress`). A running Ollama
/// enters ollama.slice (the drop-in) only when restarted: say so.
const POSTINST: &str = r#"#!/bin/sh
set -e
if [ "$1" = "configure" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
    if systemctl is-active --quiet ollama.service; then
        case "$(systemctl show -P ControlGroup ollama.service 2>/dev/null)" in
            */ollama.slice/*) ;;
            *) echo "ollama-egress: Ollama runs outside ollama.slice until it is restarted once: \
`systemctl restart ollama` (with ollama-egress running: \
`systemctl restart ollama-egress ollama`); in the slice its restarts stay enforced" >&2 ;;
        esac
    fi
fi
exit 0
"#;

/// After removal, let systemd forget the unit. Pinned enforcement is left as it is: removing
/// the package is not `ollama-egress detach`.
const POSTRM: &str = r#"#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
if [ "$1" = "purge" ]; then
    rm -rf /var/lib/ollama-egress
fi
exit 0
"#;

const COPYRIGHT: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: ollama-egress
License: MIT or Apache-2.0

Files: *
Copyright: ollama-egress developers
License: MIT or Apache-2.0
 The MIT license or the Apache License, version 2.0, at your option.
";
