//! IPv4 addresses carried inside IPv6 destinations.
//!
//! Traffic to these IPv6 addresses ends at an IPv4 host (through the socket layer, a NAT64
//! translator, a 6to4 relay or an IPv4-compatible tunnel), so the policy judges them as that
//! IPv4 address. One function, [`embedded_ipv4`], used by the kernel programs and by userspace
//! (`policy check --explain`), so both read an address the same way.
//!
//! Forms recognised, in the order they are checked:
//!
//! | form | prefix | IPv4 address in |
//! |---|---|---|
//! | [`V4_FORM_MAPPED`] | `::ffff:0:0/96` | the last 32 bits |
//! | [`V4_FORM_COMPATIBLE`] | `::/96`, except `::/127` (`::` and `::1`) | the last 32 bits |
//! | [`V4_FORM_TRANSLATED`] | `::ffff:0:0:0/96` (RFC 2765 SIIT) | the last 32 bits |
//! | [`V4_FORM_NAT64`] | `64:ff9b::/96` (RFC 6052 well-known prefix) | the last 32 bits |
//! | [`V4_FORM_NAT64_LOCAL`] | `64:ff9b:1::/48` (RFC 8215 local-use prefix) | the last 32 bits |
//! | [`V4_FORM_6TO4`] | `2002::/16` (RFC 3056) | bits 16..48 |
//!
//! For `64:ff9b:1::/48` the translator's prefix length is the operator's choice (RFC 6052
//! allows /48, /56, /64 and /96 inside it); the /96 position is the one deployed, and the one
//! judged here. A translator configured with a shorter prefix inside `64:ff9b:1::/48`, or with a
//! network-specific prefix of its own, is not recognised: list such prefixes in the policy.

/// Not an IPv4 address in IPv6 form.
pub const V4_FORM_NONE: u32 = 0;
/// `::ffff:a.b.c.d`, IPv4-mapped (an IPv6 socket talking IPv4).
pub const V4_FORM_MAPPED: u32 = 1;
/// `64:ff9b::a.b.c.d`, NAT64 well-known prefix.
pub const V4_FORM_NAT64: u32 = 2;
/// `64:ff9b:1:…:a.b.c.d`, NAT64 local-use prefix, IPv4 at the /96 position.
pub const V4_FORM_NAT64_LOCAL: u32 = 3;
/// `2002:aabb:ccdd::/48`, 6to4: the IPv4 address of the relay/host is `aa.bb.cc.dd`.
pub const V4_FORM_6TO4: u32 = 4;
/// `::a.b.c.d`, IPv4-compatible (deprecated, still routed by automatic tunnels).
pub const V4_FORM_COMPATIBLE: u32 = 5;
/// `::ffff:0:a.b.c.d`, IPv4-translated (stateless IP/ICMP translation).
pub const V4_FORM_TRANSLATED: u32 = 6;

/// The IPv4 address an IPv6 destination (network byte order) stands for, and its form
/// (`V4_FORM_*`), or `None` for an address that is IPv6 only. `::` and `::1` are IPv6 only.
#[inline(always)]
pub fn embedded_ipv4(a: &[u8; 16]) -> Option<([u8; 4], u32)> {
    let last = [a[12], a[13], a[14], a[15]];
    // Bytes 0..10 zero: mapped or compatible.
    let zero_0_10 = (a[0] | a[1] | a[2] | a[3] | a[4] | a[5] | a[6] | a[7] | a[8] | a[9]) == 0;
    if zero_0_10 && a[10] == 0xff && a[11] == 0xff {
        return Some((last, V4_FORM_MAPPED));
    }
    if zero_0_10 && a[10] == 0 && a[11] == 0 {
        // ::/127 is the unspecified address and loopback, not IPv4.
        if (a[12] | a[13] | a[14]) == 0 && a[15] <= 1 {
            return None;
        }
        return Some((last, V4_FORM_COMPATIBLE));
    }
    let zero_0_7 = (a[0] | a[1] | a[2] | a[3] | a[4] | a[5] | a[6] | a[7]) == 0;
    if zero_0_7 && a[8] == 0xff && a[9] == 0xff && a[10] == 0 && a[11] == 0 {
        return Some((last, V4_FORM_TRANSLATED));
    }
    if a[0] == 0x00 && a[1] == 0x64 && a[2] == 0xff && a[3] == 0x9b {
        if (a[4] | a[5] | a[6] | a[7] | a[8] | a[9] | a[10] | a[11]) == 0 {
            return Some((last, V4_FORM_NAT64));
        }
        if a[4] == 0 && a[5] == 1 {
            return Some((last, V4_FORM_NAT64_LOCAL));
        }
        return None;
    }
    if a[0] == 0x20 && a[1] == 0x02 {
        return Some(([a[2], a[3], a[4], a[5]], V4_FORM_6TO4));
    }
    None
}

#[cfg(test)]
mod tests;
