//! Parsers of the `/proc` files the audit reads: `net/tcp` and `net/tcp6`, the `socket:[N]`
//! links under `fd/`, `environ` and `status`.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

/// `st` of a listening socket in `/proc/net/tcp`.
const TCP_LISTEN: u8 = 0x0A;

/// One row of `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpRow {
    /// The local address and port.
    pub local: SocketAddr,
    /// The TCP state (`0A`: listening).
    pub state: u8,
    /// The socket's inode (0 for sockets without one, e.g. in TIME_WAIT).
    pub inode: u64,
}

impl TcpRow {
    /// Whether the socket listens.
    pub fn listening(&self) -> bool {
        self.state == TCP_LISTEN
    }
}

/// The rows of a `/proc/net/tcp` or `tcp6` text; the header and malformed lines are skipped.
pub fn parse_tcp(text: &str) -> Vec<TcpRow> {
    text.lines().skip(1).filter_map(parse_row).collect()
}

fn parse_row(line: &str) -> Option<TcpRow> {
    let mut cols = line.split_whitespace();
    let _slot = cols.next()?;
    let local = parse_addr(cols.next()?)?;
    let _remote = cols.next()?;
    let state = u8::from_str_radix(cols.next()?, 16).ok()?;
    // tx:rx queues, tr:when, retransmits, uid, timeout, then the inode.
    let inode = cols.nth(5)?.parse().ok()?;
    Some(TcpRow {
        local,
        state,
        inode,
    })
}

/// `ADDR:PORT` as the kernel prints it: the address as 32-bit words in hex, each in the
/// machine's byte order (one for IPv4, four for IPv6), the port in hex.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = addr.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The inode of a `/proc/PID/fd/N` link's target when it is a socket (`socket:[12345]`).
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The variables of `names` in a `/proc/PID/environ` text (NUL-separated `KEY=VALUE`); the
/// rest is not kept. A variable set twice counts as the first (what `getenv` returns).
pub fn environ(bytes: &[u8], names: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in bytes.split(|b| *b == 0) {
        let Some(eq) = entry.iter().position(|b| *b == b'=') else {
            continue;
        };
        let key = String::from_utf8_lossy(&entry[..eq]);
        if names.contains(&key.as_ref()) && !out.contains_key(key.as_ref()) {
            let value = String::from_utf8_lossy(&entry[eq + 1..]).into_owned();
            out.insert(key.into_owned(), value);
        }
    }
    out
}

/// The effective user id from a `/proc/PID/status` text (`Uid:` real, effective, saved, fs).
pub fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests;
