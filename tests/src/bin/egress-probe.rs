//! A client for the integration tests: optionally enters a network namespace, opens listeners
//! (before joining the cgroup, so the server side stays outside it), joins a cgroup, performs one
//! network action and prints the outcome as one JSON line.

use std::{
    fs::File,
    io::Write as _,
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsFd as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use serde::Serialize;

/// Test client.
#[derive(Parser)]
struct Args {
    /// Enter this network namespace (`ip netns` name) first.
    #[arg(long)]
    netns: Option<String>,
    /// Listen on these TCP addresses before joining the cgroup (accepting in the background).
    #[arg(long)]
    listen: Vec<SocketAddr>,
    /// Join this cgroup (write our pid to its cgroup.procs) before acting.
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// Take this task name (`prctl(PR_SET_NAME)`) after starting, before acting.
    #[arg(long)]
    comm: Option<String>,
    /// Sleep this long (after joining) before acting.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// The action.
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand, Clone)]
enum Action {
    /// TCP connect (2 s timeout).
    Tcp { addr: SocketAddr },
    /// UDP sendto, `count` datagrams from one socket.
    Udp {
        addr: SocketAddr,
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
    /// UDP connect, then send.
    UdpConnected { addr: SocketAddr },
    /// Raw ICMP echo (IPv4), waiting 500 ms for the reply: bypasses the sock_addr hooks.
    RawPing {
        addr: std::net::Ipv4Addr,
        /// Wait this long between making the socket and sending.
        #[arg(long, default_value_t = 0)]
        wait_ms: u64,
    },
    /// One hand-built IPv6 packet (ICMPv6 echo) on a raw socket with the header included:
    /// `plain`, with a routing header that still has a segment to visit (`routing`), or with a
    /// hop-by-hop header longer than the packet (`truncated`).
    Raw6 {
        src: std::net::Ipv6Addr,
        dst: std::net::Ipv6Addr,
        #[arg(long)]
        kind: String,
    },
    /// Fork; the child does a TCP connect and reports.
    ForkTcp { addr: SocketAddr },
    /// One datagram to each of `ports` consecutive ports from one socket: one decision each.
    UdpSpray {
        addr: SocketAddr,
        #[arg(long)]
        ports: u16,
    },
    /// Make a TCP socket now, wait `wait_ms`, then connect it (2 s timeout): a socket older
    /// than whatever happened meanwhile.
    TcpLate {
        addr: SocketAddr,
        #[arg(long)]
        wait_ms: u64,
    },
    /// TCP connects in a loop for `duration_ms`, reporting how many succeeded.
    TcpLoop {
        addr: SocketAddr,
        #[arg(long)]
        duration_ms: u64,
    },
}

/// The outcome printed as JSON.
#[derive(Serialize, Default)]
struct Outcome {
    ok: bool,
    errno: Option<i32>,
    error: Option<String>,
    elapsed_us: u64,
    pid: u32,
    attempts: u64,
    successes: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(ns) = &args.netns {
        let f = File::open(format!("/run/netns/{ns}")).with_context(|| format!("netns {ns}"))?;
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering netns {ns}"))?;
    }
    let mut listeners = Vec::new();
    for addr in &args.listen {
        let l = TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?;
        listeners.push(l);
    }
    for l in listeners {
        std::thread::spawn(move || {
            for conn in l.incoming() {
                drop(conn);
            }
        });
    }
    if let Some(cg) = &args.cgroup {
        std::fs::write(cg.join("cgroup.procs"), format!("{}\n", std::process::id()))
            .with_context(|| format!("joining cgroup {}", cg.display()))?;
    }
    if let Some(comm) = &args.comm {
        let c = std::ffi::CString::new(comm.as_str()).context("--comm")?;
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        if unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error()).context("prctl(PR_SET_NAME)");
        }
    }
    if args.delay_ms > 0 {
        std::thread::sleep(Duration::from_millis(args.delay_ms));
    }
    let out = act(&args.action);
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &out)?;
    writeln!(stdout)?;
    Ok(())
}

