//! CIDR text parsing and normalisation.
//!
//! IPv4-mapped IPv6 networks (inside `::ffff:0:0/96`, i.e. prefix length 96 or more) are turned
//! into the IPv4 network they stand for: `::ffff:1.2.3.0/120` is `1.2.3.0/24`. The kernel
//! judges an IPv4-mapped destination as its IPv4 address, so this is the only place such a rule
//! can take effect.
//!
//! An IPv6 network shorter than /96 that covers the mapped range (`::/0`, `::/80`,
//! `::ffff:0:0/95`) keeps its IPv6 meaning and is **not** copied into IPv4: `deny ::/0` means
//! "all IPv6", not "everything". Its mapped part has no effect, because IPv4-mapped destinations
//! are judged by the IPv4 rules only.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Why a CIDR entry was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CidrError {
    /// Not an address or network; the text says why.
    Invalid(String),
    /// Valid syntax but bits set after the prefix.
    HostBits {
        /// The network with the host bits cleared, in the form written.
        network: IpNet,
        /// The single address.
        host: IpNet,
    },
}

/// Parses `text` as `ADDR/LEN` or a bare `ADDR` (a /32 or /128), rejects host bits, and returns
/// the normalised network (see [`canonical`]).
pub(crate) fn parse_cidr(text: &str) -> Result<IpNet, CidrError> {
    let (addr_text, len_text) = match text.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (text, None),
    };
    let addr: IpAddr = addr_text
        .parse()
        .map_err(|_| CidrError::Invalid(format!("{addr_text:?} is not an IPv4 or IPv6 address")))?;
    let max = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let len = match len_text {
        None => max,
        Some(len) => {
            if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
                return Err(CidrError::Invalid(format!(
                    "prefix length {len:?} is not a number"
                )));
            }
            match len.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => {
                    return Err(CidrError::Invalid(format!(
                        "prefix length {len} is longer than {max}"
                    )));
                }
            }
        }
    };
    let net = IpNet::new(addr, len)
        .map_err(|_| CidrError::Invalid(format!("prefix length {len} is longer than {max}")))?;
    if net.trunc() != net {
        let host =
            IpNet::new(addr, max).map_err(|_| CidrError::Invalid(format!("bad address {addr}")))?;
        return Err(CidrError::HostBits {
            network: net.trunc(),
            host,
        });
    }
    Ok(canonical(net))
}

/// Normalises a network: clears host bits and turns an IPv4-mapped IPv6 network of prefix
/// length 96 or more into its IPv4 network. Shorter IPv6 networks stay IPv6 (see the module
/// documentation).
pub(crate) fn canonical(net: IpNet) -> IpNet {
    match net.trunc() {
        IpNet::V6(v6) => match v4_of_mapped(v6) {
            Some(v4) => IpNet::V4(v4),
            None => IpNet::V6(v6),
        },
        v4 => v4,
    }
}

/// The IPv4 network an IPv4-mapped IPv6 network (`::ffff:a.b.c.d/96+n`) stands for.
fn v4_of_mapped(net: Ipv6Net) -> Option<Ipv4Net> {
    let len = net.prefix_len().checked_sub(96)?;
    let v4 = net.network().to_ipv4_mapped()?;
    Ipv4Net::new(v4, len).ok()
}

#[cfg(test)]
mod tests;
