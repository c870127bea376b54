//! The inbound guard, on the verdict a socket keeps (`SOCK_VERDICT`, see `verdict`).
//!
//! - `accepted` (sock_ops, passive established): a connection the target accepted gets an
//!   inbound verdict, its peer judged by the inbound policy. The socket's packets, both ways,
//!   are judged by it, never as outbound destinations; a new generation judges the peer again.
//! - [`at_egress`]: the packets of connections the target accepted: of a request socket (the
//!   SYN-ACK), of a listener (a SYN-ACK with a SYN cookie), of a socket marked at accept.
//!   Everything else leaving the target stays an outbound destination.
//! - [`at_ingress`]: a SYN at a listener of the target (one decision per connection attempt,
//!   dropped before the listener sees it when denied: no SYN-ACK), the packets of an accepted
//!   connection, and a datagram from a source the receiving socket never sent to (a reply to the
//!   socket's connected peer or to a destination its `sendmsg` was judged for is not inbound).
//!
//! Datagrams the target sends are outbound whoever sent to it first: a UDP "reply" to an
//! address is indistinguishable from a datagram to it (and a source address is forged in one
//! packet), so no arriving datagram makes a destination allowed.
//!
//! Events: one per (socket, source, source port, generation, verdict), at most
//! `INBOUND_EVENTS_PER_SECOND` per CPU; every decision is counted in `STAT_INBOUND_DECISIONS`,
//! every one without its own event in `STAT_INBOUND_UNREPORTED`.

use core::ptr::read_volatile;

use aya_ebpf::{
    EbpfContext as _,
    bindings::bpf_sock,
    cty::c_void,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{
            bpf_get_socket_cookie, bpf_ktime_get_boot_ns, bpf_sk_fullsock, bpf_sk_storage_get,
        },
    },
    macros::sock_ops,
    programs::{SkBuffContext, SockOpsContext},
};
use ollama_egress_common::{
    ConnectEvent, DIRECTION_INGRESS, DedupKey, DedupValue, EVENT_KIND_CONNECT, EventHeader,
    FAMILY_IPV4, FAMILY_IPV6, HOOK_SKB_INGRESS, INBOUND_EVENTS_PER_SECOND, STAT_EVENTS_LOST,
    STAT_INBOUND_DECISIONS, STAT_INBOUND_UNREPORTED,
    dns::{SOCK_INBOUND, SockVerdict},
};

use crate::{
    dns::Packet,
    event::wakeup_flags,
    maps::{DATAGRAM_SEEN, EVENTS, INBOUND_BUDGET, INBOUND_SCRATCH, INBOUND_SEEN, SOCK_VERDICT},
    policy::{Decision, active, bump_stat, decide, judge_inbound, v4_daddr},
    skb::{IPPROTO_TCP, IPPROTO_UDP, take_budget},
    verdict,
};

/// `TCP_LISTEN`.
const TCP_LISTEN: u32 = 10;
/// `TCP_NEW_SYN_RECV`: a request socket (a SYN answered, the handshake not complete).
const TCP_NEW_SYN_RECV: u32 = 12;
/// `BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB`.
const PASSIVE_ESTABLISHED: u32 = 5;
/// `BPF_SK_STORAGE_GET_F_CREATE`.
const STORAGE_CREATE: u64 = 1;
/// TCP flags.
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// Marks every connection the target accepts with its inbound verdict. Never refuses (the SYN
/// was judged at ingress; a denied peer's packets are dropped by the packet programs).
#[sock_ops]
pub fn accepted(ctx: SockOpsContext) -> u32 {
    if ctx.op() == PASSIVE_ESTABLISHED {
        mark(&ctx);
    }
    1
}

