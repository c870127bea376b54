//! The verdict a socket's `connect()` got, kept with the socket, and honoured by the cgroup_skb
//! egress backstop.
//!
//! - Where it is kept: a TCP `connect()` the tables decided goes into `SOCK_CONNECTED`, a
//!   preallocated hash by socket cookie whose entry [`connected_destroyed`] deletes when the
//!   socket is destroyed (socket storage costs two allocations at connect and their release,
//!   about a third of a connection's kernel time). Every other verdict (a domain binding's, a
//!   UDP socket's, an accepted connection's, one that finds the hash full, or any while the
//!   deleting program is not attached) is socket storage (`SOCK_VERDICT`). A socket that has
//!   storage keeps its newest verdict there, and the packet programs look there first.
//! - connect4/connect6 store the judged destination, the policy generation, the action, the
//!   rule and whether a domain binding or the tables decided; sendmsg4/sendmsg6 store the last
//!   datagram destination the same way (`SOCK_DATAGRAM`, never over a connect or accept
//!   verdict), so its packet is not judged again and a repeated datagram is not looked up in
//!   the de-dup map.
//! - sendmsg4/sendmsg6 take a repeated datagram's decision from the stored one
//!   (`repeated_datagram`: same destination and port, same generation, no domain rules).
//! - Ingress counts a reply from the stored destination by the stored verdict (`of_reply`).
//! - The tc device programs pass a frame to a destination the stored verdict allows by the
//!   tables under the active generation without walking them.
//! - The backstop, for a packet of a socket whose stored destination is the packet's (judged)
//!   destination: under the same generation it takes that decision without walking the tables
//!   (one socket-storage lookup); under another generation it judges again, except that a
//!   socket a domain binding allowed stays allowed while its address has no live binding (an
//!   established download outlives the TTL; a new policy that denies the name binds the address
//!   to a deny rule, and that stops the socket). The stored verdict is then brought to the new
//!   generation.

use core::ptr::{null_mut, read_volatile};

use aya_ebpf::{
    EbpfContext as _,
    bindings::__sk_buff,
    cty::c_void,
    helpers::generated::{bpf_get_socket_cookie, bpf_sk_storage_get},
    macros::btf_tracepoint,
    programs::{BtfTracePointContext, SockAddrContext},
};
use ollama_egress_common::{
    ACTION_ALLOW, VERDICT_ALLOWED,
    dns::{ORIGIN_DOMAIN, ORIGIN_TABLES, SOCK_DATAGRAM, SOCK_OUTBOUND, SockVerdict},
};

use crate::{
    maps::{SOCK_CONNECTED, SOCK_CONNECTED_ON, SOCK_VERDICT},
    policy::{Decision, active, decide},
    skb::IPPROTO_TCP,
};

/// The stored form of `d` about `daddr`:`dport` of `family` (as judged), `direction` one of
/// `SOCK_OUTBOUND`, `SOCK_INBOUND`, `SOCK_DATAGRAM`.
#[inline(always)]
pub fn record(
    direction: u32,
    family: u32,
    daddr: [u8; 16],
    dport: u32,
    d: &Decision,
) -> SockVerdict {
    SockVerdict {
        daddr,
        family,
        generation: d.generation,
        action: d.action(),
        rule_id: d.rule_id,
        origin: d.origin,
        direction,
        dport,
    }
}

/// Stores `decision` about `daddr` of `family` (as judged) with the connecting socket of IP
/// protocol `protocol`: a TCP socket's verdict of the tables in `SOCK_CONNECTED` unless the
/// socket has storage already (its newest verdict stays there, where readers look first);
/// every other verdict, and one the hash cannot take, in the socket's storage (made if
/// needed: one lookup, as before the hash).
#[inline(always)]
pub fn remember(
    ctx: &SockAddrContext,
    protocol: u32,
    family: u32,
    daddr: [u8; 16],
    decision: &Decision,
) {
    if decision.generation == 0 {
        return;
    }
    let new = record(SOCK_OUTBOUND, family, daddr, 0, decision);
    if protocol == u32::from(IPPROTO_TCP)
        && decision.origin == ORIGIN_TABLES
        && SOCK_CONNECTED_ON.get(0).is_some_and(|on| *on != 0)
    {
        // SAFETY: the context's socket is valid for the program's run; no storage is created.
        let p = unsafe { SOCK_VERDICT.get_ptr_mut(ctx) };
        if !p.is_null() {
            // SAFETY: the helper returned this socket's storage, valid for the program's run.
            unsafe { *p = new };
            return;
        }
        // SAFETY: `bpf_get_socket_cookie` accepts a sock_addr context.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
        if SOCK_CONNECTED.insert(cookie, new, 0).is_ok() {
            return;
        }
    }
    let mut fresh = SockVerdict::default();
    // SAFETY: the context's socket is valid for the program's run; the helper creates the
    // storage from `fresh` when the socket has none.
    let p = unsafe { SOCK_VERDICT.get_or_insert_ptr_mut(ctx, Some(&mut fresh)) };
    if p.is_null() {
        return;
    }
    // SAFETY: the helper returned this socket's storage, valid for the program's run.
    unsafe { *p = new };
}

