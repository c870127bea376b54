//! Installing the build prerequisites when they are missing (idempotent, quiet when all is
//! there). Versions follow the verified recipe: the dated nightly named in
//! `ollama-egress-ebpf/rust-toolchain.toml` (exactly that one, never the floating `nightly`) and
//! bpf-linker 0.13.0 built against LLVM 22; their LLVM majors are checked to be equal.

use std::process::Command;

use anyhow::{Context as _, bail};

/// Debian packages the build and the tests need.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "libxml2-dev",
    "iproute2",
    // The dashboard and alert rules are proven against a real Prometheus (and promtool).
    "prometheus",
    // The name tests run a real DNS server (dnsmasq) inside their network namespaces, and
    // hand-made DNS clients (python3) in the test cgroups.
    "dnsmasq-base",
    "python3",
    // The container tests run their own dockerd (Debian's docker.io, never the host's) on an
    // image holding only busybox-static.
    "docker.io",
    "busybox-static",
    // The image test reads the OCI archive with skopeo too; the deploy tests' venv (kubernetes-validate,
    // helm) is made with python3-venv.
    "skopeo",
    "python3-venv",
];

/// Packages whose maintainer scripts would start a service: installed with a
/// `policy-rc.d` that forbids it (the tests start their own dockerd).
const NO_START: &[&str] = &["docker.io", "containerd"];

/// Debian's hook for maintainer scripts asking to start services.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

#[path = "../../ollama-egress/build/toolchain.rs"]
pub(crate) mod toolchain;
use toolchain::{BPF_LINKER_LLVM, BPF_LINKER_VERSION};

/// The workspace root (xtask lives one level below it).
pub(crate) fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default()
}

/// The dated nightly the kernel crate is built with.
pub(crate) fn pinned_nightly() -> anyhow::Result<String> {
    toolchain::pinned_channel(&workspace_root()).map_err(anyhow::Error::msg)
}

/// Installs whatever is missing.
pub fn run() -> anyhow::Result<()> {
    apt()?;
    let channel = pinned_nightly()?;
    rust_src(&channel)?;
    bpf_linker()?;
    toolchain::check(&workspace_root()).map_err(anyhow::Error::msg)?;
    crate::deploy_tools::ensure()?;
    Ok(())
}

pub(crate) fn sh(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn apt() -> anyhow::Result<()> {
    let starts_service = APT_PACKAGES
        .iter()
        .any(|p| NO_START.contains(p) && !installed(p));
    let _guard = starts_service.then(NoServiceStart::install).transpose()?;
    apt_install(APT_PACKAGES)
}

/// A `policy-rc.d` that answers 101 ("action forbidden") while packages install, so that
/// installing docker.io starts no dockerd on the host; removed on drop. An existing one is
/// left as it is (it already decides).
struct NoServiceStart {
    made: bool,
}

impl NoServiceStart {
    fn install() -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = std::path::Path::new(POLICY_RC_D);
        if path.exists() {
            return Ok(Self { made: false });
        }
        std::fs::write(
            path,
            "#!/bin/sh\n# services are not started while xtask setup installs\nexit 101\n",
        )
        .with_context(|| format!("writing {POLICY_RC_D}"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {POLICY_RC_D} executable"))?;
        Ok(Self { made: true })
    }
}

impl Drop for NoServiceStart {
    fn drop(&mut self) {
        if self.made
            && let Err(e) = std::fs::remove_file(POLICY_RC_D)
        {
            eprintln!("xtask setup: could not remove {POLICY_RC_D}: {e}");
        }
    }
}

/// Installs the Debian packages of `packages` that are missing.
pub(crate) fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask setup: installing {}", missing.join(" "));
    sh(Command::new("apt-get").arg("update").arg("-qq"))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Adds the static (musl) target to the userspace toolchain and the C toolchain for it (ring
/// compiles C); `dist` needs both.
pub(crate) fn musl() -> anyhow::Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(workspace_root())
        .output()
        .context("running rustup")?;
    if !String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == crate::dist::MUSL_TARGET)
    {
        sh(Command::new("rustup")
            .args(["target", "add", crate::dist::MUSL_TARGET])
            .current_dir(workspace_root()))?;
    }
    apt_install(&["musl-tools"])
}

/// Installs exactly the pinned nightly with rust-src (for `-Z build-std=core`) and clippy (the
/// kernel crate is linted with it).
pub(crate) fn rust_src(channel: &str) -> anyhow::Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", channel])
        .output()
        .context("running rustup (is it installed? https://rustup.rs)")?;
    let list = String::from_utf8_lossy(&out.stdout);
    if out.status.success()
        && ["rust-src", "clippy"]
            .iter()
            .all(|c| list.lines().any(|l| l.starts_with(c)))
    {
        return Ok(());
    }
    eprintln!("xtask setup: installing the pinned toolchain {channel} with rust-src and clippy");
    sh(Command::new("rustup").args([
        "toolchain",
        "install",
        channel,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
        "--component",
        "clippy",
        "--no-self-update",
    ]))
}

fn bpf_linker() -> anyhow::Result<()> {
    let current = Command::new("bpf-linker").arg("--version").output();
    if let Ok(out) = current
        && String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER_VERSION)
        && toolchain::find_bpf_linker()
            .and_then(|p| toolchain::bpf_linker_llvm_major(&p).ok().flatten())
            == Some(BPF_LINKER_LLVM)
    {
        return Ok(());
    }
    eprintln!("xtask setup: installing bpf-linker {BPF_LINKER_VERSION} (LLVM {BPF_LINKER_LLVM})");
    let path = format!(
        "/usr/lib/llvm-{BPF_LINKER_LLVM}/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    sh(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args(["--force", "--no-default-features", "--features"])
        .arg(format!("llvm-{BPF_LINKER_LLVM}"))
        .env("PATH", path)
        .env(
            format!("LLVM_SYS_{BPF_LINKER_LLVM}1_PREFIX"),
            format!("/usr/lib/llvm-{BPF_LINKER_LLVM}"),
        ))
}