#[inline(always)]
fn mark(ctx: &SockOpsContext) {
    let (family, addr) = if ctx.family() == FAMILY_IPV4 {
        (FAMILY_IPV4, v4_daddr(ctx.remote_ip4().to_ne_bytes()))
    } else if ctx.family() == FAMILY_IPV6 {
        let mut a = [0u8; 16];
        // SAFETY: the context is valid for the program's run; the verifier permits 4-byte reads
        // of `remote_ip6`, one word at a time at constant offsets.
        unsafe {
            for i in 0..4 {
                let w = read_volatile(&(*ctx.ops).remote_ip6[i]).to_ne_bytes();
                a[i * 4..i * 4 + 4].copy_from_slice(&w);
            }
        }
        (FAMILY_IPV6, a)
    } else {
        return;
    };
    let (family, addr, d) = judge_inbound(family, addr);
    if d.generation == 0 {
        return;
    }
    let mut fresh = SockVerdict::default();
    // SAFETY: `sk` is a context field sock_ops programs may read (a full socket or null); the
    // helper accepts it and creates the storage from `fresh` when the socket has none. A socket
    // left unmarked (no storage) is judged as outbound: fail closed.
    let p = unsafe {
        let sk = read_volatile(&(*ctx.ops).__bindgen_anon_2.sk);
        if sk.is_null() {
            return;
        }
        let map = (&raw const SOCK_VERDICT).cast_mut().cast::<c_void>();
        bpf_sk_storage_get(map, sk.cast(), (&raw mut fresh).cast(), STORAGE_CREATE)
            .cast::<SockVerdict>()
    };
    if p.is_null() {
        return;
    }
    // SAFETY: the helper returned this socket's storage, valid for the program's run.
    let v = unsafe { &mut *p };
    *v = verdict::record(SOCK_INBOUND, family, addr, 0, &d);
}

/// An inbound decision, or none (`inbound` false). Fully initialised either way: an
/// `Option<Decision>` leaves its payload undefined for `None`, and the verifier refuses the
/// undefined registers the compiler then spills.
#[derive(Clone, Copy)]
pub struct Inbound {
    /// Whether the packet is inbound traffic.
    pub inbound: bool,
    /// Its decision (meaningless when `inbound` is false).
    pub decision: Decision,
    /// For a packet that is not inbound, at ingress: the `VERDICT_*` of the socket's stored
    /// outbound verdict about its source, `verdict::NO_VERDICT` when there is none.
    pub reply: u32,
}

impl Inbound {
    #[inline(always)]
    fn of(decision: Decision) -> Self {
        Inbound {
            inbound: true,
            decision,
            reply: verdict::NO_VERDICT,
        }
    }

    #[inline(always)]
    fn not() -> Self {
        Inbound {
            inbound: false,
            decision: Decision {
                verdict: 0,
                rule_id: 0,
                generation: 0,
                mode: 0,
                origin: 0,
            },
            reply: verdict::NO_VERDICT,
        }
    }

    /// Not inbound: a reply, counted by `verdict` (`verdict::NO_VERDICT`: by the tables).
    #[inline(always)]
    fn reply(verdict: u32) -> Self {
        let mut r = Self::not();
        r.reply = verdict;
        r
    }
}

/// The packet's socket (`__sk_buff.sk`), null when it has none.
#[inline(always)]
fn socket(ctx: &SkBuffContext) -> *mut bpf_sock {
    // SAFETY: `sk` is a context field programs may read (a socket pointer or null).
    unsafe { read_volatile(&(*ctx.skb.skb).__bindgen_anon_2.sk) }
}

/// The inbound decision of a packet leaving the target to `daddr` (of `family`, as judged),
/// when it belongs to a connection the target accepted; not inbound for every other packet (an
/// outbound destination). `p` is the socket's storage (`verdict::stored`, possibly null).
#[inline(always)]
pub fn at_egress(
    ctx: &SkBuffContext,
    p: *mut SockVerdict,
    family: u32,
    daddr: [u8; 16],
) -> Inbound {
    let sk = socket(ctx);
    if sk.is_null() {
        return Inbound::not();
    }
    // SAFETY: `state` is readable on any socket the context points to (request sockets too).
    let state = unsafe { read_volatile(&(*sk).state) };
    if state == TCP_NEW_SYN_RECV {
        return Inbound::of(judge_inbound(family, daddr).2);
    }
    // SAFETY: the helper accepts the context's socket pointer and returns a full socket or null.
    let full = unsafe { bpf_sk_fullsock(sk) };
    if full.is_null() {
        return Inbound::not();
    }
    // SAFETY: `full` is a full socket; `protocol` is readable on it.
    let protocol = unsafe { read_volatile(&(*full).protocol) };
    if protocol != u32::from(IPPROTO_TCP) {
        return Inbound::not();
    }
    if state == TCP_LISTEN {
        return Inbound::of(judge_inbound(family, daddr).2);
    }
    marked(p, family, daddr)
}