/// A TCP socket is destroyed (`tcp_destroy_sock`, for every TCP socket of the machine, when
/// nothing more can be sent on it): its `SOCK_CONNECTED` entry, if any, goes.
#[btf_tracepoint(function = "tcp_destroy_sock")]
pub fn connected_destroyed(ctx: BtfTracePointContext) -> i32 {
    // SAFETY: the tracepoint's first argument is the `struct sock *` being destroyed, which
    // the helper accepts.
    let cookie = unsafe {
        let sk: *mut c_void = ctx.arg(0);
        bpf_get_socket_cookie(sk)
    };
    // A lookup first: most sockets of the machine have no entry, and it takes no lock.
    // SAFETY: only tested for presence.
    if unsafe { SOCK_CONNECTED.get(cookie) }.is_some() {
        let _ = SOCK_CONNECTED.remove(cookie);
    }
    0
}

/// Stores `decision` about a datagram to `daddr`:`dport` of `family` (as judged) with the
/// sending socket, unless the socket keeps a connect or accept verdict; returns whether the
/// same decision about the same destination was stored, and so reported, before (a repeated
/// datagram then needs no de-dup lookup).
#[inline(always)]
pub fn datagram(
    ctx: &SockAddrContext,
    family: u32,
    daddr: [u8; 16],
    dport: u32,
    decision: &Decision,
) -> bool {
    if decision.generation == 0 {
        return false;
    }
    let mut fresh = SockVerdict::default();
    // SAFETY: as in `remember`.
    let p = unsafe { SOCK_VERDICT.get_or_insert_ptr_mut(ctx, Some(&mut fresh)) };
    if p.is_null() {
        return false;
    }
    // SAFETY: the helper returned this socket's storage, valid for the program's run.
    let v = unsafe { &mut *p };
    // A fresh storage has generation 0; a connect or accept verdict is never replaced.
    if v.direction != SOCK_DATAGRAM && v.generation != 0 {
        return false;
    }
    let new = record(SOCK_DATAGRAM, family, daddr, dport, decision);
    if *v == new {
        return true;
    }
    // The caller reports it now (or finds it reported in the de-dup map).
    *v = new;
    false
}

/// The decision stored with the sending socket about its last datagram destination, if that is
/// `daddr`:`dport` of `family` (as judged first) and it was taken under the active generation:
/// a repeated datagram then needs no table walk and no event. Not in a slot with domain rules:
/// a name learned since could bind the address to another rule, so such slots judge every
/// datagram.
#[inline(always)]
pub fn repeated_datagram(
    ctx: &SockAddrContext,
    family: u32,
    daddr: [u8; 16],
    dport: u32,
) -> Option<Decision> {
    // SAFETY: the context's socket is valid for the program's run; no storage is created.
    let p = unsafe { SOCK_VERDICT.get_ptr_mut(ctx) };
    if p.is_null() {
        return None;
    }
    // SAFETY: the helper returned this socket's storage, valid for the program's run.
    let v = unsafe { &*p };
    if v.direction != SOCK_DATAGRAM || v.family != family || v.daddr != daddr || v.dport != dport {
        return None;
    }
    let (_, cfg) = active()?;
    if cfg.domain_rules != 0 || v.generation != cfg.generation {
        return None;
    }
    let mut d = decide(&cfg, v.action, v.rule_id);
    d.origin = v.origin;
    Some(d)
}

/// The stored outbound (connect or datagram) verdict `p` (of [`stored`], possibly null), if it
/// is about `daddr` of `family` (as judged).
#[inline(always)]
pub fn of_packet(p: *mut SockVerdict, family: u32, daddr: [u8; 16]) -> Option<*mut SockVerdict> {
    if p.is_null() {
        return None;
    }
    // SAFETY: `stored` returned this socket's storage, valid for the program's run.
    let v = unsafe { &*p };
    if (v.direction != SOCK_OUTBOUND && v.direction != SOCK_DATAGRAM)
        || v.family != family
        || v.daddr != daddr
    {
        return None;
    }
    Some(p)
}

/// The stored outbound verdict `p` (possibly null), if a packet from `src`:`sport` (of
/// `family`, as judged) answers it: from the connected peer, or from the address and port of
/// the last datagram destination.
#[inline(always)]
pub fn answered(
    p: *mut SockVerdict,
    family: u32,
    src: [u8; 16],
    sport: u32,
) -> Option<*mut SockVerdict> {
    let v = of_packet(p, family, src)?;
    // SAFETY: `of_packet` returned this socket's storage, valid for the program's run.
    if unsafe { (*v).direction == SOCK_DATAGRAM && (*v).dport != sport } {
        return None;
    }
    Some(v)
}

