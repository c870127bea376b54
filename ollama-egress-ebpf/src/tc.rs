//! tc/tcx egress on every network device of the daemon's network namespace and of the target's
//! namespaces: the frames of the target's sockets that never meet a cgroup_skb program (packet sockets, SOCK_RAW and
//! SOCK_DGRAM; the outer packets of tunnels such as VXLAN, which carry the inner sender's
//! socket) are judged here by their destination with the same policy lookup.
//!
//! The common case is a packet of a socket outside the target: one helper call and a compare.
//! Packets of the target's inet sockets to the socket's own connected peer, or to a destination
//! the socket's stored verdict allows by the tables under the active generation (see `verdict`),
//! were judged by the cgroup hooks already and pass without a table walk; so do TCP request and
//! time-wait sockets (replies of accepted connections). Everything else of the target is
//! parsed (Ethernet, up to two VLAN tags, IPv4, IPv6; headers read directly from the frame where
//! it holds them, see `skb::read`) and judged; a frame that is not IP, or whose IP header could
//! send it on elsewhere (IPv4 options, IPv6 hop-by-hop, routing or destination options), is
//! denied.

use aya_ebpf::{
    bindings::bpf_sock,
    helpers::generated::{
        bpf_get_current_pid_tgid, bpf_get_socket_cookie, bpf_get_socket_uid, bpf_sk_fullsock,
        bpf_skb_ancestor_cgroup_id,
    },
    macros::{classifier, map},
    maps::{Array, PerCpuArray},
    programs::TcContext,
};
use ollama_egress_common::{
    Counter, DeviceTarget, FAMILY_IPV4, FAMILY_IPV6, HOOK_DEVICE_EGRESS, RULE_DEVICE_IP_OPTIONS,
    RULE_DEVICE_NON_IP, VERDICT_COUNT, dns::ORIGIN_TABLES,
};

use crate::{
    event::{Sender, Target, send},
    policy::{Decision, deny_with, judge_v4, judge_v6, judged_first, v4_daddr},
    seen::Seen,
    skb::{ETH_HLEN, read, read_l3},
    verdict,
};

/// Which cgroup subtree is judged (written by userspace before the programs are attached).
#[map(name = "DEVICE_TARGET")]
pub static DEVICE_TARGET: Array<DeviceTarget> = Array::with_max_entries(1, 0);

/// Frames of the target judged at a device, per verdict.
#[map(name = "DEVICE_COUNTERS")]
pub static DEVICE_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(VERDICT_COUNT, 0);

/// Let the next program (or the stack) decide.
const TC_ACT_UNSPEC: i32 = -1;
/// Drop.
const TC_ACT_SHOT: i32 = 2;

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_DEST: u8 = 60;

/// How a device frames its packets, chosen by userspace from the device's type.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// An Ethernet header first (Ethernet, veth, bridges, VXLAN, loopback).
    Ethernet,
    /// The IP header first (TUN, IP-in-IP and other layer-3 tunnels, WireGuard).
    Ip,
    /// Anything else: nothing of the target's is understood, so everything is denied.
    Other,
}

/// Egress of a device with Ethernet framing.
#[classifier]
pub fn tc_egress_eth(ctx: TcContext) -> i32 {
    try_egress(&ctx, Framing::Ethernet)
}

/// Egress of a device that sends bare IP packets.
#[classifier]
pub fn tc_egress_ip(ctx: TcContext) -> i32 {
    try_egress(&ctx, Framing::Ip)
}

/// Egress of a device of any other link type.
#[classifier]
pub fn tc_egress_other(ctx: TcContext) -> i32 {
    try_egress(&ctx, Framing::Other)
}

#[inline(always)]
fn try_egress(ctx: &TcContext, framing: Framing) -> i32 {
    let Some(target) = DEVICE_TARGET.get(0) else {
        return TC_ACT_UNSPEC;
    };
    // SAFETY: the helper accepts the program's skb; 0 when the skb has no socket.
    let ancestor = unsafe { bpf_skb_ancestor_cgroup_id(ctx.skb.skb.cast(), target.level as i32) };
    if target.cgroup_id == 0 || ancestor != target.cgroup_id {
        return TC_ACT_UNSPEC;
    }
    // In `--process` mode the target is the cgroup v2 root: only sockets of marked tasks.
    if !crate::exec::judges_socket(ctx) {
        return TC_ACT_UNSPEC;
    }
    judge_target_frame(ctx, framing)
}

