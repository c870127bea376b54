//! cgroup_skb programs. Egress is the enforcement backstop: every packet leaving the cgroup is
//! judged by its destination with one trie lookup, whatever socket type sent it, so traffic that
//! never passed a sock_addr hook (raw and ping sockets, for one) is still dropped. A packet whose
//! header sends it on elsewhere (an IPv4 source-route option, an IPv6 routing header, a header
//! chain that cannot be read to its end) is denied. Packets of connections the target accepted
//! are judged by the inbound policy instead (see `inbound`). Ingress counts, and judges inbound
//! traffic by its source (dropped in enforce mode when denied).
//!
//! Every dropped packet is counted; the first drop per (socket, destination, policy generation)
//! is also an event (`HOOK_SKB_EGRESS`), up to `BACKSTOP_EVENTS_PER_SECOND` per CPU; repeats
//! and drops over that budget are counted in `STAT_SKB_DROPS_UNREPORTED`. In monitor mode the
//! same holds for would-block packets of sockets no sock_addr hook judges (raw, ping).

use core::ptr::read_volatile;

use aya_ebpf::{
    EbpfContext as _,
    helpers::generated::{bpf_get_socket_cookie, bpf_ktime_get_boot_ns, bpf_sk_fullsock},
    macros::cgroup_skb,
    maps::PerCpuArray,
    programs::SkBuffContext,
};
use ollama_egress_common::{
    BACKSTOP_EVENTS_PER_SECOND, Counter, DIRECTION_EGRESS, DIRECTION_INGRESS, EventBudget,
    FAMILY_IPV4, FAMILY_IPV6, HOOK_SKB_EGRESS, RULE_IPV4_SOURCE_ROUTE, RULE_IPV6_ROUTING_HEADER,
    STAT_SKB_DROPS_UNREPORTED, V4_FORM_NONE, VERDICT_BLOCKED, counter_index, embedded_ipv4,
};

mod bytes;
mod options;

pub(crate) use bytes::{ETH_HLEN, read, read_l3, read_l4};

use options::source_routed;

use crate::{
    dns::record_query,
    event::{Target, emit},
    inbound,
    maps::{BACKSTOP_BUDGET, PACKET_COUNTERS},
    policy::{Decision, bump_stat, deny_with, judge_v4, judge_v6, v4_daddr},
    seen::Seen,
    verdict,
};

pub(crate) const ETH_P_IP: u16 = 0x0800;
pub(crate) const ETH_P_IPV6: u16 = 0x86DD;

/// Length of the IPv4 header without options.
pub(crate) const IPV4_HDR_LEN: usize = 20;
/// Offset of the IPv6 next-header field.
const IPV6_NEXTHDR: usize = 6;
/// Offset of the IPv6 source address.
const IPV6_SADDR: usize = 8;
/// Offset of the IPv6 destination address.
const IPV6_DADDR: usize = 24;
/// Length of the fixed IPv6 header.
pub(crate) const IPV6_HDR_LEN: usize = 40;
/// Extension headers accepted before the upper-layer header; a chain that has not reached its
/// upper-layer header after that many is denied (legitimate packets carry a handful at most).
const MAX_EXT_HEADERS: usize = 8;

const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;

pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;
const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;

/// Judges every packet leaving the cgroup; returns 0 (drop) for a denied destination in
/// enforce mode, 1 (pass) otherwise.
#[cgroup_skb(egress)]
pub fn egress(ctx: SkBuffContext) -> i32 {
    // An error means the packet was too short to hold the fixed header its protocol claims:
    // nothing legitimate sends that, and the stack rejects it; pass it on.
    try_egress(&ctx).unwrap_or(1)
}

/// An egress packet as judged.
struct Judged {
    decision: Decision,
    /// Family of the address that decided (`FAMILY_*`).
    family: u32,
    /// The address that decided, network byte order, IPv4 in the first four bytes.
    daddr: [u8; 16],
    /// `V4_FORM_*` of an IPv6 destination judged as IPv4.
    form: u32,
    /// The upper-layer protocol.
    proto: u8,
    /// Offset of the upper-layer header, 0 when unknown (a later fragment, an unreadable chain).
    l4_off: usize,
    /// `DIRECTION_INGRESS` for a packet of a connection the target accepted (judged by the
    /// inbound policy, `daddr` being the peer), `DIRECTION_EGRESS` otherwise.
    direction: u32,
}

