//! Developer tasks: `cargo xtask setup | test | ci`.

mod setup;
mod test;

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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Task::Setup => setup::run(),
        Task::Test { no_lint, args } => {
            setup::run()?;
            test::run(!no_lint, &args)
        }
    }
}
