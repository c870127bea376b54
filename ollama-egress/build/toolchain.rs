//! The pinned kernel toolchain and its LLVM check, shared by `build.rs` and `cargo xtask setup`
//! (included by path from both, so the rule exists once).
//!
//! The kernel crate is compiled by a dated nightly to LLVM bitcode, which bpf-linker reads with
//! its own LLVM. The two LLVM majors must be equal: a newer rustc writes bitcode an older
//! bpf-linker rejects with `ERROR llvm: Invalid record`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The LLVM major bpf-linker is built against (`cargo xtask setup` installs it so).
pub const BPF_LINKER_LLVM: u32 = 22;
/// The bpf-linker release `cargo xtask setup` installs.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// `ollama-egress-ebpf/rust-toolchain.toml`, relative to the workspace root.
pub fn toolchain_file(workspace: &Path) -> PathBuf {
    workspace
        .join("ollama-egress-ebpf")
        .join("rust-toolchain.toml")
}

/// The `channel` of the kernel crate's `rust-toolchain.toml`, e.g. `nightly-2026-05-19`.
pub fn pinned_channel(workspace: &Path) -> Result<String, String> {
    let file = toolchain_file(workspace);
    let text =
        std::fs::read_to_string(&file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("channel") {
            let value = rest.trim_start().strip_prefix('=').map(str::trim);
            if let Some(v) = value.and_then(|v| v.strip_prefix('"')?.strip_suffix('"')) {
                if v == "nightly" || !v.starts_with("nightly-") {
                    return Err(format!(
                        "{}: channel {v:?} is not a dated nightly (nightly-YYYY-MM-DD)",
                        file.display()
                    ));
                }
                return Ok(v.to_owned());
            }
        }
    }
    Err(format!(
        "{}: no `channel = \"nightly-YYYY-MM-DD\"` line",
        file.display()
    ))
}

/// The LLVM major of `rustc` in `channel`, from `rustup run CHANNEL rustc -vV`.
pub fn rustc_llvm_major(channel: &str) -> Result<u32, String> {
    let out = Command::new("rustup")
        .args(["run", channel, "rustc", "-vV"])
        .output()
        .map_err(|e| format!("running `rustup run {channel} rustc -vV`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "the pinned toolchain {channel} is not installed (`rustup run {channel} rustc -vV`: {}); \
             run `cargo xtask setup`, or `rustup toolchain install {channel} --profile minimal \
             --component rust-src`",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next()?.trim().parse().ok())
        .ok_or_else(|| format!("`rustup run {channel} rustc -vV` names no LLVM version"))
}

/// The LLVM major the bpf-linker at `path` links against, read from the `libLLVM` name it
/// needs (`libLLVM.so.22`, `libLLVM-22.so`); `None` when it names none (a static build).
pub fn bpf_linker_llvm_major(path: &Path) -> Result<Option<u32>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    for pat in [&b"libLLVM.so."[..], &b"libLLVM-"[..]] {
        if let Some(pos) = bytes.windows(pat.len()).position(|w| w == pat) {
            let digits: String = bytes[pos + pat.len()..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .map(|&b| b as char)
                .collect();
            if let Ok(n) = digits.parse() {
                return Ok(Some(n));
            }
        }
    }
    Ok(None)
}

/// `bpf-linker` on PATH.
pub fn find_bpf_linker() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("bpf-linker"))
        .find(|p| p.is_file())
}

/// Checks that the pinned nightly is installed and that its LLVM major equals bpf-linker's;
/// returns the channel. The error names both versions and the fix.
pub fn check(workspace: &Path) -> Result<String, String> {
    let channel = pinned_channel(workspace)?;
    let rustc = rustc_llvm_major(&channel)?;
    let linker = find_bpf_linker().ok_or_else(|| {
        format!(
            "bpf-linker is not on PATH: run `cargo xtask setup` (it installs bpf-linker \
             {BPF_LINKER_VERSION} built against LLVM {BPF_LINKER_LLVM})"
        )
    })?;
    let linker_llvm = bpf_linker_llvm_major(&linker)?;
    match linker_llvm {
        Some(l) if l == rustc => Ok(channel),
        Some(l) => Err(format!(
            "LLVM mismatch: the kernel toolchain {channel} has LLVM {rustc}, but {} is built \
             against LLVM {l}; bpf-linker cannot read newer bitcode (\"Invalid record\"). Fix: \
             install bpf-linker for LLVM {rustc} (`cargo install bpf-linker --locked \
             --no-default-features --features llvm-{rustc}`), or pin a nightly with LLVM {l} in \
             {}",
            linker.display(),
            toolchain_file(workspace).display()
        )),
        None => Err(format!(
            "cannot tell which LLVM {} is built against (no libLLVM.so.N dependency); the kernel \
             toolchain {channel} has LLVM {rustc}. Reinstall it with `cargo xtask setup`, or set \
             OLLAMA_EGRESS_SKIP_LLVM_CHECK=1 if you know they match",
            linker.display()
        )),
    }
}
