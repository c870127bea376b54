//! The bulk workload: one TCP stream on loopback from a server that writes as fast as it can
//! to a client in the measured cgroup that reads it, as a model download does; megabytes per
//! second over the run.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddrV4, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::json;

/// The bulk source's port, in the bench's network namespace.
pub const BULK_PORT: u16 = 7004;

/// Bytes per `read`/`write` call on both ends.
const CHUNK: usize = 256 << 10;

/// Options of `worker-bulk`.
#[derive(clap::Args, Clone, Debug)]
pub struct BulkArgs {
    #[command(flatten)]
    pub place: super::load::Place,
    /// The bulk source.
    #[arg(long)]
    pub addr: SocketAddrV4,
    /// Seconds to read for.
    #[arg(long)]
    pub secs: f64,
}

/// Reads the stream for `secs`; prints the bytes read and the rate in bytes per second.
pub fn receive(addr: SocketAddrV4, secs: f64) -> anyhow::Result<serde_json::Value> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    let mut buf = vec![0u8; CHUNK];
    let limit = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut bytes = 0u64;
    while start.elapsed() < limit {
        let n = s.read(&mut buf).context("reading the bulk stream")?;
        if n == 0 {
            bail!("the bulk source closed the stream after {bytes} bytes");
        }
        bytes += n as u64;
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(json!({
        "pid": std::process::id(),
        "bytes": bytes,
        "rate": bytes as f64 / elapsed,
    }))
}

/// Serves every connection to `listener` an endless stream until the client closes it.
pub fn serve(listener: TcpListener) {
    for conn in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let mut c = conn;
            let buf = vec![0x5au8; CHUNK];
            while c.write_all(&buf).is_ok() {}
        });
    }
}
