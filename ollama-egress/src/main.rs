//! The `ollama-egress` binary: parse the command line, set up logging, dispatch.

use std::{
    io::{self, IsTerminal as _},
    sync::atomic::{AtomicBool, Ordering},
};

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
            let stats = if args.follow {
                install_sigint_flag()?;
                ollama_egress::logstore::run_until(&args, &mut out, || {
                    INTERRUPTED.load(Ordering::Relaxed)
                })?
            } else {
                ollama_egress::logstore::run(&args, &mut out)?
            };
            if let Some(w) = stats.warning() {
                eprintln!("warning: {w}");
            }
        }
        Command::Status(args) => args.run(&mut out)?,
        Command::Detach(args) => args.run(&mut out)?,
        Command::Policy(cmd) => cmd.run(&mut out)?,
        Command::Geo(cmd) => cmd.run(&mut out)?,
        Command::Completions(args) => args.run(&mut out)?,
        Command::Manpages(args) => args.run(&mut out)?,
    }
    Ok(())
}

/// Set by SIGINT while `logs --follow` runs, so it ends with its summary line.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn install_sigint_flag() -> anyhow::Result<()> {
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_sigint),
        nix::sys::signal::SaFlags::empty(),
        nix::sys::signal::SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGINT, &action) }
        .context("installing the SIGINT handler")?;
    Ok(())
}