fn try_egress(ctx: &SkBuffContext) -> Result<i32, i64> {
    // `--process` mode: only sockets of marked tasks are judged (see `exec`).
    if !crate::exec::judges_socket(ctx) {
        return Ok(1);
    }
    // `__sk_buff.protocol` is the ethertype in network byte order.
    let judged = match u16::from_be(ctx.skb.protocol() as u16) {
        ETH_P_IP => judge_egress_v4(ctx)?,
        ETH_P_IPV6 => judge_egress_v6(ctx)?,
        _ => return Ok(1),
    };
    count(DIRECTION_EGRESS, judged.decision.verdict, ctx.len());
    let drops = judged.decision.drops();
    // A drop is always reported; a would-block (monitor mode) only for a socket no sock_addr
    // hook judged, so monitor mode shows what enforce mode would drop, without repeating the
    // connect/sendmsg events of TCP and UDP.
    if drops || (judged.decision.denies() && unhooked_socket(ctx)) {
        report(ctx, &judged);
    }
    Ok(if drops { 0 } else { 1 })
}

/// Whether the packet's socket is one whose destinations the sock_addr hooks do not judge: not
/// a TCP stream or UDP datagram socket (raw and ping sockets, for instance). A packet of a
/// request or time-wait socket belongs to TCP.
#[inline(always)]
fn unhooked_socket(ctx: &SkBuffContext) -> bool {
    // SAFETY: `sk` is a field of the context the verifier lets programs read (as a socket
    // pointer or null); `bpf_sk_fullsock` accepts it and returns a full socket or null.
    unsafe {
        let sk = read_volatile(&(*ctx.skb.skb).__bindgen_anon_2.sk);
        if sk.is_null() {
            return true;
        }
        let full = bpf_sk_fullsock(sk);
        if full.is_null() {
            return false;
        }
        let kind = read_volatile(&(*full).type_);
        let protocol = read_volatile(&(*full).protocol);
        !((kind == SOCK_STREAM && protocol == u32::from(IPPROTO_TCP))
            || (kind == SOCK_DGRAM && protocol == u32::from(IPPROTO_UDP)))
    }
}

fn judge_egress_v4(ctx: &SkBuffContext) -> Result<Judged, i64> {
    let h: [u8; IPV4_HDR_LEN] = read(&ctx.skb, 0)?;
    let ihl = usize::from(h[0] & 0x0f) * 4;
    // DNS queries first, before the decision: the verifier then checks the recording once, not
    // once per way the policy can decide. A query of a packet that is then dropped never gets
    // an answer; its entry ages out of the LRU map.
    let later_fragment = (u16::from(h[6] & 0x1f) << 8) | u16::from(h[7]) != 0;
    if !later_fragment {
        let _ = record_query(
            ctx,
            FAMILY_IPV4,
            Some(v4_daddr([h[12], h[13], h[14], h[15]])),
            v4_daddr([h[16], h[17], h[18], h[19]]),
            h[9],
            ihl,
        );
    }
    // Options first: the walk is then verified once, not once per way the policy can decide.
    let source_route = ihl != IPV4_HDR_LEN && source_routed(ctx, ihl);
    let daddr4 = [h[16], h[17], h[18], h[19]];
    // A packet of a connection the target accepted is judged by the inbound policy, never as
    // an outbound destination.
    // The socket's storage, looked up once for both questions.
    let storage = verdict::stored_any(ctx.skb.skb);
    let inb = inbound::at_egress(ctx, storage, FAMILY_IPV4, v4_daddr(daddr4));
    let (mut decision, direction) = match inb.inbound {
        true => (inb.decision, DIRECTION_INGRESS),
        false => {
            let stored = verdict::of_packet(storage, FAMILY_IPV4, v4_daddr(daddr4));
            let d = match verdict::current(stored) {
                Some(d) => d,
                None => verdict::settle(stored, judge_v4(daddr4)),
            };
            (d, DIRECTION_EGRESS)
        }
    };
    if source_route && !decision.denies() {
        decision = deny_with(RULE_IPV4_SOURCE_ROUTE);
    }
    let frag_offset = (u16::from(h[6] & 0x1f) << 8) | u16::from(h[7]);
    let l4_off = if frag_offset == 0 { ihl } else { 0 };
    Ok(Judged {
        decision,
        family: FAMILY_IPV4,
        daddr: v4_daddr(daddr4),
        form: V4_FORM_NONE,
        proto: h[9],
        l4_off,
        direction,
    })
}

