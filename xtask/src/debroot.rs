//! A clean Debian root for the tests that install the package or boot systemd: made once with
//! debootstrap (~75 s, ~300 MB) under the target directory and reused by every test of the run,
//! each of which works on an overlay of it and leaves it untouched.

use std::{fs, path::PathBuf, process::Command};

use anyhow::Context as _;

use crate::setup::{apt_install, sh};

/// Debian release of the test root.
const SUITE: &str = "bookworm";
/// Packages beyond minbase: systemd as PID 1, man, bash completion, ip.
const INCLUDE: &str = "systemd,systemd-sysv,dbus,iproute2,man-db,bash-completion";

/// The root, created when missing; its path.
pub fn ensure(target_dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let root = target_dir.join("debian-root");
    let done = root.join(".ollama-egress-complete");
    if done.is_file() {
        return Ok(root);
    }
    apt_install(&["debootstrap"])?;
    let tmp = target_dir.join("debian-root.tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    eprintln!("xtask: making a Debian {SUITE} root for the package and systemd tests (once)");
    sh(Command::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={INCLUDE}"), SUITE])
        .arg(&tmp)
        .arg("http://deb.debian.org/debian")
        .stdout(std::process::Stdio::null()))?;
    fs::rename(&tmp, &root)?;
    fs::write(&done, SUITE)?;
    Ok(root)
}
