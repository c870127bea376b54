//! The probe's name actions: resolve with getaddrinfo and connect, ask a given resolver
//! itself, and exchange hand-built (forged or malformed) DNS messages with a fake server.

use std::{
    ffi::CString,
    io::{BufRead as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use super::{Outcome, TCP_BYTES, result, tcp};

/// Resolves `name` with getaddrinfo (`family` 4, 6 or 0 for both), in resolver order.
pub fn getaddrinfo(name: &str, port: u16, family: u8) -> std::io::Result<Vec<SocketAddr>> {
    let c_name = CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: all-zero is a valid addrinfo hint.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = match family {
        4 => libc::AF_INET,
        6 => libc::AF_INET6,
        _ => libc::AF_UNSPEC,
    };
    hints.ai_socktype = libc::SOCK_STREAM;
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: valid C string, hints and out pointer.
    let rc = unsafe { libc::getaddrinfo(c_name.as_ptr(), std::ptr::null(), &hints, &mut res) };
    if rc != 0 {
        // SAFETY: gai_strerror returns a static string.
        let msg = unsafe { std::ffi::CStr::from_ptr(libc::gai_strerror(rc)) };
        return Err(std::io::Error::other(format!(
            "getaddrinfo {name}: {}",
            msg.to_string_lossy()
        )));
    }
    let mut out = Vec::new();
    let mut p = res;
    while !p.is_null() {
        // SAFETY: `p` walks the list getaddrinfo returned.
        let ai = unsafe { &*p };
        if ai.ai_family == libc::AF_INET {
            // SAFETY: an AF_INET entry holds a sockaddr_in.
            let sin = unsafe { &*ai.ai_addr.cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            out.push(SocketAddr::new(IpAddr::V4(ip), port));
        } else if ai.ai_family == libc::AF_INET6 {
            // SAFETY: an AF_INET6 entry holds a sockaddr_in6.
            let sin6 = unsafe { &*ai.ai_addr.cast::<libc::sockaddr_in6>() };
            out.push(SocketAddr::new(
                IpAddr::V6(sin6.sin6_addr.s6_addr.into()),
                port,
            ));
        }
        p = ai.ai_next;
    }
    // SAFETY: `res` came from getaddrinfo and is freed once.
    unsafe { libc::freeaddrinfo(res) };
    Ok(out)
}

/// Connects to the first of `addrs`, or to every one with `all`; fills the outcome (its
/// `elapsed_us` is the first connect's).
pub fn connect_resolved(addrs: Vec<SocketAddr>, all: bool) -> Outcome {
    let started = Instant::now();
    let mut out = match addrs.first() {
        None => result(started, Err(std::io::Error::other("no address"))),
        Some(first) => {
            let mut o = result(started, tcp(first));
            o.addr = Some(first.ip().to_string());
            o
        }
    };
    if all {
        out.attempts = 0;
        out.successes = 0;
        for a in &addrs {
            out.attempts += 1;
            match tcp(a) {
                Ok(()) => out.successes += 1,
                Err(e) => out.failed.push(format!("{}: {e}", a.ip())),
            }
        }
        out.ok = out.successes == out.attempts;
    }
    out.addrs = addrs.iter().map(|a| a.ip().to_string()).collect();
    out
}

/// Resolves, connects to the first address and reports; then, for each line on stdin, sends
/// 1000 bytes on the connection and reports once the listener has them (or after 3 s).
pub fn resolve_hold(name: &str, port: u16) -> Outcome {
    let started = Instant::now();
    let addrs = match getaddrinfo(name, port, 0) {
        Ok(a) => a,
        Err(e) => return result(started, Err(e)),
    };
    let Some(first) = addrs.first().copied() else {
        return result(started, Err(std::io::Error::other("no address")));
    };
    let mut out = match TcpStream::connect_timeout(&first, Duration::from_secs(2)) {
        Err(e) => return result(started, Err(e)),
        Ok(mut stream) => {
            let line = |o: &Outcome| {
                let mut stdout = std::io::stdout().lock();
                let _ = serde_json::to_writer(&mut stdout, o);
                let _ = writeln!(stdout);
                let _ = stdout.flush();
            };
            let mut o = result(started, Ok(()));
            o.addr = Some(first.ip().to_string());
            line(&o);
            for _ in std::io::stdin().lock().lines() {
                let sent = stream.write_all(&[b'x'; 1000]);
                o.bytes_sent += 1000;
                let deadline = Instant::now() + Duration::from_secs(3);
                while TCP_BYTES.load(Ordering::SeqCst) < o.bytes_sent && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                o.bytes_received = TCP_BYTES.load(Ordering::SeqCst);
                o.ok = sent.is_ok() && o.bytes_received == o.bytes_sent;
                o.error = sent.err().map(|e| e.to_string());
                line(&o);
            }
            o
        }
    };
    out.bytes_received = TCP_BYTES.load(Ordering::SeqCst);
    out
}

/// The wire form of a dotted name (labels taken byte for byte, unchecked).
fn wire_name(name: &str) -> Vec<u8> {
    let mut v = Vec::new();
    for label in name.split('.').filter(|l| !l.is_empty()) {
        v.push(u8::try_from(label.len()).unwrap_or(63));
        v.extend_from_slice(label.as_bytes());
    }
    v.push(0);
    v
}

fn header(id: u16, flags: u16, qd: u16, an: u16) -> Vec<u8> {
    let mut v = Vec::with_capacity(12);
    for x in [id, flags, qd, an, 0, 0] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v
}

/// A query for the A records of `name`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = header(id, 0x0100, 1, 0);
    m.extend(wire_name(name));
    m.extend_from_slice(&[0, 1, 0, 1]);
    m
}

/// An answer of kind `kind` to query `id` for `name`, binding `addr` with TTL 300:
/// `good` (and `unsolicited`, `wrong-server`, `wrong-port`, `late`: the same message, sent
/// without a query, from another server, to another port, or after the query window),
/// `wrong-id`, `not-response` (QR clear), `two-questions`, `compressed-question` (a question
/// name that is a pointer) or `truncated` (the A record's data cut short).
fn answer(kind: &str, id: u16, name: &str, addr: Ipv4Addr) -> std::io::Result<Vec<u8>> {
    let (id, flags, qd) = match kind {
        "good"
        | "unsolicited"
        | "wrong-server"
        | "wrong-port"
        | "late"
        | "compressed-question"
        | "truncated" => (id, 0x8180, 1),
        "wrong-id" => (id ^ 0x5a5a, 0x8180, 1),
        "not-response" => (id, 0x0180, 1),
        "two-questions" => (id, 0x8180, 2),
        other => {
            return Err(std::io::Error::other(format!(
                "unknown answer kind {other}"
            )));
        }
    };
    let mut m = header(id, flags, qd, 1);
    let question: Vec<u8> = if kind == "compressed-question" {
        vec![0xc0, 12]
    } else {
        wire_name(name)
    };
    for _ in 0..qd {
        m.extend_from_slice(&question);
        m.extend_from_slice(&[0, 1, 0, 1]);
    }
    // Owner: a pointer to the question name; type A, class IN, TTL 300, 4 bytes of data.
    m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4]);
    let octets = addr.octets();
    m.extend_from_slice(if kind == "truncated" {
        &octets[..2]
    } else {
        &octets
    });
    Ok(m)
}