/// The slow path: a frame of a socket in the target's subtree.
#[inline(never)]
fn judge_target_frame(ctx: &TcContext, framing: Framing) -> i32 {
    // SAFETY: `sk` is a context field the verifier lets tc programs read; it may be null.
    let sk = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return TC_ACT_UNSPEC;
    }
    // SAFETY: the helper accepts a socket pointer read from the context.
    let full = unsafe { bpf_sk_fullsock(sk) };
    if full.is_null() {
        // A TCP request or time-wait socket: a reply of a connection the cgroup hooks judged.
        return TC_ACT_UNSPEC;
    }
    let frame = match parse(ctx, framing) {
        Ok(h) => {
            // What the cgroup hooks judged passes before any table is walked: the connected
            // peer, and a destination the socket's stored verdict allows (its last
            // datagram's) under the active generation.
            if own_peer(full, &h) || (!h.options && judged_by_hooks(ctx, &h)) {
                return TC_ACT_UNSPEC;
            }
            judge(&h)
        }
        Err(rule) => Frame {
            decision: deny_with(rule),
            family: 0,
            daddr: [0; 16],
            protocol: 0,
            dport: 0,
        },
    };
    count(frame.decision.verdict, ctx.len());
    if frame.decision.denies() && first_report(ctx, &frame) {
        emit(ctx, &frame);
    }
    if frame.decision.drops() {
        TC_ACT_SHOT
    } else {
        TC_ACT_UNSPEC
    }
}

/// A judged frame.
struct Frame {
    decision: Decision,
    /// `FAMILY_*` as judged, 0 for a frame that is not IP.
    family: u32,
    /// Destination as in `ConnectEvent::daddr`.
    daddr: [u8; 16],
    /// IP protocol.
    protocol: u32,
    /// TCP/UDP destination port, host byte order; 0 for other protocols.
    dport: u32,
}

/// The IP header of a frame, as read.
struct Header {
    /// An IPv6 header (else IPv4).
    v6: bool,
    /// The destination as it stands in the header (IPv4 in the first four bytes).
    addr: [u8; 16],
    /// IP protocol (for IPv6 the header after a fragment header).
    protocol: u8,
    /// TCP/UDP destination port, host byte order; 0 for other protocols.
    dport: u32,
    /// Options (IPv4) or extension headers (IPv6, other than one fragment header) that could
    /// send the frame on elsewhere: denied whatever the destination.
    options: bool,
}

/// Judges the destination of a frame that no cgroup hook judged.
#[inline(always)]
fn judge(h: &Header) -> Frame {
    let (decision, family, daddr) = if h.v6 {
        // An IPv4 address in IPv6 form is judged, and named, as that IPv4 address.
        let judged = judge_v6(h.addr);
        let (family, daddr) = judged.named(&h.addr);
        (judged.decision, family, daddr)
    } else {
        let v4 = [h.addr[0], h.addr[1], h.addr[2], h.addr[3]];
        (judge_v4(v4), FAMILY_IPV4, h.addr)
    };
    Frame {
        decision: if h.options {
            deny_with(RULE_DEVICE_IP_OPTIONS)
        } else {
            decision
        },
        family,
        daddr,
        protocol: u32::from(h.protocol),
        dport: h.dport,
    }
}

/// Whether the socket's stored verdict (`verdict`) allows this frame's destination by the
/// tables of the active generation, so that judging it again would allow it too. Only an
/// allow: a socket keeps the refusal of a `connect()` it then sends past (through a tunnel
/// whose outer packets carry it, to that very host); and only the tables' (the policy as it
/// stands), not a domain binding's, which may have expired since.
#[inline(always)]
fn judged_by_hooks(ctx: &TcContext, h: &Header) -> bool {
    let (family, daddr) = judged_first(h.v6, h.addr);
    let stored = verdict::stored_any(ctx.skb.skb);
    matches!(
        verdict::current(verdict::of_packet(stored, family, daddr)),
        Some(d) if !d.denies() && d.origin == ORIGIN_TABLES
    )
}

/// Reads the frame's IP header; `Err(rule)` for a frame denied by its form.
#[inline(always)]
fn parse(ctx: &TcContext, framing: Framing) -> Result<Header, u32> {
    let (ethertype, l3) = match framing {
        Framing::Other => return Err(RULE_DEVICE_NON_IP),
        Framing::Ip => {
            let b: [u8; 2] = read(&ctx.skb, 0).map_err(|_| RULE_DEVICE_NON_IP)?;
            match b[0] >> 4 {
                4 => (ETH_P_IP, 0),
                6 => (ETH_P_IPV6, 0),
                _ => return Err(RULE_DEVICE_NON_IP),
            }
        }
        Framing::Ethernet => ethernet(ctx)?,
    };
    if ethertype == ETH_P_IP {
        let h: [u8; 20] = read_l3(&ctx.skb, l3, 0).map_err(|_| RULE_DEVICE_NON_IP)?;
        let version = h[0];
        if version >> 4 != 4 || version & 0xf < 5 {
            return Err(RULE_DEVICE_NON_IP);
        }
        let proto = h[9];
        // Options (source routes among them) could send the packet on elsewhere.
        let options = version != 0x45;
        let first_fragment = (h[6] & 0x1f) == 0 && h[7] == 0;
        let dport = if first_fragment && !options && (proto == IPPROTO_TCP || proto == IPPROTO_UDP)
        {
            port(read_l3(&ctx.skb, l3, 20))
        } else {
            0
        };
        Ok(Header {
            v6: false,
            addr: v4_daddr([h[16], h[17], h[18], h[19]]),
            protocol: proto,
            dport,
            options,
        })
    } else {
        let h: [u8; 40] = read_l3(&ctx.skb, l3, 0).map_err(|_| RULE_DEVICE_NON_IP)?;
        if h[0] >> 4 != 6 {
            return Err(RULE_DEVICE_NON_IP);
        }
        let mut addr = [0u8; 16];
        addr.copy_from_slice(&h[24..40]);
        let mut next = h[6];
        let mut fragment = false;
        if next == NEXTHDR_FRAGMENT {
            let f: [u8; 2] = read_l3(&ctx.skb, l3, 40).map_err(|_| RULE_DEVICE_NON_IP)?;
            next = f[0];
            fragment = true;
        }
        // Hop-by-hop, routing and destination options could send it on elsewhere.
        let options = matches!(
            next,
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST | NEXTHDR_FRAGMENT
        );
        let dport = if options || (next != IPPROTO_TCP && next != IPPROTO_UDP) {
            0
        } else if fragment {
            port(read_l3(&ctx.skb, l3, 48))
        } else {
            port(read_l3(&ctx.skb, l3, 40))
        };
        Ok(Header {
            v6: true,
            addr,
            protocol: next,
            dport,
            options,
        })
    }
}