fn judge_egress_v6(ctx: &SkBuffContext) -> Result<Judged, i64> {
    let addr: [u8; 16] = read(&ctx.skb, IPV6_DADDR)?;
    // Next header and hop limit: the next header is the first byte.
    let next = read::<[u8; 2]>(&ctx.skb, IPV6_NEXTHDR)?[0];
    // The chain first: the walk is then verified once, not once per way the policy decides.
    // An allowed destination only counts if it is the final one: a routing header with
    // segments left, or a header chain that cannot be read to its end within the limit, could
    // send the packet on elsewhere.
    let (elsewhere, proto, l4_off) = match walk_chain(ctx, next) {
        Ok(Chain::Final { proto, off }) => (false, proto, off),
        Ok(Chain::Elsewhere) | Err(_) => (true, next, 0),
    };
    // DNS queries before the decision, as for IPv4.
    let saddr: [u8; 16] = read(&ctx.skb, IPV6_SADDR)?;
    let _ = record_query(ctx, FAMILY_IPV6, Some(saddr), addr, proto, l4_off);
    // The destination as the policy judges it, for the socket's stored verdict.
    let (mut family, mut daddr, mut form) = match embedded_ipv4(&addr) {
        Some((v4, f)) => (FAMILY_IPV4, v4_daddr(v4), f),
        None => (FAMILY_IPV6, addr, V4_FORM_NONE),
    };
    let storage = verdict::stored_any(ctx.skb.skb);
    let inb = inbound::at_egress(ctx, storage, family, daddr);
    let (mut decision, direction) = match inb.inbound {
        true => (inb.decision, DIRECTION_INGRESS),
        false => {
            let stored = verdict::of_packet(storage, family, daddr);
            let d = match verdict::current(stored) {
                Some(d) => d,
                None => {
                    let judged = judge_v6(addr);
                    (family, daddr) = judged.named(&addr);
                    form = judged.form;
                    verdict::settle(stored, judged.decision)
                }
            };
            (d, DIRECTION_EGRESS)
        }
    };
    if elsewhere && !decision.denies() {
        decision = deny_with(RULE_IPV6_ROUTING_HEADER);
    }
    Ok(Judged {
        decision,
        family,
        daddr,
        form,
        proto,
        l4_off,
        direction,
    })
}

/// Where an IPv6 extension header chain ends.
pub(crate) enum Chain {
    /// At upper-layer protocol `proto`, whose header starts at `off` (0 for a later fragment).
    Final { proto: u8, off: usize },
    /// A routing header with segments left, a chain longer than the packet, or one not finished
    /// within `MAX_EXT_HEADERS`: the final destination is not (certainly) the one in the fixed
    /// header, so the packet cannot be judged by that address.
    Elsewhere,
}

/// Walks the extension headers of an IPv6 packet whose fixed header names `next`.
#[inline(always)]
pub(crate) fn walk_chain(ctx: &SkBuffContext, mut next: u8) -> Result<Chain, i64> {
    let mut off = IPV6_HDR_LEN;
    let mut later_fragment = false;
    // MAX_EXT_HEADERS extension headers, then the upper-layer header.
    for _ in 0..=MAX_EXT_HEADERS {
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
                    return Ok(Chain::Elsewhere);
                }
                next = h[0];
                off += (h[1] as usize + 1) * 8;
            }
            NEXTHDR_FRAGMENT => {
                // next header, reserved, fragment offset (13 bits) and flags
                let h: [u8; 4] = ctx.load(off)?;
                next = h[0];
                later_fragment |= (u16::from_be_bytes([h[2], h[3]]) >> 3) != 0;
                off += 8;
            }
            NEXTHDR_AUTH => {
                let h: [u8; 2] = ctx.load(off)?;
                next = h[0];
                off += (h[1] as usize + 2) * 4;
            }
            // The upper-layer header: the chain must end inside the packet.
            _ => {
                if off > ctx.len() as usize {
                    return Ok(Chain::Elsewhere);
                }
                let off = if later_fragment { 0 } else { off };
                return Ok(Chain::Final { proto: next, off });
            }
        }
    }
    Ok(Chain::Elsewhere)
}

