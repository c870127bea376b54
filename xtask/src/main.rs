//! Developer tasks: `cargo xtask setup | test | run | fixtures | bench | fuzz`.

mod bench;
mod debroot;
mod deploy_tools;
mod dist;
mod fuzz;
mod setup;
mod test;

use std::{path::PathBuf, process::Command};

use clap::{Parser, Subcommand};

/// ollama-egress developer tasks.
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building the kernel programs needs when it is missing: LLVM 22 libraries,
    /// iproute2, the nightly toolchain's rust-src, bpf-linker 0.13 (LLVM 22).
    Setup,
    /// Set up, build ollama-egress (release) and run it with ARGS, e.g.
    /// `cargo xtask run -- run --monitor --unit ollama.service`.
    Run {
        /// Arguments for ollama-egress.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Write the documentation-range fixture databases (203.0.113.0/24 CN, 198.51.100.0/24
    /// and 192.0.2.0/24 US, 2001:db8::/32 DE) as country.mmdb and asn.mmdb into DIR.
    Fixtures {
        /// Target directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Set up, then run formatting and lint checks, the unit tests and the root integration
    /// tests against the running kernel (needs root; fails if they cannot run).
    Test {
        /// Skip `cargo fmt --check` and `cargo clippy`.
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments for the test binaries (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build what users install into target/dist/: a static x86_64 binary (musl, kernel
    /// programs embedded) and a .deb (binary, systemd unit, default policy as a conffile,
    /// completions, man pages).
    Dist,
    /// Benchmarks (root): ollama-egress against no filter, nftables and iptables + ipset;
    /// prints the results and writes BENCHMARKS.md.
    Bench(bench::Args),
    /// Run every cargo-fuzz target (fuzz/) for a bounded time (30 s each by default); fails,
    /// naming the crashing input, when one finds a crash. Needs the nightly toolchain.
    Fuzz(fuzz::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Task::Setup => setup::run(),
        Task::Run { args } => {
            setup::run()?;
            setup::sh(Command::new("cargo").args(["build", "--release", "-p", "ollama-egress"]))?;
            setup::sh(Command::new("target/release/ollama-egress").args(&args))
        }
        Task::Fixtures { dir } => {
            std::fs::create_dir_all(&dir)?;
            let (country, asn) =
                ollama_egress_geo::fixture::documentation_fixture().write_to(&dir)?;
            println!("{}\n{}", country.display(), asn.display());
            Ok(())
        }
        Task::Test { no_lint, args } => {
            setup::run()?;
            test::run(!no_lint, &args)
        }
        Task::Dist => dist::run().map(|_| ()),
        Task::Bench(args) => bench::run(args),
        Task::Fuzz(args) => fuzz::run(args),
    }
}
