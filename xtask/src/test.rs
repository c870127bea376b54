//! `cargo xtask test`: lints, unit tests, and the root integration tests.

use std::process::Command;

use anyhow::bail;

use crate::setup::sh;

/// Runs everything. Lints and unit tests run as any user; the integration tests (and the
/// package steps that only serve them) need root, and this fails there when they cannot run.
pub fn run(lint: bool, args: &[String]) -> anyhow::Result<()> {
    if lint {
        sh(Command::new("cargo").args(["fmt", "--all", "--check"]))?;
        sh(Command::new("cargo").args([
            "clippy",
            "--workspace",
            "--exclude",
            "ollama-egress-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        // The bench's in-process timing is behind a feature of xtask.
        sh(Command::new("cargo").args([
            "clippy",
            "-p",
            "xtask",
            "--all-targets",
            "--features",
            "bench",
            "--",
            "-D",
            "warnings",
        ]))?;
        // The kernel crate only builds for the bpf target, with the pinned nightly.
        sh(Command::new("cargo")
            .arg(format!("+{}", crate::setup::pinned_nightly()?))
            .args([
                "clippy",
                "-p",
                "ollama-egress-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--release",
                "--",
                "-D",
                "warnings",
            ]))?;
    }
    // Unit tests first (no root needed), then the integration tests, which use the daemon binary
    // built by the same invocation.
    sh(Command::new("cargo")
        .args([
            "test",
            "--workspace",
            "--exclude",
            "ollama-egress-ebpf",
            "--exclude",
            "ollama-egress-tests",
        ])
        .arg("--")
        .args(args))?;
    // The fuzz targets' checked-in seeds, replayed on stable: their reference models must keep
    // up with the code they check (they run without the kernel object).
    sh(Command::new("cargo")
        .args(["test", "--manifest-path", "fuzz/Cargo.toml"])
        .env("AYA_BUILD_SKIP", "1"))?;
    if !is_root() {
        bail!(
            "lints and unit tests passed; the integration tests load eBPF programs into the kernel and need root: run `sudo -E cargo xtask test`"
        );
    }
    sh(Command::new("cargo").args(["build", "-p", "ollama-egress"]))?;
    // What users install: the static binary and the .deb (tested in a clean Debian root).
    let dist = crate::dist::run()?;
    let target_dir = dist
        .binary
        .parent()
        .and_then(std::path::Path::parent)
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let debian_root = crate::debroot::ensure(&target_dir)?;
    sh(Command::new("cargo")
        .args([
            "test",
            "-p",
            "ollama-egress-tests",
            "--no-fail-fast",
            "--",
            "--test-threads=2",
        ])
        .args(args)
        .env("OLLAMA_EGRESS_DEB", &dist.deb)
        .env("OLLAMA_EGRESS_IMAGE", &dist.image)
        .env(
            "OLLAMA_EGRESS_DEPLOY_TOOLS",
            crate::deploy_tools::venv_dir(),
        )
        .env("OLLAMA_EGRESS_DEBIAN_ROOT", &debian_root))?;
    // The enforcement and bypass tests once more, against the static binary users install.
    sh(Command::new("cargo")
        .args([
            "test",
            "-p",
            "ollama-egress-tests",
            "--test",
            "core",
            "--test",
            "bypass",
            "--test",
            "device_bypass",
            "--",
            "--test-threads=2",
        ])
        .args(args)
        .env("OLLAMA_EGRESS_BIN", &dist.binary))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
