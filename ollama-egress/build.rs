//! Builds the kernel programs (`ollama-egress-ebpf`) for the bpf target with aya-build and leaves
//! the object in `OUT_DIR`, where `src/loader` embeds it with `include_bytes_aligned!`.
//!
//! `AYA_BUILD_SKIP=1` skips the kernel build (for `cargo check`/`clippy` on machines without
//! bpf-linker); an empty object is written instead and loading it fails with a clear error.

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let out_dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let skip =
        std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        let obj = out_dir.join("ollama-egress");
        if !obj.exists() {
            std::fs::write(&obj, []).with_context(|| format!("writing {}", obj.display()))?;
        }
    }
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let root = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("crate has no parent directory"))?
        .join("ollama-egress-ebpf");
    let root = root
        .to_str()
        .ok_or_else(|| anyhow!("non UTF-8 path {}", root.display()))?;
    aya_build::build_ebpf(
        [Package {
            name: "ollama-egress-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
