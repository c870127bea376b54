//! Forwarding the kernel programs' own log messages (aya-log) to `tracing`, through the `log`
//! facade that `tracing-subscriber` bridges.

use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::watch,
};

use crate::loader::KernelLogger;

/// Prints every kernel log message as it arrives, until `stop` turns true.
pub async fn forward_kernel_log(
    logger: KernelLogger,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    // SAFETY: the logger owns its ring-buffer fd, which stays open and unchanged for as long as
    // the `AsyncFd` owns the logger.
    let mut fd = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
        .map_err(std::io::Error::from)?;
    loop {
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
    fd.get_mut().flush();
    Ok(())
}
