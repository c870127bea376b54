//! Builds the kernel programs (`ollama-egress-ebpf`) for the bpf target with aya-build and leaves
//! the object in `OUT_DIR`, where `src/loader` embeds it with `include_bytes_aligned!`.
//!
//! The toolchain is the dated nightly named in `ollama-egress-ebpf/rust-toolchain.toml` (never
//! the floating `nightly`), and its LLVM major must equal bpf-linker's: both are checked here
//! before anything is compiled, with an error naming the versions and the fix.
//!
//! `AYA_BUILD_SKIP=1` skips the kernel build (for `cargo check`/`clippy` on machines without
//! bpf-linker); an empty object is written instead and loading it fails with a clear error.
//! The nested build is quiet: only the compiler's own diagnostics reach the terminal.

use anyhow::{Context as _, anyhow, bail};
use aya_build::{Package, Toolchain};

#[path = "build/toolchain.rs"]
#[allow(dead_code)]
mod toolchain;

fn main() -> anyhow::Result<()> {
    let out_dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let workspace = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("crate has no parent directory"))?
        .to_path_buf();
    println!("cargo:rerun-if-changed=build/toolchain.rs");
    println!(
        "cargo:rerun-if-changed={}",
        toolchain::toolchain_file(&workspace).display()
    );
    println!("cargo:rerun-if-env-changed=OLLAMA_EGRESS_SKIP_LLVM_CHECK");
    println!("cargo:rerun-if-env-changed=OLLAMA_EGRESS_COMMIT");
    println!(
        "cargo:rustc-env=OLLAMA_EGRESS_COMMIT={}",
        commit(&workspace)
    );
    let skip =
        std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        let obj = out_dir.join("ollama-egress");
        if !obj.exists() {
            std::fs::write(&obj, []).with_context(|| format!("writing {}", obj.display()))?;
        }
        println!("cargo:rustc-env=OLLAMA_EGRESS_KERNEL_BUILD_ID=none");
        return Ok(());
    }
    let channel = if std::env::var("OLLAMA_EGRESS_SKIP_LLVM_CHECK").is_ok_and(|v| v == "1") {
        toolchain::pinned_channel(&workspace).map_err(|e| anyhow!(e))?
    } else {
        match toolchain::check(&workspace) {
            Ok(c) => c,
            Err(e) => bail!("cannot build the kernel programs: {e}"),
        }
    };
    // Inherited by the nested cargo: no "Compiling …" line per dependency on the user's terminal
    // (aya-build forwards every line of its stderr as a cargo warning).
    // SAFETY: the build script is single-threaded here; nothing reads the environment concurrently.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    let root = workspace.join("ollama-egress-ebpf");
    let root = root
        .to_str()
        .ok_or_else(|| anyhow!("non UTF-8 path {}", root.display()))?;
    aya_build::build_ebpf(
        [Package {
            name: "ollama-egress-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        Toolchain::Custom(&channel),
    )?;
    let obj = out_dir.join("ollama-egress");
    let bytes = std::fs::read(&obj).with_context(|| format!("reading {}", obj.display()))?;
    println!(
        "cargo:rustc-env=OLLAMA_EGRESS_KERNEL_BUILD_ID={}",
        fnv64_hex(&bytes)
    );
    Ok(())
}

/// The commit being built: `$OLLAMA_EGRESS_COMMIT` (set by packagers), else `git rev-parse`,
/// else "unknown" (a source tarball).
fn commit(workspace: &std::path::Path) -> String {
    if let Ok(c) = std::env::var("OLLAMA_EGRESS_COMMIT") {
        return c;
    }
    let head = workspace.join(".git");
    if head.exists() {
        // Rebuild when HEAD moves (a file in the worktree's git dir; absent in a worktree).
        println!("cargo:rerun-if-changed={}", head.join("HEAD").display());
        println!("cargo:rerun-if-changed={}", head.join("index").display());
    }
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(workspace)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A short identity of the kernel object (FNV-1a, 64 bits), printed by `--version`.
fn fnv64_hex(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}
