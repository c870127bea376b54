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

#[path = "egress-probe/dns.rs"]
mod dns;
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
    /// Receive UDP on these addresses (bound before joining the cgroup); the outcome reports
    /// how many datagrams arrived (`udp_received`) within `settle_ms` after the action.
    #[arg(long)]
    listen_udp: Vec<SocketAddr>,
    /// How long to wait for datagrams and connections to arrive after the action.
    #[arg(long, default_value_t = 300)]
    settle_ms: u64,
    /// After entering the namespace, use `/etc/netns/NAME/resolv.conf` as `/etc/resolv.conf`
    /// (a private mount namespace, as `ip netns exec` does).
    #[arg(long, requires = "netns")]
    netns_resolv: bool,
    /// Join this cgroup (write our pid to its cgroup.procs) before acting.
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// Take this task name (`prctl(PR_SET_NAME)`) after starting, before acting.
    #[arg(long)]
    comm: Option<String>,
    /// Act as this user and group id (after entering the namespace, listening and joining the
    /// cgroup), without supplementary groups: an unprivileged client.
    #[arg(long)]
    uid: Option<u32>,
    /// Sleep this long (after joining) before acting.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Then write `FILE.made` and wait until FILE exists before acting.
    #[arg(long, value_name = "FILE")]
    go_file: Option<std::path::PathBuf>,
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
        /// First `connect()` the socket to this address (whatever the outcome), then send.
        #[arg(long)]
        connect_first: Option<SocketAddr>,
    },
    /// UDP connect, then send.
    UdpConnected { addr: SocketAddr },
    /// Raw ICMP echo (IPv4), `count` requests from one socket, waiting 500 ms for a reply:
    /// bypasses the sock_addr hooks.
    RawPing {
        addr: std::net::Ipv4Addr,
        #[arg(long, default_value_t = 1)]
        count: u16,
        /// Wait this long between making the socket and sending.
        #[arg(long, default_value_t = 0)]
        wait_ms: u64,
        /// Then: write `FILE.made`, and wait until FILE exists before sending.
        #[arg(long, value_name = "FILE")]
        go_file: Option<std::path::PathBuf>,
    },
    /// UDP sendto `addr` from a socket whose `IP_OPTIONS` hold, after a NOP, a source route
    /// through `hops` (comma separated, the first is the next hop): `--kind lsrr` (loose),
    /// `ssrr` (strict), or `rr` (record route with room for as many addresses: no routing).
    UdpOpts {
        addr: SocketAddr,
        #[arg(long, value_delimiter = ',')]
        hops: Vec<std::net::Ipv4Addr>,
        #[arg(long)]
        kind: String,
    },
    /// One hand-built IPv6 packet (ICMPv6 echo) on a raw socket with the header included:
    /// `plain`, with a routing header that still has a segment to visit (`routing`), with a
    /// hop-by-hop header longer than the packet (`truncated`), with N destination-options
    /// headers (`dest-opts:N`), or with N of them followed by a routing header with a segment
    /// to visit (`dest-opts-routing:N`).
    Raw6 {
        src: std::net::Ipv6Addr,
        dst: std::net::Ipv6Addr,
        #[arg(long)]
        kind: String,
    },
    /// `count` plain IPv6 packets (ICMPv6 echo) to `dst`, each from a raw socket of its own.
    Raw6Spray {
        src: std::net::Ipv6Addr,
        dst: std::net::Ipv6Addr,
        #[arg(long)]
        count: u16,
    },
    /// One hand-built IPv4 packet (ICMP echo) on a raw socket with the header included, whose
    /// header carries `options` (hex, a multiple of 4 bytes, at most 40).
    Raw4 {
        src: std::net::Ipv4Addr,
        dst: std::net::Ipv4Addr,
        #[arg(long, default_value = "")]
        options: String,
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
        #[arg(long, default_value_t = 0)]
        wait_ms: u64,
        /// Then: write `FILE.made`, and wait until FILE exists before connecting.
        #[arg(long, value_name = "FILE")]
        go_file: Option<std::path::PathBuf>,
    },
    /// Resolve `name` with getaddrinfo, then TCP connect to the first address (`--all`: to
    /// every address); `addrs` lists what was resolved, `addr` the first.
    Resolve {
        name: String,
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// 4 or 6 to ask for one family only; 0 for both.
        #[arg(long, default_value_t = 0)]
        family: u8,
        #[arg(long)]
        all: bool,
    },
    /// Resolve `name`, connect to the first address and print the outcome; then for each line
    /// on stdin send 1000 bytes and print the outcome once the `--listen` side has them all.
    ResolveHold {
        name: String,
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// Ask the resolver at `server` for the A records of `name` over UDP (no getaddrinfo), then
    /// TCP connect to the first address.
    Ask {
        server: SocketAddr,
        name: String,
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// A fake DNS server on `server` (and one on port 53 of the next address, both bound
    /// before joining the cgroup) answers a query for `name` sent from inside the cgroup with
    /// an answer of `--kind` binding `addr` (`good`, `unsolicited`, `wrong-server`,
    /// `wrong-port`, `late`, `wrong-id`, `not-response`, `two-questions`,
    /// `compressed-question`, `truncated`); then TCP connect to `addr`.
    DnsExchange {
        server: std::net::SocketAddrV4,
        name: String,
        addr: std::net::Ipv4Addr,
        #[arg(long)]
        kind: String,
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Bind the fake servers after joining the cgroup: the target itself answers.
        #[arg(long)]
        server_in_cgroup: bool,
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
    /// Datagrams the `--listen-udp` sockets received.
    udp_received: u64,
    /// Connections the `--listen` listeners accepted.
    tcp_accepted: u64,
    /// Bytes the `--listen` listeners received.
    bytes_received: u64,
    /// Bytes sent on a held connection.
    bytes_sent: u64,
    /// Addresses a name resolved to, in order.
    addrs: Vec<String>,
    /// The address connected to.
    addr: Option<String>,
    /// Addresses whose connect failed (`--all`).
    failed: Vec<String>,
    /// Whether the DNS answer reached the process.
    answer_received: Option<bool>,
}

static TCP_ACCEPTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static TCP_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static UDP_RECEIVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(ns) = &args.netns {
        let f = File::open(format!("/run/netns/{ns}")).with_context(|| format!("netns {ns}"))?;
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering netns {ns}"))?;
        if args.netns_resolv {
            use_netns_resolv(ns)?;
        }
    }
    let mut listeners = Vec::new();
    for addr in &args.listen {
        let l = TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?;
        listeners.push(l);
    }
    for l in listeners {
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { continue };
                TCP_ACCEPTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = std::io::Read::read(&mut conn, &mut buf) {
                        if n == 0 {
                            break;
                        }
                        TCP_BYTES.fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
        });
    }
    for addr in &args.listen_udp {
        let s = UdpSocket::bind(addr).with_context(|| format!("UDP on {addr}"))?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while s.recv_from(&mut buf).is_ok() {
                UDP_RECEIVED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
    }
    // A fake DNS server is bound before joining the cgroup: it stays outside (unless
    // `--server-in-cgroup`: then it is the target's own socket).
    let mut fake_server = match &args.action {
        Action::DnsExchange {
            server,
            server_in_cgroup: false,
            ..
        } => Some(dns::fake_servers(*server)?),
        _ => None,
    };
    if let Some(cg) = &args.cgroup {
        std::fs::write(cg.join("cgroup.procs"), format!("{}\n", std::process::id()))
            .with_context(|| format!("joining cgroup {}", cg.display()))?;
    }
    if let Action::DnsExchange {
        server,
        server_in_cgroup: true,
        ..
    } = &args.action
    {
        fake_server = Some(dns::fake_servers(*server)?);
    }
    if let Some(comm) = &args.comm {
        let c = std::ffi::CString::new(comm.as_str()).context("--comm")?;
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        if unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error()).context("prctl(PR_SET_NAME)");
        }
    }
    if let Some(uid) = args.uid {
        let id = nix::unistd::Uid::from_raw(uid);
        let gid = nix::unistd::Gid::from_raw(uid);
        nix::unistd::setgroups(&[]).context("setgroups")?;
        nix::unistd::setresgid(gid, gid, gid).context("setresgid")?;
        nix::unistd::setresuid(id, id, id).context("setresuid")?;
    }
    wait_to_go(args.delay_ms, args.go_file.as_deref())?;
    let mut out = act(&args.action, fake_server.as_ref());
    if !args.listen.is_empty() || !args.listen_udp.is_empty() {
        std::thread::sleep(Duration::from_millis(args.settle_ms));
    }
    out.tcp_accepted = TCP_ACCEPTED.load(std::sync::atomic::Ordering::SeqCst);
    out.udp_received = UDP_RECEIVED.load(std::sync::atomic::Ordering::SeqCst);
    out.bytes_received = TCP_BYTES.load(std::sync::atomic::Ordering::SeqCst);
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

