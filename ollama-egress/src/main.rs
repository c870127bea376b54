//! The `ollama-egress` binary: parse the command line, set up logging, dispatch.

use std::{
    io::{self, IsTerminal as _, Write as _},
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
        .with_writer(|| LossyStderr)
        .with_ansi(io::stderr().is_terminal())
        .log_internal_errors(false)
        .init();
    if let Command::Audit(args) = &cli.command {
        return audit(args);
    }
    let error_status = match &cli.command {
        Command::Policy(cmd) => cmd.error_status(),
        _ => 1,
    };
    match dispatch(cli) {
        Ok(status) => std::process::ExitCode::from(status),
        Err(e) => {
            let _ = writeln!(io::stderr(), "error: {}", render_error(&e));
            std::process::ExitCode::from(error_status)
        }
    }
}

/// `audit`: 0 clean, 1 a high-severity finding, 2 the audit could not be done.
fn audit(args: &ollama_egress::cli::AuditArgs) -> std::process::ExitCode {
    match args.run(&mut io::stdout().lock()) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            let _ = writeln!(io::stderr(), "error: {}", render_error(&e.into()));
            std::process::ExitCode::from(2)
        }
    }
}

/// Standard error for the log that never fails: a closed or full stderr (`run ... | head`)
/// loses log lines, never the daemon (and with it enforcement). SIGPIPE is ignored (Rust's
/// default), so a closed pipe is an `EPIPE` that is dropped here.
struct LossyStderr;

impl io::Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(io::stderr().write(buf).unwrap_or(buf.len()))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let _ = io::stderr().write_all(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

/// The error and its causes, each cause only when the message before it does not already
/// say it (the error types put their source into their own message).
fn render_error(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

/// Runs the command; the exit status (0 unless a command has a status of its own).
fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match cli.command {
        Command::Run(args) => {
            // The daemon's event sink writes to stdout from its reader thread (--log-stdout):
            // holding the lock here would block that thread, and every event after it, forever.
            drop(out);
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
                ollama_egress::cli::logs::run_until(&args, &mut out, || {
                    INTERRUPTED.load(Ordering::Relaxed)
                })?
            } else {
                ollama_egress::cli::logs::run(&args, &mut out)?
            };
            if let Some(w) = stats.warning() {
                let _ = writeln!(io::stderr(), "warning: {w}");
            }
        }
        // Has exit statuses of its own: run by `main`.
        Command::Audit(_) => {}
        Command::Status(args) => args.run(&mut out)?,
        Command::Detach(args) => args.run(&mut out)?,
        Command::Policy(cmd) => return cmd.run(&mut out, &mut io::stderr()),
        Command::Geo(cmd) => cmd.run(&mut out)?,
        Command::Completions(args) => args.run(&mut out)?,
        Command::Manpages(args) => args.run(&mut out)?,
    }
    Ok(0)
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

#[cfg(test)]
mod tests;