fn result(started: Instant, r: std::io::Result<()>) -> Outcome {
    let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let pid = std::process::id();
    match r {
        Ok(()) => Outcome {
            ok: true,
            elapsed_us,
            pid,
            attempts: 1,
            successes: 1,
            ..Outcome::default()
        },
        Err(e) => Outcome {
            ok: false,
            errno: e.raw_os_error(),
            error: Some(e.to_string()),
            elapsed_us,
            pid,
            attempts: 1,
            ..Outcome::default()
        },
    }
}

fn act(action: &Action) -> Outcome {
    let started = Instant::now();
    match action {
        Action::Tcp { addr } => result(started, tcp(addr)),
        Action::Udp { addr, count } => {
            let r = (|| {
                let bind: SocketAddr = if addr.is_ipv4() {
                    "0.0.0.0:0".parse().map_err(std::io::Error::other)?
                } else {
                    "[::]:0".parse().map_err(std::io::Error::other)?
                };
                let s = UdpSocket::bind(bind)?;
                for _ in 0..*count {
                    s.send_to(b"probe", addr)?;
                }
                Ok(())
            })();
            result(started, r)
        }
        Action::UdpConnected { addr } => {
            let r = (|| {
                let bind = if addr.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                let s = UdpSocket::bind(bind)?;
                s.connect(addr)?;
                s.send(b"probe")?;
                Ok(())
            })();
            result(started, r)
        }
        Action::RawPing { addr, wait_ms } => result(started, raw_ping(*addr, *wait_ms)),
        Action::UdpSpray { addr, ports } => {
            let mut out = Outcome {
                pid: std::process::id(),
                ok: true,
                ..Outcome::default()
            };
            let bind = if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            match UdpSocket::bind(bind) {
                Ok(s) => {
                    for i in 0..*ports {
                        let mut dst = *addr;
                        dst.set_port(addr.port().wrapping_add(i));
                        out.attempts += 1;
                        if s.send_to(b"x", dst).is_ok() {
                            out.successes += 1;
                        }
                    }
                }
                Err(e) => {
                    out.ok = false;
                    out.errno = e.raw_os_error();
                    out.error = Some(e.to_string());
                }
            }
            out.elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            out
        }
        Action::ForkTcp { addr } => fork_tcp(addr),
        Action::TcpLate { addr, wait_ms } => tcp_late(addr, *wait_ms),
        Action::Raw6 { src, dst, kind } => result(started, raw6(*src, *dst, kind)),
        Action::TcpLoop { addr, duration_ms } => {
            let mut out = Outcome {
                pid: std::process::id(),
                ok: true,
                ..Outcome::default()
            };
            let end = started + Duration::from_millis(*duration_ms);
            while Instant::now() < end {
                out.attempts += 1;
                match tcp(addr) {
                    Ok(()) => out.successes += 1,
                    Err(e) => {
                        if out.errno.is_none() {
                            out.errno = e.raw_os_error();
                            out.error = Some(e.to_string());
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            out.elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            out
        }
    }
}

fn tcp(addr: &SocketAddr) -> std::io::Result<()> {
    TcpStream::connect_timeout(addr, Duration::from_secs(2)).map(drop)
}

fn tcp_late(addr: &SocketAddr, wait_ms: u64) -> Outcome {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket syscall; the descriptor is owned right away.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return result(Instant::now(), Err(std::io::Error::last_os_error()));
    }
    // SAFETY: a new descriptor nothing else owns.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    std::thread::sleep(Duration::from_millis(wait_ms));
    let started = Instant::now();
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a valid address of `len` bytes.
    let ret = unsafe {
        libc::connect(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    let r = if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    };
    result(started, r)
}

fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn fork_tcp(addr: &SocketAddr) -> Outcome {
    let (rd, wr) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => return result(Instant::now(), Err(e.into())),
    };
    // SAFETY: the child only connects, writes to the pipe and exits.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            drop(rd);
            let out = result(Instant::now(), tcp(addr));
            let mut f = File::from(wr);
            let _ = serde_json::to_writer(&mut f, &out);
            drop(f);
            // SAFETY: exiting the forked child without running the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(wr);
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut File::from(rd), &mut s);
            let _ = nix::sys::wait::waitpid(child, None);
            serde_json::from_str::<serde_json::Value>(&s)
                .ok()
                .map(|v| Outcome {
                    ok: v["ok"].as_bool().unwrap_or(false),
                    errno: v["errno"].as_i64().and_then(|e| i32::try_from(e).ok()),
                    error: v["error"].as_str().map(str::to_owned),
                    elapsed_us: v["elapsed_us"].as_u64().unwrap_or(0),
                    pid: v["pid"]
                        .as_u64()
                        .and_then(|p| u32::try_from(p).ok())
                        .unwrap_or(0),
                    attempts: 1,
                    successes: u64::from(v["ok"].as_bool().unwrap_or(false)),
                })
                .unwrap_or_else(|| {
                    result(
                        Instant::now(),
                        Err(std::io::Error::other("child said nothing")),
                    )
                })
        }
        Err(e) => result(Instant::now(), Err(e.into())),
    }
}