/// The inbound decision of a socket marked at accept whose peer is `peer` (of `family`): the
/// stored one (`p`, the socket's storage or null) under the same generation, else judged again
/// and stored.
#[inline(always)]
fn marked(p: *mut SockVerdict, family: u32, peer: [u8; 16]) -> Inbound {
    if p.is_null() {
        return Inbound::not();
    }
    // SAFETY: `stored` returned this socket's storage, valid for the program's run.
    let v = unsafe { &mut *p };
    if v.direction != SOCK_INBOUND || v.family != family || v.daddr != peer {
        return Inbound::not();
    }
    if let Some((_, cfg)) = active()
        && cfg.generation == v.generation
    {
        return Inbound::of(decide(&cfg, v.action, v.rule_id));
    }
    let (family, addr, d) = judge_inbound(family, peer);
    if d.generation != 0 {
        *v = verdict::record(SOCK_INBOUND, family, addr, 0, &d);
    }
    Inbound::of(d)
}

/// Returned by [`ingress_verdict`] for a packet that is not inbound traffic and whose socket
/// has no stored verdict about its source.
pub const NOT_INBOUND: u32 = u32::MAX;
/// Set in [`ingress_verdict`]'s answer when a decision was staged for [`report`].
pub const STAGED: u32 = 1 << 16;
/// Set in [`ingress_verdict`]'s answer for a reply counted by its socket's stored verdict (the
/// low bits): not inbound traffic, never dropped.
pub const REPLY: u32 = 1 << 17;

/// The `VERDICT_*` of [`at_ingress`], [`NOT_INBOUND`] when the packet is not inbound traffic.
/// A function of its own (a BPF subprogram, with its own stack frame): the ingress program's
/// DNS walk needs most of the stack the verifier allows, and its frame no longer holds this.
#[inline(never)]
pub fn ingress_verdict(ctx: &SkBuffContext, p: &Packet) -> u32 {
    let mut staged = false;
    let inb = at_ingress(ctx, p, &mut staged);
    if inb.inbound {
        inb.decision.verdict | if staged { STAGED } else { 0 }
    } else if inb.reply != verdict::NO_VERDICT {
        inb.reply | REPLY
    } else {
        NOT_INBOUND
    }
}

/// The inbound decision of packet `p` arriving at the target; not inbound for what is not
/// traffic (a reply to an outbound connection or datagram, another protocol). Makes the event
/// of a connection attempt or datagram source.
#[inline(always)]
fn at_ingress(ctx: &SkBuffContext, p: &Packet, staged: &mut bool) -> Inbound {
    let sk = socket(ctx);
    if sk.is_null() || (p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP) {
        return Inbound::not();
    }
    // SAFETY: as in `at_egress`.
    let full = unsafe { bpf_sk_fullsock(sk) };
    if full.is_null() {
        return Inbound::not();
    }
    let stored = verdict::stored(ctx.skb.skb);
    // SAFETY: `full` is a full socket.
    let (state, protocol) = unsafe {
        (
            read_volatile(&(*full).state),
            read_volatile(&(*full).protocol),
        )
    };
    // Ports and (TCP) flags; 0 when the header cannot be read.
    let (sport, dport, flags) = if p.l4_off != 0 {
        let h = crate::skb::read_l4::<[u8; 4]>(&ctx.skb, p.l4_off, 0).unwrap_or([0; 4]);
        let flags = if p.proto == IPPROTO_TCP {
            // Data offset and flags: the flags are the second byte.
            crate::skb::read_l4::<[u8; 2]>(&ctx.skb, p.l4_off, 12).map_or(0, |b| b[1])
        } else {
            0
        };
        (
            u32::from(u16::from_be_bytes([h[0], h[1]])),
            u32::from(u16::from_be_bytes([h[2], h[3]])),
            flags,
        )
    } else {
        (0, 0, 0)
    };
    if p.proto == IPPROTO_TCP && protocol == u32::from(IPPROTO_TCP) {
        if state == TCP_LISTEN {
            let (family, src, d) = judge_inbound(p.family, p.saddr);
            if flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
                *staged = decided(family, src, sport, dport, p.proto, &d);
            }
            return Inbound::of(d);
        }
        let (family, src) = judged_as(p.family, p.saddr);
        let inb = marked(stored, family, src);
        if inb.inbound {
            return inb;
        }
        let skb = ctx.skb.skb;
        return Inbound::reply(verdict::reply_of(skb, stored, family, src, sport));
    }
    if p.proto == IPPROTO_UDP && protocol == u32::from(IPPROTO_UDP) {
        let (family, src) = judged_as(p.family, p.saddr);
        let sent = verdict::answered(stored, family, src, sport);
        if sent.is_some() || datagram_sent(ctx, family, src, sport) {
            return Inbound::reply(verdict::of_reply(sent));
        }
        let (family, src, d) = judge_inbound(family, src);
        *staged = decided(family, src, sport, dport, p.proto, &d);
        return Inbound::of(d);
    }
    Inbound::not()
}