/// Makes the event of a denied packet, once per (socket, destination, port, policy generation,
/// verdict) and within the CPU's event budget; counts it as unreported otherwise.
#[inline(always)]
fn report(ctx: &SkBuffContext, judged: &Judged) {
    let (sport, dport) =
        if judged.l4_off != 0 && (judged.proto == IPPROTO_TCP || judged.proto == IPPROTO_UDP) {
            ctx.load::<[u8; 4]>(judged.l4_off).map_or((0, 0), |p| {
                (
                    u32::from(u16::from_be_bytes([p[0], p[1]])),
                    u32::from(u16::from_be_bytes([p[2], p[3]])),
                )
            })
        } else {
            (0, 0)
        };
    // SAFETY: `bpf_get_socket_cookie` accepts a cgroup_skb context (0 when there is no socket).
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let seen = Seen::new(cookie, judged.family, judged.daddr, dport, &judged.decision);
    if seen.recorded() || !take_budget(&BACKSTOP_BUDGET, BACKSTOP_EVENTS_PER_SECOND) {
        bump_stat(STAT_SKB_DROPS_UNREPORTED);
        return;
    }
    seen.record();
    let target = Target {
        hook: HOOK_SKB_EGRESS,
        family: judged.family,
        protocol: u32::from(judged.proto),
        dport,
        daddr: judged.daddr,
        v4_form: judged.form,
        direction: judged.direction,
        lport: if judged.direction == DIRECTION_INGRESS {
            sport
        } else {
            0
        },
    };
    emit(&target, &judged.decision, Some(ctx.get_socket_uid()));
}

/// Takes one event from this CPU's budget in `map` of `per_second` events; `false` when the
/// current one-second window has used it up.
#[inline(always)]
pub(crate) fn take_budget(map: &PerCpuArray<EventBudget>, per_second: u64) -> bool {
    let Some(b) = map.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: per-CPU slot; programs do not migrate CPUs while running.
    let b: &mut EventBudget = unsafe { &mut *b };
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    if now.wrapping_sub(b.window_start_ns) >= 1_000_000_000 {
        b.window_start_ns = now;
        b.events = 0;
    }
    if b.events >= per_second {
        return false;
    }
    b.events += 1;
    true
}

/// Judges inbound traffic (see `inbound`: connection attempts at the target's listeners,
/// packets of accepted connections, datagrams from sources the socket never sent to) and drops
/// it in enforce mode when the inbound policy denies its source; counts every packet by its
/// verdict (replies to outbound traffic by the verdict their source would get as a
/// destination) and learns the DNS answers among them (see `dns`).
#[cgroup_skb(ingress)]
pub fn ingress(ctx: SkBuffContext) -> i32 {
    try_ingress(&ctx).unwrap_or(1)
}

fn try_ingress(ctx: &SkBuffContext) -> Result<i32, i64> {
    if !crate::exec::judges_socket(ctx) {
        return Ok(1);
    }
    let p = crate::dns::packet(ctx)?;
    let answer = inbound::ingress_verdict(ctx, &p);
    if answer != inbound::NOT_INBOUND {
        if answer & inbound::STAGED != 0 {
            inbound::report(ctx);
        }
        let verdict = answer & !(inbound::STAGED | inbound::REPLY);
        count(DIRECTION_INGRESS, verdict, ctx.len());
        // A reply to what the socket sent (counted by its stored verdict) is never dropped.
        if answer & inbound::REPLY == 0 && verdict == VERDICT_BLOCKED {
            return Ok(0);
        }
    } else {
        count_reply(ctx, &p);
    }
    crate::dns::learn(ctx, &p)?;
    Ok(1)
}

/// Counts a packet that is no inbound traffic (a reply to the target's outbound traffic) and
/// whose socket keeps no verdict about its source, by the verdict its source would get as a
/// destination. A subprogram: the ingress program's frame stays small enough for the DNS
/// walk's.
#[inline(never)]
fn count_reply(ctx: &SkBuffContext, p: &crate::dns::Packet) {
    let decision = if p.family == FAMILY_IPV4 {
        judge_v4([p.saddr[0], p.saddr[1], p.saddr[2], p.saddr[3]])
    } else {
        judge_v6(p.saddr).decision
    };
    count(DIRECTION_INGRESS, decision.verdict, ctx.len());
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