/// Sends one ICMP echo request on a raw socket and waits 500 ms for the reply.
fn raw_ping(addr: std::net::Ipv4Addr, wait_ms: u64) -> std::io::Result<()> {
    // SAFETY: plain socket syscalls on a descriptor we own; buffers outlive the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        std::thread::sleep(Duration::from_millis(wait_ms));
        let close = |e: std::io::Error| {
            libc::close(fd);
            e
        };
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 500_000,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        let id: u16 = (std::process::id() & 0xffff) as u16;
        let mut pkt = [
            8u8,
            0,
            0,
            0,
            (id >> 8) as u8,
            id as u8,
            0,
            1,
            b'o',
            b'e',
            b'g',
            b'r',
        ];
        let sum = checksum(&pkt);
        pkt[2] = (sum >> 8) as u8;
        pkt[3] = sum as u8;
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(addr.octets()),
            },
            sin_zero: [0; 8],
        };
        let n = libc::sendto(
            fd,
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        if n < 0 {
            return Err(close(std::io::Error::last_os_error()));
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut buf = [0u8; 1500];
        while Instant::now() < deadline {
            let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
            if n < 0 {
                return Err(close(std::io::Error::last_os_error()));
            }
            let n = n as usize;
            if n < 20 {
                continue;
            }
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            // An echo reply (type 0) with our id from the address we pinged.
            if n >= ihl + 8
                && buf[ihl] == 0
                && buf[12..16] == addr.octets()
                && u16::from_be_bytes([buf[ihl + 4], buf[ihl + 5]]) == id
            {
                libc::close(fd);
                return Ok(());
            }
        }
        Err(close(std::io::Error::from_raw_os_error(libc::ETIMEDOUT)))
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends one hand-built IPv6 packet on an `IPPROTO_RAW` socket (the header is included).
fn raw6(src: std::net::Ipv6Addr, dst: std::net::Ipv6Addr, kind: &str) -> std::io::Result<()> {
    const ICMP6_ECHO: [u8; 8] = [128, 0, 0, 0, 0, 1, 0, 1];
    let (next, ext): (u8, Vec<u8>) = match kind {
        "plain" => (58, Vec::new()),
        // Segment routing header: next 58, length 2 (24 bytes), type 4, 1 segment left, then
        // the segment itself.
        "routing" => {
            let mut h = vec![58, 2, 4, 1, 0, 0, 0, 0];
            h.extend_from_slice(&dst.octets());
            (43, h)
        }
        // Hop-by-hop header claiming 8 * 201 bytes in an 8-byte header.
        "truncated" => (0, vec![58, 200, 1, 4, 0, 0, 0, 0]),
        other => return Err(std::io::Error::other(format!("unknown kind {other}"))),
    };
    let payload_len = ext.len() + ICMP6_ECHO.len();
    let mut pkt = vec![0x60, 0, 0, 0];
    pkt.extend_from_slice(
        &u16::try_from(payload_len)
            .map_err(std::io::Error::other)?
            .to_be_bytes(),
    );
    pkt.push(next);
    pkt.push(64);
    pkt.extend_from_slice(&src.octets());
    pkt.extend_from_slice(&dst.octets());
    pkt.extend_from_slice(&ext);
    pkt.extend_from_slice(&ICMP6_ECHO);
    // SAFETY: plain socket syscalls on a descriptor we own; buffers outlive the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_RAW);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
        sa.sin6_family = libc::AF_INET6 as u16;
        sa.sin6_addr.s6_addr = dst.octets();
        let n = libc::sendto(
            fd,
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&sa as *const libc::sockaddr_in6).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as u32,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if n < 0 { Err(err) } else { Ok(()) }
    }
}