/// The `VERDICT_*` a reply is counted by: that of the stored outbound verdict `v` it
/// [`answered`], under the active generation; [`NO_VERDICT`] when there is none (the tables
/// then judge the source).
#[inline(always)]
pub fn of_reply(v: Option<*mut SockVerdict>) -> u32 {
    match current(v) {
        Some(d) => d.verdict,
        None => NO_VERDICT,
    }
}

/// [`of_reply`] without a stored verdict.
pub const NO_VERDICT: u32 = u32::MAX;

/// The stored verdict's decision, when it was taken under the active policy generation.
#[inline(always)]
pub fn current(v: Option<*mut SockVerdict>) -> Option<Decision> {
    // SAFETY: `of_packet` returned this socket's storage, valid for the program's run.
    let v = unsafe { &*v? };
    let (_, cfg) = active()?;
    if v.generation != cfg.generation {
        return None;
    }
    let mut d = decide(&cfg, v.action, v.rule_id);
    d.origin = v.origin;
    Some(d)
}

/// The decision for a packet whose stored verdict `v` (if any) is of another generation, `d`
/// being how the tables and bindings judge it now; the stored verdict is brought to `d`'s
/// generation.
#[inline(always)]
pub fn settle(v: Option<*mut SockVerdict>, mut d: Decision) -> Decision {
    let Some(v) = v else {
        return d;
    };
    // SAFETY: `of_packet` returned this socket's storage, valid for the program's run.
    let v = unsafe { &mut *v };
    if d.generation == 0 {
        return d;
    }
    if v.origin == ORIGIN_DOMAIN && v.action == ACTION_ALLOW && d.origin == ORIGIN_TABLES {
        // Allowed through a binding that has expired (or that the new policy did not rebuild):
        // the established connection keeps its allow.
        d.verdict = VERDICT_ALLOWED;
        d.rule_id = v.rule_id;
        d.origin = ORIGIN_DOMAIN;
    }
    v.generation = d.generation;
    v.action = d.action();
    v.rule_id = d.rule_id;
    v.origin = d.origin;
    d
}

/// The stored verdict of the packet's socket: its socket storage (see [`stored`]), else its
/// `SOCK_CONNECTED` entry, null if neither. For the egress programs, which compare it with the
/// packet's destination.
#[inline(always)]
pub fn stored_any(skb: *mut __sk_buff) -> *mut SockVerdict {
    kept(skb, stored(skb))
}

/// `p` (the socket storage of the packet's socket, possibly null) if not null, else the
/// socket's `SOCK_CONNECTED` entry or null.
#[inline(always)]
fn kept(skb: *mut __sk_buff, p: *mut SockVerdict) -> *mut SockVerdict {
    if !p.is_null() {
        return p;
    }
    // SAFETY: the helper accepts the skb of a cgroup_skb or tc program (0 without a socket).
    let cookie = unsafe { bpf_get_socket_cookie(skb.cast()) };
    SOCK_CONNECTED.get_ptr_mut(cookie).unwrap_or(null_mut())
}

/// [`of_reply`] for a packet from `src`:`sport` (of `family`, as judged) to the packet's
/// socket, whose storage is `p` (possibly null; else its `SOCK_CONNECTED` entry is asked). At
/// ingress only here: a pointer into either map that lived on would make the verifier walk all
/// that follows once per map.
#[inline(always)]
pub fn reply_of(
    skb: *mut __sk_buff,
    p: *mut SockVerdict,
    family: u32,
    src: [u8; 16],
    sport: u32,
) -> u32 {
    of_reply(answered(kept(skb, p), family, src, sport))
}

/// The socket storage of the packet's socket, null if it has none (a raw pointer, not an
/// `Option`: the verifier refuses the undefined payload of a `None` that the compiler spills).
/// A TCP socket's verdict of the tables may be in `SOCK_CONNECTED` instead: see
/// [`stored_any`] and [`reply_of`].
#[inline(always)]
pub fn stored(skb: *mut __sk_buff) -> *mut SockVerdict {
    // SAFETY: `skb` is the program's context (cgroup_skb or tc); `sk` is a field such programs
    // may read (a socket pointer or null); the helper accepts a non-null one and returns its
    // storage or null (also for a socket that is not a full socket).
    unsafe {
        let sk = read_volatile(&(*skb).__bindgen_anon_2.sk);
        if sk.is_null() {
            return null_mut();
        }
        let map = (&raw const SOCK_VERDICT).cast_mut().cast::<c_void>();
        bpf_sk_storage_get(map, sk.cast(), null_mut(), 0).cast::<SockVerdict>()
    }
}
