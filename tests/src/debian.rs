//! The clean Debian root of the package and systemd tests: `OLLAMA_EGRESS_DEBIAN_ROOT` (made
//! once by debootstrap, never modified) and `OLLAMA_EGRESS_DEB` (the package of `cargo xtask
//! dist`), both set by `cargo xtask test`. Each test works on an [`Overlay`] of the root.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use crate::require_root;

/// The debootstrap command `cargo xtask test` runs to make the root (`xtask/src/debroot.rs`).
pub const DEBOOTSTRAP: &str = "debootstrap --variant=minbase \
     --include=systemd,systemd-sysv,dbus,iproute2,man-db,bash-completion bookworm DIR \
     http://deb.debian.org/debian";

fn env_path(name: &str, how: &str) -> PathBuf {
    let p = std::env::var_os(name).unwrap_or_else(|| {
        panic!("{name} is not set: run `cargo xtask test`, which makes it, or {how}")
    });
    let p = PathBuf::from(p);
    assert!(p.exists(), "{name}={} does not exist: {how}", p.display());
    p
}

/// The package under test.
pub fn deb() -> PathBuf {
    env_path(
        "OLLAMA_EGRESS_DEB",
        "build it with `cargo xtask dist` and set it to target/dist/ollama-egress_*.deb",
    )
}

/// The clean Debian root; panics naming the command that makes it when there is none.
pub fn root() -> PathBuf {
    let how = format!("make one with `{DEBOOTSTRAP}` and set it to DIR");
    let root = env_path("OLLAMA_EGRESS_DEBIAN_ROOT", &how);
    assert!(
        root.join("lib/systemd/systemd").is_file(),
        "{} has no lib/systemd/systemd: not a complete Debian root; {how}",
        root.display()
    );
    root
}

/// An overlay of the Debian root, unmounted and removed on drop.
pub struct Overlay {
    dir: tempfile::TempDir,
}

impl Overlay {
    /// Mounts a fresh overlay of `lower`.
    pub fn new(lower: &Path) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["upper", "work", "merged"] {
            fs::create_dir(dir.path().join(d)).expect("mkdir");
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            dir.path().join("upper").display(),
            dir.path().join("work").display()
        );
        let st = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(dir.path().join("merged"))
            .status()
            .expect("mount");
        assert!(st.success(), "mounting an overlay of {}", lower.display());
        Self { dir }
    }

    /// The overlay's root directory.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("merged")
    }

    /// Runs `sh -c SCRIPT` chrooted into the overlay, with a plain environment.
    pub fn sh(&self, script: &str) -> Output {
        Command::new("chroot")
            .arg(self.root())
            .args(["/bin/sh", "-c", script])
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8")
            .output()
            .expect("chroot")
    }

    /// Like `sh`, panicking with the output unless it succeeds; returns stdout.
    pub fn ok(&self, script: &str) -> String {
        checked(script, &self.sh(script))
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.root()).status();
    }
}

/// stdout of a command that must have succeeded; panics with both streams otherwise.
pub fn checked(script: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "`{script}` failed in the Debian root ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An overlay of the Debian root with the package installed.
pub fn installed() -> Overlay {
    require_root();
    let deb = deb();
    let ov = Overlay::new(&root());
    fs::copy(&deb, ov.root().join("tmp/ollama-egress.deb")).expect("copy the package in");
    ov.ok("dpkg -i /tmp/ollama-egress.deb");
    ov
}
