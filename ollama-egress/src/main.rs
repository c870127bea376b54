//! The `ollama-egress` binary: parse the command line, set up logging, dispatch.

use std::io::{self, IsTerminal as _};

use anyhow::Context as _;
use clap::Parser as _;
use ollama_egress::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("OLLAMA_EGRESS_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
    match dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match cli.command {
        Command::Run(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(ollama_egress::daemon::run(args.options()))?;
        }
        Command::Logs(args) => {
            ollama_egress::logstore::run(&args, &mut out)?;
        }
        Command::Status(args) => args.run(&mut out)?,
        Command::Detach(args) => args.run(&mut out)?,
        Command::Policy(cmd) => cmd.run(&mut out)?,
        Command::Geo(cmd) => cmd.run(&mut out)?,
    }
    Ok(())
}