/// Bind-mounts `/etc/netns/NS/resolv.conf` over `/etc/resolv.conf` in a private mount
/// namespace, so getaddrinfo asks the namespace's resolver.
fn use_netns_resolv(ns: &str) -> anyhow::Result<()> {
    use nix::mount::{MsFlags, mount};
    let conf = PathBuf::from(format!("/etc/netns/{ns}/resolv.conf"));
    anyhow::ensure!(conf.is_file(), "{} is missing", conf.display());
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS)")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .context("making / a slave mount")?;
    mount(
        Some(&conf),
        "/etc/resolv.conf",
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("bind-mounting {}", conf.display()))?;
    Ok(())
}

fn act(action: &Action, fake_server: Option<&[UdpSocket; 2]>) -> Outcome {
    let started = Instant::now();
    match action {
        Action::Resolve {
            name,
            port,
            family,
            all,
        } => match dns::getaddrinfo(name, *port, *family) {
            Ok(addrs) => dns::connect_resolved(addrs, *all),
            Err(e) => result(started, Err(e)),
        },
        Action::ResolveHold { name, port } => dns::resolve_hold(name, *port),
        Action::Ask { server, name, port } => dns::ask(*server, name, *port),
        Action::DnsExchange {
            name,
            addr,
            kind,
            port,
            ..
        } => match fake_server {
            Some(s) => dns::exchange(s, name, *addr, kind, *port),
            None => result(started, Err(std::io::Error::other("no fake server"))),
        },
        Action::Tcp { addr } => result(started, tcp(addr)),
        Action::Udp {
            addr,
            count,
            connect_first,
        } => {
            let r = (|| {
                let bind: SocketAddr = if addr.is_ipv4() {
                    "0.0.0.0:0".parse().map_err(std::io::Error::other)?
                } else {
                    "[::]:0".parse().map_err(std::io::Error::other)?
                };
                let s = UdpSocket::bind(bind)?;
                if let Some(first) = connect_first {
                    // A refused connect leaves the socket unconnected.
                    let _ = s.connect(first);
                }
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
        Action::RawPing {
            addr,
            count,
            wait_ms,
            go_file,
        } => result(
            started,
            raw_ping(*addr, *count, *wait_ms, go_file.as_deref()),
        ),
        Action::UdpOpts { addr, hops, kind } => result(started, udp_opts(*addr, hops, kind)),
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
        Action::TcpLate {
            addr,
            wait_ms,
            go_file,
        } => tcp_late(addr, *wait_ms, go_file.as_deref()),
        Action::Raw6 { src, dst, kind } => result(started, raw6(*src, *dst, kind)),
        Action::Raw4 { src, dst, options } => result(started, raw4(*src, *dst, options)),
        Action::Raw6Spray { src, dst, count } => {
            let mut out = Outcome {
                pid: std::process::id(),
                ok: true,
                ..Outcome::default()
            };
            for _ in 0..*count {
                out.attempts += 1;
                match raw6(*src, *dst, "plain") {
                    Ok(()) => out.successes += 1,
                    Err(e) => {
                        out.errno.get_or_insert(e.raw_os_error().unwrap_or(0));
                    }
                }
            }
            out.elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            out
        }
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

fn tcp_late(addr: &SocketAddr, wait_ms: u64, go_file: Option<&std::path::Path>) -> Outcome {
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
    if let Err(e) = wait_to_go(wait_ms, go_file) {
        return result(Instant::now(), Err(e));
    }
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
                    ..Outcome::default()
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

/// Sends `count` ICMP echo requests on a raw socket (made `wait_ms` before the first) and
/// waits 500 ms for a reply.
fn raw_ping(
    addr: std::net::Ipv4Addr,
    count: u16,
    wait_ms: u64,
    go_file: Option<&std::path::Path>,
) -> std::io::Result<()> {
    // SAFETY: plain socket syscalls on a descriptor we own; buffers outlive the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let close = |e: std::io::Error| {
            libc::close(fd);
            e
        };
        wait_to_go(wait_ms, go_file).map_err(close)?;
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
        let mut sent = 0;
        let mut first_err = None;
        for _ in 0..count.max(1) {
            let n = libc::sendto(
                fd,
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            );
            if n < 0 {
                first_err.get_or_insert_with(std::io::Error::last_os_error);
            } else {
                sent += 1;
            }
        }
        if sent == 0 {
            return Err(close(
                first_err.unwrap_or_else(std::io::Error::last_os_error),
            ));
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
        other => {
            let (name, n) = other
                .split_once(':')
                .and_then(|(name, n)| Some((name, n.parse::<usize>().ok()?)))
                .ok_or_else(|| std::io::Error::other(format!("unknown kind {other}")))?;
            let routing = match name {
                "dest-opts" => false,
                "dest-opts-routing" => true,
                _ => return Err(std::io::Error::other(format!("unknown kind {other}"))),
            };
            // Each destination-options header: next header, length 0 (8 bytes), a PadN option
            // of 4 bytes of padding.
            let mut h = Vec::new();
            for i in 0..n {
                let next = if i + 1 < n {
                    60
                } else if routing {
                    43
                } else {
                    58
                };
                h.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
            }
            if routing {
                h.extend_from_slice(&[58, 2, 4, 1, 0, 0, 0, 0]);
                h.extend_from_slice(&dst.octets());
            }
            let first = if n > 0 {
                60
            } else if routing {
                43
            } else {
                58
            };
            (first, h)
        }
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
        send_once(fd, &pkt, &sa)
    }
}

/// UDP sendto `addr` from a socket with `IP_OPTIONS` (see `Action::UdpOpts`).
fn udp_opts(addr: SocketAddr, hops: &[std::net::Ipv4Addr], kind: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let s = UdpSocket::bind("0.0.0.0:0")?;
    let (code, record) = match kind {
        "lsrr" => (0x83, false),
        "ssrr" => (0x89, false),
        "rr" => (0x07, true),
        other => return Err(std::io::Error::other(format!("unknown kind {other}"))),
    };
    // type, length, pointer (4: the first address), the hops (empty slots for a record
    // route); after a leading NOP, padded with end-of-list bytes to a multiple of 4.
    let mut opt = vec![
        code,
        u8::try_from(3 + 4 * hops.len()).map_err(std::io::Error::other)?,
        4,
    ];
    for h in hops {
        opt.extend_from_slice(&if record { [0; 4] } else { h.octets() });
    }
    opt.insert(0, 1);
    while !opt.len().is_multiple_of(4) {
        opt.push(0);
    }
    // SAFETY: setsockopt on a socket we own with a buffer that outlives the call.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_OPTIONS,
            opt.as_ptr().cast(),
            u32::try_from(opt.len()).map_err(std::io::Error::other)?,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    s.send_to(b"probe", addr).map(drop)
}

/// Sends one hand-built IPv4 packet with `options` (hex) on an `IPPROTO_RAW` socket.
fn raw4(src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr, options: &str) -> std::io::Result<()> {
    let bad = |what: &str| std::io::Error::other(format!("options {options:?}: {what}"));
    if !options.len().is_multiple_of(2) {
        return Err(bad("odd number of hex digits"));
    }
    let opts = (0..options.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&options[i..i + 2], 16).map_err(|_| bad("not hex")))
        .collect::<std::io::Result<Vec<u8>>>()?;
    if !opts.len().is_multiple_of(4) || opts.len() > 40 {
        return Err(bad("not a multiple of 4 bytes up to 40"));
    }
    let ihl = 20 + opts.len();
    let mut icmp = [8u8, 0, 0, 0, 0, 7, 0, 1];
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let total = u16::try_from(ihl + icmp.len()).map_err(std::io::Error::other)?;
    let mut pkt = vec![
        0x40 | u8::try_from(ihl / 4).map_err(std::io::Error::other)?,
        0,
    ];
    pkt.extend_from_slice(&total.to_be_bytes());
    pkt.extend_from_slice(&[0, 0, 0, 0, 64, 1, 0, 0]);
    pkt.extend_from_slice(&src.octets());
    pkt.extend_from_slice(&dst.octets());
    pkt.extend_from_slice(&opts);
    pkt.extend_from_slice(&icmp);
    // SAFETY: plain socket syscalls on a descriptor we own; buffers outlive the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(dst.octets()),
            },
            sin_zero: [0; 8],
        };
        send_once(fd, &pkt, &sa)
    }
}

/// Sends `pkt` to `sa` on `fd` once, then closes `fd`.
///
/// # Safety
/// `fd` is a socket this process owns and `T` the `sockaddr_*` of its family.
unsafe fn send_once<T>(fd: libc::c_int, pkt: &[u8], sa: &T) -> std::io::Result<()> {
    // SAFETY: the buffers outlive the call; the caller vouches for `fd` and `T`.
    let n = unsafe {
        libc::sendto(
            fd,
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (sa as *const T).cast(),
            std::mem::size_of::<T>() as u32,
        )
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: `fd` is owned by the caller and not used after this.
    unsafe { libc::close(fd) };
    if n < 0 { Err(err) } else { Ok(()) }
}

/// Waits `wait_ms`; then, with a go file, says the socket is made (`FILE.made`) and waits (at
/// most 60 s) until the test creates FILE: the test decides when, not a timer.
fn wait_to_go(wait_ms: u64, go_file: Option<&std::path::Path>) -> std::io::Result<()> {
    std::thread::sleep(Duration::from_millis(wait_ms));
    let Some(go) = go_file else {
        return Ok(());
    };
    let mut made = go.as_os_str().to_owned();
    made.push(".made");
    std::fs::write(&made, b"")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !go.exists() {
        if Instant::now() > deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{} did not appear within 60 s", go.display()),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