/// The A addresses of an answer message (owner names skipped).
fn answer_addrs(m: &[u8]) -> Vec<Ipv4Addr> {
    let get = |i: usize| m.get(i).copied().unwrap_or(0);
    let u16_at = |i: usize| u16::from_be_bytes([get(i), get(i + 1)]);
    let skip_name = |mut i: usize| {
        while i < m.len() {
            let l = get(i);
            if l & 0xc0 == 0xc0 {
                return i + 2;
            }
            i += 1 + usize::from(l);
            if l == 0 {
                return i;
            }
        }
        i
    };
    let mut out = Vec::new();
    let mut i = skip_name(12) + 4;
    for _ in 0..u16_at(6) {
        i = skip_name(i);
        let (ty, rdlen) = (u16_at(i), usize::from(u16_at(i + 8)));
        i += 10;
        if ty == 1 && rdlen == 4 && i + 4 <= m.len() {
            out.push(Ipv4Addr::new(get(i), get(i + 1), get(i + 2), get(i + 3)));
        }
        i += rdlen;
    }
    out
}

/// Asks `server` itself for the A records of `name` over UDP, then connects to the first
/// address on `port`.
pub fn ask(server: SocketAddr, name: &str, port: u16) -> Outcome {
    let started = Instant::now();
    let r = (|| {
        let s = UdpSocket::bind(if server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        })?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.send_to(&query(0x4242, name), server)?;
        let mut buf = [0u8; 4096];
        let n = s.recv(&mut buf)?;
        Ok(answer_addrs(buf.get(..n).unwrap_or_default()))
    })();
    match r {
        Err(e) => result(started, Err(e)),
        Ok(addrs) => connect_resolved(
            addrs
                .into_iter()
                .map(|a| SocketAddr::new(IpAddr::V4(a), port))
                .collect(),
            false,
        ),
    }
}

