//! The load generator: short-lived worker processes (this binary, `xtask bench worker-…`) that
//! enter the bench's network namespace, join a cgroup, run one bounded loop and print one JSON
//! line; and the server they talk to, which lives in the namespace outside the client cgroups.
//!
//! Plain syscalls through libc keep the loops as thin as the C loops they stand in for.

use std::{
    fs,
    io::{Read as _, Write as _},
    mem::size_of,
    net::{SocketAddrV4, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::json;

/// Where a worker runs.
#[derive(Args, Clone, Debug)]
pub struct Place {
    /// Network namespace (`ip netns` name) to enter.
    #[arg(long)]
    pub netns: String,
    /// Cgroup directory to join before the loop.
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
}

/// The internal worker commands (hidden from `--help`).
#[derive(Subcommand, Clone, Debug)]
pub enum Worker {
    /// connect()/close() loop; prints attempts, successes, first errno.
    #[command(name = "worker-tcp-connect", hide = true)]
    TcpConnect {
        #[command(flatten)]
        place: Place,
        #[arg(long)]
        addr: SocketAddrV4,
        #[arg(long)]
        secs: f64,
        /// Connections per second to pace at (0: as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Client threads (the rate is split between them).
        #[arg(long, default_value_t = 1)]
        threads: u64,
    },
    /// sendto() loop of `size`-byte datagrams from one socket.
    #[command(name = "worker-udp", hide = true)]
    Udp {
        #[command(flatten)]
        place: Place,
        #[arg(long)]
        addr: SocketAddrV4,
        #[arg(long)]
        secs: f64,
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Request/response over one TCP connection; prints p50/p99 round trips.
    #[command(name = "worker-rr", hide = true)]
    Rr {
        #[command(flatten)]
        place: Place,
        #[arg(long)]
        addr: SocketAddrV4,
        #[arg(long)]
        secs: f64,
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// `count` blocking connect()s with a send timeout; prints how long each took to fail.
    #[command(name = "worker-denied", hide = true)]
    Denied {
        #[command(flatten)]
        place: Place,
        #[arg(long)]
        addr: SocketAddrV4,
        #[arg(long)]
        count: u32,
        #[arg(long)]
        timeout_ms: u64,
    },
    /// DNS queries for fresh names (or `count` for one name) with a window in flight.
    #[command(name = "worker-dns", hide = true)]
    Dns {
        #[command(flatten)]
        place: Place,
        #[arg(long)]
        server: SocketAddrV4,
        #[arg(long)]
        secs: f64,
        #[arg(long, default_value_t = 16)]
        window: u32,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        count: Option<u64>,
    },
    /// One TCP stream read for `secs`; prints bytes/s.
    #[command(name = "worker-bulk", hide = true)]
    Bulk(super::bulk::BulkArgs),
    /// The servers: TCP accept-and-close, TCP echo, UDP sink, DNS responder. Runs until stdin
    /// closes.
    #[command(name = "worker-serve", hide = true)]
    Serve {
        #[arg(long)]
        netns: String,
        #[arg(long)]
        accept: SocketAddrV4,
        #[arg(long)]
        echo: SocketAddrV4,
        #[arg(long)]
        udp: SocketAddrV4,
        #[arg(long)]
        dns: SocketAddrV4,
    },
}

/// Runs a worker command.
pub fn worker(w: Worker) -> anyhow::Result<()> {
    let out = match w {
        Worker::TcpConnect {
            place,
            addr,
            secs,
            rate,
            threads,
        } => {
            enter(&place)?;
            tcp_connect_threads(addr, secs, rate, threads.max(1))
        }
        Worker::Udp {
            place,
            addr,
            secs,
            size,
        } => {
            enter(&place)?;
            udp(addr, secs, size)?
        }
        Worker::Rr {
            place,
            addr,
            secs,
            size,
        } => {
            enter(&place)?;
            rr(addr, secs, size)?
        }
        Worker::Denied {
            place,
            addr,
            count,
            timeout_ms,
        } => {
            enter(&place)?;
            denied(addr, count, timeout_ms)
        }
        Worker::Dns {
            place,
            server,
            secs,
            window,
            name,
            count,
        } => {
            enter(&place)?;
            super::dns::client(server, secs, window.max(1), name.as_deref(), count)?
        }
        Worker::Bulk(a) => {
            enter(&a.place)?;
            super::bulk::receive(a.addr, a.secs)?
        }
        Worker::Serve {
            netns,
            accept,
            echo,
            udp,
            dns,
        } => return super::server::serve(&netns, accept, echo, udp, dns),
    };
    println!("{out}");
    Ok(())
}

pub(super) fn enter_netns(netns: &str) -> anyhow::Result<()> {
    let f =
        fs::File::open(format!("/run/netns/{netns}")).with_context(|| format!("netns {netns}"))?;
    // SAFETY: plain syscall on a descriptor we own; the process is single-threaded here.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {netns}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn enter(place: &Place) -> anyhow::Result<()> {
    enter_netns(&place.netns)?;
    if let Some(cg) = &place.cgroup {
        fs::write(cg.join("cgroup.procs"), format!("{}\n", std::process::id()))
            .with_context(|| format!("joining {}", cg.display()))?;
    }
    Ok(())
}

pub(super) fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

pub(super) const SOCKADDR_IN_LEN: libc::socklen_t =
    size_of::<libc::sockaddr_in>() as libc::socklen_t;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub(super) fn setsockopt<T>(fd: i32, level: i32, name: i32, value: &T) {
    // SAFETY: `value` is a valid `T` for the duration of the call.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        );
    }
}

/// Keeps a loop at `rate` per second: sleeps when ahead (checked every few operations, so the
/// sleep granularity does not matter).
struct Pacer {
    start: Instant,
    rate: u64,
}

impl Pacer {
    fn pace(&self, done: u64) {
        if self.rate == 0 {
            return;
        }
        let due = Duration::from_secs_f64(done as f64 / self.rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
    }
}

/// [`tcp_connect`] in `threads` threads; the sums of their counts.
fn tcp_connect_threads(
    addr: SocketAddrV4,
    secs: f64,
    rate: u64,
    threads: u64,
) -> serde_json::Value {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(move || tcp_connect(addr, secs, rate / threads)))
        .collect();
    let outs: Vec<serde_json::Value> = handles.into_iter().filter_map(|h| h.join().ok()).collect();
    let sum = |k: &str| outs.iter().filter_map(|o| o[k].as_u64()).sum::<u64>();
    let attempts = sum("attempts");
    let elapsed = start.elapsed().as_secs_f64();
    json!({
        "pid": std::process::id(),
        "attempts": attempts,
        "ok": sum("ok"),
        "errno": outs.iter().find_map(|o| o["errno"].as_i64().filter(|&e| e != 0)).unwrap_or(0),
        "secs": elapsed,
        "rate": attempts as f64 / elapsed,
        "threads": threads,
    })
}

/// connect()/close() as fast as possible (or at `rate`). The client closes with SO_LINGER 0
/// (RST), so no TIME_WAIT sockets pile up and the port range never runs out.
fn tcp_connect(addr: SocketAddrV4, secs: f64, rate: u64) -> serde_json::Value {
    let sa = sockaddr(addr);
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let start = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    let pacer = Pacer { start, rate };
    let (mut attempts, mut ok, mut first_errno) = (0u64, 0u64, 0i32);
    loop {
        // SAFETY: plain socket syscalls on descriptors this loop owns; `sa` outlives them.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                first_errno = errno();
                break;
            }
            setsockopt(fd, libc::SOL_SOCKET, libc::SO_LINGER, &linger);
            let r = libc::connect(
                fd,
                (&sa as *const libc::sockaddr_in).cast(),
                SOCKADDR_IN_LEN,
            );
            if r == 0 {
                ok += 1;
            } else if first_errno == 0 {
                first_errno = errno();
            }
            libc::close(fd);
        }
        attempts += 1;
        if attempts % 32 == 0 {
            if start.elapsed() >= limit {
                break;
            }
            pacer.pace(attempts);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    json!({
        "pid": std::process::id(),
        "attempts": attempts,
        "ok": ok,
        "errno": first_errno,
        "secs": elapsed,
        "rate": attempts as f64 / elapsed,
    })
}

/// sendto() of `size`-byte datagrams on one unconnected socket (each call passes the sendmsg
/// hooks).
fn udp(addr: SocketAddrV4, secs: f64, size: usize) -> anyhow::Result<serde_json::Value> {
    let s = UdpSocket::bind("0.0.0.0:0")?;
    let sa = sockaddr(addr);
    let buf = vec![0x5au8; size];
    let fd = s.as_raw_fd();
    let start = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    let (mut sent, mut failed, mut first_errno) = (0u64, 0u64, 0i32);
    loop {
        for _ in 0..64 {
            // SAFETY: `buf` and `sa` outlive the call.
            let n = unsafe {
                libc::sendto(
                    fd,
                    buf.as_ptr().cast(),
                    buf.len(),
                    0,
                    (&sa as *const libc::sockaddr_in).cast(),
                    SOCKADDR_IN_LEN,
                )
            };
            if n >= 0 {
                sent += 1;
            } else {
                failed += 1;
                if first_errno == 0 {
                    first_errno = errno();
                }
            }
        }
        if start.elapsed() >= limit {
            break;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(json!({
        "pid": std::process::id(),
        "sent": sent,
        "failed": failed,
        "errno": first_errno,
        "secs": elapsed,
        "rate": sent as f64 / elapsed,
    }))
}

/// Percentile of sorted samples.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// `size`-byte request, `size`-byte echo, one connection made inside the cgroup.
fn rr(addr: SocketAddrV4, secs: f64, size: usize) -> anyhow::Result<serde_json::Value> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    let mut buf = vec![0x5au8; size];
    let mut samples: Vec<u64> = Vec::with_capacity(200_000);
    let start = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    while start.elapsed() < limit {
        let t = Instant::now();
        s.write_all(&buf)?;
        s.read_exact(&mut buf)?;
        samples.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    samples.sort_unstable();
    Ok(json!({
        "pid": std::process::id(),
        "count": samples.len(),
        "p50_ns": percentile(&samples, 0.50),
        "p99_ns": percentile(&samples, 0.99),
        "secs": start.elapsed().as_secs_f64(),
    }))
}

/// Blocking connect()s with SO_SNDTIMEO: an enforcing ollama-egress fails them at once with
/// EPERM; a firewall that drops the SYN leaves them hanging until the timeout.
fn denied(addr: SocketAddrV4, count: u32, timeout_ms: u64) -> serde_json::Value {
    let sa = sockaddr(addr);
    let tv = libc::timeval {
        tv_sec: (timeout_ms / 1000) as libc::time_t,
        tv_usec: ((timeout_ms % 1000) * 1000) as libc::suseconds_t,
    };
    let mut times: Vec<u64> = Vec::with_capacity(count as usize);
    let (mut eperm, mut succeeded, mut timed_out, mut other) = (0u32, 0u32, 0u32, 0i32);
    for _ in 0..count {
        let t = Instant::now();
        // SAFETY: plain socket syscalls on a descriptor we own.
        let (r, e) = unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &tv);
            let r = libc::connect(
                fd,
                (&sa as *const libc::sockaddr_in).cast(),
                SOCKADDR_IN_LEN,
            );
            let e = errno();
            libc::close(fd);
            (r, e)
        };
        times.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
        match (r, e) {
            (0, _) => succeeded += 1,
            (_, libc::EPERM) => eperm += 1,
            (_, libc::EINPROGRESS | libc::EAGAIN | libc::ETIMEDOUT) => timed_out += 1,
            (_, e) => other = e,
        }
    }
    times.sort_unstable();
    json!({
        "pid": std::process::id(),
        "count": count,
        "eperm": eperm,
        "succeeded": succeeded,
        "timed_out": timed_out,
        "other_errno": other,
        "p50_ns": percentile(&times, 0.50),
        "p99_ns": percentile(&times, 0.99),
        "max_ns": times.last().copied().unwrap_or(0),
    })
}

/// Argument list for a worker of this binary.
pub fn worker_args(name: &str, netns: &str, cgroup: Option<&std::path::Path>) -> Vec<String> {
    let mut v = vec![
        "bench".to_owned(),
        name.to_owned(),
        "--netns".to_owned(),
        netns.to_owned(),
    ];
    if let Some(cg) = cgroup {
        v.push("--cgroup".to_owned());
        v.push(cg.display().to_string());
    }
    v
}

/// Runs one worker of this binary and returns its JSON line.
pub fn run_worker(args: &[String]) -> anyhow::Result<serde_json::Value> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running a bench worker")?;
    super::sys::check_interrupted()?;
    if !out.status.success() {
        bail!(
            "bench worker {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).with_context(|| format!("worker output {text:?}"))
}
