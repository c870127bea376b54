//! cgroup_skb programs. Egress is the enforcement backstop: every packet leaving the cgroup is
//! judged by its destination with one trie lookup, whatever socket type sent it, so traffic that
//! never passed a sock_addr hook (raw sockets, for one) is still dropped. Ingress only counts.
//! Neither program emits events: events are per connection, from the sock_addr hooks.

use aya_ebpf::{macros::cgroup_skb, programs::SkBuffContext};
use ollama_egress_common::{
    Counter, DIRECTION_EGRESS, DIRECTION_INGRESS, RULE_IPV6_ROUTING_HEADER, counter_index,
};

use crate::{
    maps::PACKET_COUNTERS,
    policy::{Decision, deny_with, judge_v4, judge_v6},
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;

/// Offset of the IPv4 destination address (packet data starts at the IP header).
const IPV4_DADDR: usize = 16;
/// Offset of the IPv4 source address.
const IPV4_SADDR: usize = 12;
/// Offset of the IPv6 next-header field.
const IPV6_NEXTHDR: usize = 6;
/// Offset of the IPv6 source address.
const IPV6_SADDR: usize = 8;
/// Offset of the IPv6 destination address.
const IPV6_DADDR: usize = 24;
/// Length of the fixed IPv6 header.
const IPV6_HDR_LEN: usize = 40;
/// Extension headers walked before giving up looking for a routing header.
const MAX_EXT_HEADERS: usize = 8;

const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;

/// Judges every packet leaving the cgroup; returns 0 (drop) for a denied destination in
/// enforce mode, 1 (pass) otherwise.
#[cgroup_skb(egress)]
pub fn egress(ctx: SkBuffContext) -> i32 {
    // An error means the packet was too short to hold the header its protocol claims: nothing
    // legitimate sends that, and the stack rejects it; pass it on.
    try_egress(&ctx).unwrap_or(1)
}

fn try_egress(ctx: &SkBuffContext) -> Result<i32, i64> {
    // `--process` mode: only sockets of marked tasks are judged (see `exec`).
    if !crate::exec::judges_socket(ctx) {
        return Ok(1);
    }
    let Some(decision) = judge_packet(ctx, Peer::Destination)? else {
        return Ok(1);
    };
    count(DIRECTION_EGRESS, decision.verdict, ctx.len());
    Ok(if decision.drops() { 0 } else { 1 })
}

/// Counts packets arriving at the cgroup by the verdict their source would get. Never drops.
#[cgroup_skb(ingress)]
pub fn ingress(ctx: SkBuffContext) -> i32 {
    let _ = try_ingress(&ctx);
    1
}

fn try_ingress(ctx: &SkBuffContext) -> Result<(), i64> {
    if !crate::exec::judges_socket(ctx) {
        return Ok(());
    }
    if let Some(decision) = judge_packet(ctx, Peer::Source)? {
        count(DIRECTION_INGRESS, decision.verdict, ctx.len());
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Peer {
    Source,
    Destination,
}

/// The decision for the packet's peer address; `None` for a packet that is not IP.
#[inline(always)]
fn judge_packet(ctx: &SkBuffContext, peer: Peer) -> Result<Option<Decision>, i64> {
    // `__sk_buff.protocol` is the ethertype in network byte order.
    let proto = u16::from_be(ctx.skb.protocol() as u16);
    match proto {
        ETH_P_IP => {
            let off = if peer == Peer::Destination {
                IPV4_DADDR
            } else {
                IPV4_SADDR
            };
            let addr: [u8; 4] = ctx.load(off)?;
            Ok(Some(judge_v4(addr)))
        }
        ETH_P_IPV6 => {
            let off = if peer == Peer::Destination {
                IPV6_DADDR
            } else {
                IPV6_SADDR
            };
            let addr: [u8; 16] = ctx.load(off)?;
            let decision = judge_v6(addr);
            if peer == Peer::Source || decision.denies() {
                return Ok(Some(decision));
            }
            // An allowed destination only counts if it is the final one: a routing header with
            // segments left, or a header chain that cannot be read to its end, could send the
            // packet on elsewhere.
            match routes_elsewhere(ctx) {
                Ok(false) => Ok(Some(decision)),
                Ok(true) | Err(_) => Ok(Some(deny_with(RULE_IPV6_ROUTING_HEADER))),
            }
        }
        _ => Ok(None),
    }
}

/// Whether an IPv6 packet carries a routing header with segments left, or an extension header
/// chain that runs past the end of the packet: its final destination is then not (certainly)
/// the one in the fixed header, so it cannot be judged by that address.
#[inline(always)]
fn routes_elsewhere(ctx: &SkBuffContext) -> Result<bool, i64> {
    let mut next: u8 = ctx.load(IPV6_NEXTHDR)?;
    let mut off = IPV6_HDR_LEN;
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            NEXTHDR_HOP | NEXTHDR_DEST => {
                let h: [u8; 2] = ctx.load(off)?;
                next = h[0];
                off += (h[1] as usize + 1) * 8;
            }
            NEXTHDR_ROUTING => {
                // next header, length, routing type, segments left
                let h: [u8; 4] = ctx.load(off)?;
                if h[3] != 0 {
                    return Ok(true);
                }
                next = h[0];
                off += (h[1] as usize + 1) * 8;
            }
            NEXTHDR_FRAGMENT => {
                let h: [u8; 1] = ctx.load(off)?;
                next = h[0];
                off += 8;
            }
            NEXTHDR_AUTH => {
                let h: [u8; 2] = ctx.load(off)?;
                next = h[0];
                off += (h[1] as usize + 2) * 4;
            }
            // The upper-layer header: the chain must end inside the packet.
            _ => return Ok(off > ctx.len() as usize),
        }
    }
    Ok(false)
}

#[inline(always)]
fn count(direction: u32, verdict: u32, len: u32) {
    if let Some(c) = PACKET_COUNTERS.get_ptr_mut(counter_index(direction, verdict)) {
        // SAFETY: per-CPU slot; programs do not migrate CPUs while running.
        let c: &mut Counter = unsafe { &mut *c };
        c.packets += 1;
        c.bytes += u64::from(len);
    }
}
