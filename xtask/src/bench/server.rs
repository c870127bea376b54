//! The servers the load workers talk to: accept-and-close, echo, a UDP sink, a bulk source
//! ([`super::bulk`]) and a DNS
//! responder ([`super::dns`]), in the bench's
//! network namespace, until stdin reaches EOF.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket},
};

use anyhow::{Context as _, bail};

use super::load::{SOCKADDR_IN_LEN, enter_netns, setsockopt, sockaddr};

/// The servers. Each runs in a thread; the process exits when its stdin reaches EOF (the bench
/// closed it or died).
pub(super) fn serve(
    netns: &str,
    accept: SocketAddrV4,
    echo: SocketAddrV4,
    udp: SocketAddrV4,
    dns: SocketAddrV4,
) -> anyhow::Result<()> {
    enter_netns(netns)?;
    let resolver = UdpSocket::bind(dns).with_context(|| format!("binding {dns}"))?;
    std::thread::spawn(move || super::dns::respond(resolver));
    let acceptor = listen(accept)?;
    let echoer = TcpListener::bind(echo).with_context(|| format!("listening on {echo}"))?;
    let sink = UdpSocket::bind(udp).with_context(|| format!("binding {udp}"))?;
    let bulk = SocketAddrV4::new(*accept.ip(), super::bulk::BULK_PORT);
    let bulk = TcpListener::bind(bulk).with_context(|| format!("listening on {bulk}"))?;
    std::thread::spawn(move || super::bulk::serve(bulk));
    std::thread::spawn(move || {
        loop {
            // SAFETY: accept on our listening socket; the accepted descriptor is closed at once.
            let fd = unsafe {
                libc::accept4(
                    acceptor,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if fd >= 0 {
                // SAFETY: we own `fd`.
                unsafe { libc::close(fd) };
            }
        }
    });
    std::thread::spawn(move || {
        for conn in echoer.incoming().flatten() {
            std::thread::spawn(move || echo_conn(conn));
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while sink.recv(&mut buf).is_ok() {}
    });
    println!("ready");
    std::io::stdout().flush()?;
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    std::process::exit(0);
}

fn echo_conn(mut c: TcpStream) {
    let _ = c.set_nodelay(true);
    let mut buf = [0u8; 4096];
    while let Ok(n) = c.read(&mut buf) {
        if n == 0 || c.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// A listening TCP socket with a deep backlog (the accept loop must never make a client wait
/// for a SYN retransmission).
fn listen(addr: SocketAddrV4) -> anyhow::Result<i32> {
    let sa = sockaddr(addr);
    let one: libc::c_int = 1;
    // SAFETY: plain socket syscalls on a descriptor we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, &one);
        if libc::bind(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            SOCKADDR_IN_LEN,
        ) != 0
            || libc::listen(fd, 65_535) != 0
        {
            bail!("listening on {addr}: {}", std::io::Error::last_os_error());
        }
        Ok(fd)
    }
}