/// The family and address a source is judged as (an IPv4-mapped one as IPv4).
#[inline(always)]
fn judged_as(family: u32, addr: [u8; 16]) -> (u32, [u8; 16]) {
    match ollama_egress_common::embedded_ipv4(&addr) {
        Some((v4, ollama_egress_common::V4_FORM_MAPPED)) if family == FAMILY_IPV6 => {
            (FAMILY_IPV4, v4_daddr(v4))
        }
        _ => (family, addr),
    }
}

/// Whether one of the packet's socket's datagrams was judged for `src`:`sport` (the sendmsg
/// hooks' record), so a datagram from there answers it. The socket's connected peer and its
/// last datagram destination are in its stored verdict (`verdict::answered`).
#[inline(always)]
fn datagram_sent(ctx: &SkBuffContext, family: u32, src: [u8; 16], sport: u32) -> bool {
    // SAFETY: `bpf_get_socket_cookie` accepts a cgroup_skb context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = DedupKey {
        cookie,
        daddr: src,
        dport: sport,
        family,
    };
    // SAFETY: only tested for presence.
    unsafe { DATAGRAM_SEEN.get(key) }.is_some()
}

/// Stages the event of an inbound decision in the CPU's scratch entry, for [`report`] (which
/// the ingress program calls next, from its own frame).
#[inline(always)]
fn decided(family: u32, src: [u8; 16], sport: u32, dport: u32, proto: u8, d: &Decision) -> bool {
    let Some(ev) = INBOUND_SCRATCH.get_ptr_mut(0) else {
        // No scratch entry (cannot happen for an array): still counted.
        bump_stat(STAT_INBOUND_DECISIONS);
        bump_stat(STAT_INBOUND_UNREPORTED);
        return false;
    };
    // SAFETY: per-CPU slot; programs do not migrate CPUs while running.
    let ev = unsafe { &mut *ev };
    ev.family = family;
    ev.protocol = u32::from(proto);
    ev.dport = sport;
    ev.verdict = d.verdict;
    ev.rule_id = d.rule_id;
    ev.generation = d.generation;
    ev.daddr = src;
    ev.mode = d.mode;
    ev.lport = dport;
    true
}

/// Counts the inbound decision staged by [`ingress_verdict`] and makes its event, once per
/// (socket, source, source port, generation, verdict) and within the CPU's budget; counts it
/// as unreported otherwise. A subprogram with its own frame, called by the ingress program.
#[inline(never)]
pub fn report(ctx: &SkBuffContext) {
    bump_stat(STAT_INBOUND_DECISIONS);
    let Some(ev) = INBOUND_SCRATCH.get_ptr_mut(0) else {
        bump_stat(STAT_INBOUND_UNREPORTED);
        return;
    };
    // SAFETY: per-CPU slot; programs do not migrate CPUs while running.
    let ev = unsafe { &mut *ev };
    // SAFETY: as in `replies_to_sent`.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = DedupKey {
        cookie,
        daddr: ev.daddr,
        dport: ev.dport,
        family: ev.family,
    };
    let value = DedupValue {
        generation: ev.generation,
        verdict: ev.verdict,
    };
    // SAFETY: the value is copied out before any update of the map.
    let seen = unsafe { INBOUND_SEEN.get(key) }.copied();
    if seen == Some(value) || !take_budget(&INBOUND_BUDGET, INBOUND_EVENTS_PER_SECOND) {
        bump_stat(STAT_INBOUND_UNREPORTED);
        return;
    }
    let _ = INBOUND_SEEN.insert(key, value, 0);
    // The event is built in the scratch entry and copied into the ring buffer from there: no
    // 112-byte event on the stack.
    let pid_tgid = bpf_get_current_pid_tgid();
    ev.header = EventHeader {
        // SAFETY: helper without preconditions.
        ts_boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        kind: EVENT_KIND_CONNECT,
        size: ConnectEvent::SIZE as u32,
    };
    ev.tid = pid_tgid as u32;
    ev.pid = (pid_tgid >> 32) as u32;
    ev.uid = ctx.get_socket_uid();
    ev.gid = (bpf_get_current_uid_gid() >> 32) as u32;
    ev.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    ev.hook = HOOK_SKB_INGRESS;
    ev.v4_form = 0;
    ev.direction = DIRECTION_INGRESS;
    ev.reserved = 0;
    if EVENTS.output::<ConnectEvent>(&*ev, wakeup_flags()).is_err() {
        bump_stat(STAT_EVENTS_LOST);
    }
}