/// The ethertype and the offset of the network header behind up to two VLAN tags.
#[inline(always)]
fn ethernet(ctx: &TcContext) -> Result<(u16, usize), u32> {
    let mut off = ETH_HLEN - 2;
    for _ in 0..3 {
        let t: [u8; 2] = read(&ctx.skb, off).map_err(|_| RULE_DEVICE_NON_IP)?;
        match u16::from_be_bytes(t) {
            ETH_P_8021Q | ETH_P_8021AD => off += 4,
            ty @ (ETH_P_IP | ETH_P_IPV6) => return Ok((ty, off + 2)),
            _ => return Err(RULE_DEVICE_NON_IP),
        }
    }
    Err(RULE_DEVICE_NON_IP)
}

/// The TCP/UDP destination port (host byte order) from the first four bytes of the header; 0
/// when they cannot be read.
#[inline(always)]
fn port(ports: Result<[u8; 4], i64>) -> u32 {
    ports.map_or(0, |p| u32::from(u16::from_be_bytes([p[2], p[3]])))
}

/// Whether the frame goes to the connected peer of the inet socket that sent it: the cgroup
/// hooks judged that destination (and keep judging it, per socket).
#[inline(always)]
fn own_peer(sk: *mut bpf_sock, h: &Header) -> bool {
    // SAFETY: a full socket returned by `bpf_sk_fullsock`; these fields are readable.
    let (family, dst4, dst6) = unsafe { ((*sk).family, (*sk).dst_ip4, (*sk).dst_ip6) };
    if family != AF_INET && family != AF_INET6 {
        return false;
    }
    if !h.v6 {
        let d = dst4.to_ne_bytes();
        d != [0; 4] && d == [h.addr[0], h.addr[1], h.addr[2], h.addr[3]]
    } else {
        let mut d = [0u8; 16];
        for (i, w) in dst6.iter().enumerate() {
            d[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        d != [0; 16] && d == h.addr
    }
}

#[inline(always)]
fn count(verdict: u32, len: u32) {
    if let Some(c) = DEVICE_COUNTERS.get_ptr_mut(verdict) {
        // SAFETY: per-CPU slot; programs do not migrate CPUs while running.
        let c: &mut Counter = unsafe { &mut *c };
        c.packets += 1;
        c.bytes += u64::from(len);
    }
}

/// Whether this socket's frames to this destination were not reported yet under this policy
/// generation and verdict. The key is the one the sendmsg hooks use, so a datagram they
/// reported already is not reported twice.
#[inline(always)]
fn first_report(ctx: &TcContext, frame: &Frame) -> bool {
    // SAFETY: `bpf_get_socket_cookie` accepts an skb.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast()) };
    Seen::new(
        cookie,
        frame.family,
        frame.daddr,
        frame.dport,
        &frame.decision,
    )
    .first()
}

/// One event for a denied frame. The uid is the socket's owner; the pid is the task that was
/// running when the frame reached the device (the sender, for packet sockets and tunnels
/// transmitting synchronously).
#[inline(always)]
fn emit(ctx: &TcContext, frame: &Frame) {
    let target = Target {
        hook: HOOK_DEVICE_EGRESS,
        family: if frame.family == 0 {
            FAMILY_IPV6
        } else {
            frame.family
        },
        protocol: frame.protocol,
        dport: frame.dport,
        daddr: frame.daddr,
        v4_form: 0,
        direction: ollama_egress_common::DIRECTION_EGRESS,
        lport: 0,
    };
    let sender = || {
        // SAFETY: helpers without preconditions (the skb is the program's).
        let (pid_tgid, uid) = unsafe {
            (
                bpf_get_current_pid_tgid(),
                bpf_get_socket_uid(ctx.skb.skb.cast()),
            )
        };
        Sender {
            pid_tgid,
            uid,
            gid: 0,
            comm: [0; 16],
        }
    };
    send(&target, &frame.decision, sender, || 0);
}