/// The fake servers' sockets, bound to `server` and to port 53 of the next address, before
/// the probe joins its cgroup.
pub fn fake_servers(server: SocketAddrV4) -> anyhow::Result<[UdpSocket; 2]> {
    let next = Ipv4Addr::from(u32::from(*server.ip()).wrapping_add(1));
    Ok([
        fake_server(server)?,
        fake_server(SocketAddrV4::new(next, server.port()))?,
    ])
}

/// One fake server socket on `server` (with SO_REUSEADDR, so it may sit next to a real one).
fn fake_server(server: SocketAddrV4) -> anyhow::Result<UdpSocket> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    // SAFETY: plain socket syscall; the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    anyhow::ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: `one` is a c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    anyhow::ensure!(rc == 0, "SO_REUSEADDR: {}", std::io::Error::last_os_error());
    let (storage, len) = super::sockaddr(&SocketAddr::V4(server));
    // SAFETY: `storage` holds a valid address of `len` bytes.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    anyhow::ensure!(
        rc == 0,
        "binding the fake server to {server}: {}",
        std::io::Error::last_os_error()
    );
    Ok(UdpSocket::from(fd))
}

/// From inside the cgroup: sends a query for `name` to the first fake server (unless `kind` is
/// `unsolicited`), lets a fake server answer with a message of `kind` binding `addr`, reads
/// the answer, then connects to `addr:port`. `answer_received` says whether the answer reached
/// the process.
pub fn exchange(
    servers: &[UdpSocket; 2],
    name: &str,
    addr: Ipv4Addr,
    kind: &str,
    port: u16,
) -> Outcome {
    let started = Instant::now();
    let server = &servers[0];
    let r = (|| -> std::io::Result<bool> {
        let client = UdpSocket::bind("0.0.0.0:0")?;
        let other_client = UdpSocket::bind("0.0.0.0:0")?;
        for s in [&client, &other_client, server] {
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
        }
        let server_addr = server.local_addr()?;
        let (id, to) = if kind == "unsolicited" {
            let port = client.local_addr()?.port();
            (0x1234, SocketAddr::new(server_addr.ip(), port))
        } else {
            client.send_to(&query(0x1234, name), server_addr)?;
            let mut q = [0u8; 512];
            let (_, from) = server.recv_from(&mut q)?;
            (u16::from_be_bytes([q[0], q[1]]), from)
        };
        let (sender, to, receiver) = match kind {
            "wrong-server" => (&servers[1], to, &client),
            "wrong-port" => (
                server,
                SocketAddr::new(to.ip(), other_client.local_addr()?.port()),
                &other_client,
            ),
            _ => (server, to, &client),
        };
        if kind == "late" {
            std::thread::sleep(Duration::from_millis(6000));
        }
        sender.send_to(&answer(kind, id, name, addr)?, to)?;
        let mut buf = [0u8; 1024];
        Ok(receiver.recv(&mut buf).is_ok())
    })();
    match r {
        Err(e) => result(started, Err(e)),
        Ok(received) => {
            let mut out = connect_resolved(vec![SocketAddr::new(IpAddr::V4(addr), port)], false);
            out.answer_received = Some(received);
            out
        }
    }
}
