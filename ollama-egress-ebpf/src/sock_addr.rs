//! cgroup sock_addr programs: one decision per `connect()` and per datagram destination, seen
//! with the calling task, so events name the process. Returning 0 makes the syscall fail at once
//! with EPERM.

use core::ptr::read_volatile;

use aya_ebpf::{
    EbpfContext as _, bindings::bpf_sock_addr, helpers::generated::bpf_get_socket_cookie,
    macros::cgroup_sock_addr, programs::SockAddrContext,
};
use ollama_egress_common::{
    FAMILY_IPV4, HOOK_CONNECT4, HOOK_CONNECT6, HOOK_SENDMSG4, HOOK_SENDMSG6,
};

use crate::{
    event::{Target, emit},
    policy::{Decision, judge_v4, judge_v6, judged_first},
    seen::Seen,
};

/// `connect()` of an IPv4 socket.
#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    try_decide(&ctx, HOOK_CONNECT4).unwrap_or(0)
}

/// `connect()` of an IPv6 socket (IPv4 addresses in IPv6 form are judged as IPv4).
#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    try_decide(&ctx, HOOK_CONNECT6).unwrap_or(0)
}

/// `sendto()`/`sendmsg()` with a destination on an IPv4 datagram socket.
#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    try_decide(&ctx, HOOK_SENDMSG4).unwrap_or(0)
}

/// `sendto()`/`sendmsg()` with a destination on an IPv6 datagram socket.
#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    try_decide(&ctx, HOOK_SENDMSG6).unwrap_or(0)
}

/// The socket of a task marked in `--process` mode could not be recorded for the packet
/// programs: the connection is refused (EPERM), never let through unjudged.
struct Unrecorded;

/// Judges the destination, emits the event, returns 1 (proceed) or 0 (EPERM).
#[inline(always)]
fn try_decide(ctx: &SockAddrContext, hook: u32) -> Result<i32, Unrecorded> {
    // `--process` mode: only marked tasks are judged (see `exec`).
    if !crate::exec::judges_task(ctx).ok_or(Unrecorded)? {
        return Ok(1);
    }
    let dest = destination(ctx.sock_addr, hook);
    let datagram = hook == HOOK_SENDMSG4 || hook == HOOK_SENDMSG6;
    if datagram {
        let (family, daddr) = judged_first(dest.v6, dest.addr);
        // A repeated datagram to the socket's last datagram destination under the same
        // policy: decided, and reported, already.
        if let Some(d) = crate::verdict::repeated_datagram(ctx, family, daddr, dest.dport) {
            return Ok(if d.drops() { 0 } else { 1 });
        }
    }
    let (target, decision) = if dest.v6 {
        judge6(&dest, hook)
    } else {
        judge4(&dest, hook)
    };
    if decision.generation == 0 {
        // Userspace writes a policy before attaching: this only happens if the policy maps were
        // emptied under a running program.
        aya_log_ebpf::warn!(
            ctx,
            "no policy in force: connection allowed without a decision"
        );
    }
    // One event per connect; per datagram destination only when neither the socket's stored
    // verdict nor the de-dup map shows it reported.
    let report = if datagram {
        !crate::verdict::datagram(ctx, target.family, target.daddr, target.dport, &decision)
            && first_decision(ctx, &target, &decision)
    } else {
        crate::verdict::remember(ctx, target.protocol, target.family, target.daddr, &decision);
        true
    };
    if report {
        emit(&target, &decision, None);
    }
    Ok(if decision.drops() { 0 } else { 1 })
}

/// The destination of a `connect()` or datagram, as the caller gave it.
struct Destination {
    /// An IPv6 address (else IPv4).
    v6: bool,
    /// The address, network byte order (IPv4 in the first four bytes).
    addr: [u8; 16],
    /// The port, host byte order.
    dport: u32,
    /// The socket's protocol.
    protocol: u32,
}

/// Reads the destination of the hook's context.
#[inline(always)]
fn destination(sa: *mut bpf_sock_addr, hook: u32) -> Destination {
    let v6 = hook == HOOK_CONNECT6 || hook == HOOK_SENDMSG6;
    let mut addr = [0u8; 16];
    // SAFETY: the context pointer is valid for the program's run; the verifier permits 4-byte
    // reads of these fields (`user_ip6` one word at a time).
    let (port, protocol) = unsafe {
        if v6 {
            for i in 0..4 {
                let w = read_volatile(&(*sa).user_ip6[i]).to_ne_bytes();
                addr[i * 4..i * 4 + 4].copy_from_slice(&w);
            }
        } else {
            addr[..4].copy_from_slice(&read_volatile(&(*sa).user_ip4).to_ne_bytes());
        }
        (
            read_volatile(&(*sa).user_port),
            read_volatile(&(*sa).protocol),
        )
    };
    Destination {
        v6,
        addr,
        dport: u32::from(u16::from_be(port as u16)),
        protocol,
    }
}

#[inline(always)]
fn judge4(dest: &Destination, hook: u32) -> (Target, Decision) {
    let v4 = [dest.addr[0], dest.addr[1], dest.addr[2], dest.addr[3]];
    let target = Target {
        hook,
        family: FAMILY_IPV4,
        protocol: dest.protocol,
        dport: dest.dport,
        daddr: dest.addr,
        v4_form: 0,
        direction: ollama_egress_common::DIRECTION_EGRESS,
        lport: 0,
    };
    (target, judge_v4(v4))
}

#[inline(always)]
fn judge6(dest: &Destination, hook: u32) -> (Target, Decision) {
    let judged = judge_v6(dest.addr);
    // The event names the address that decided: the IPv4 one for an IPv4 address in IPv6 form.
    let (family, daddr) = judged.named(&dest.addr);
    let target = Target {
        hook,
        family,
        protocol: dest.protocol,
        dport: dest.dport,
        daddr,
        v4_form: judged.form,
        direction: ollama_egress_common::DIRECTION_EGRESS,
        lport: 0,
    };
    (target, judged.decision)
}

/// Whether this socket's datagrams to this destination have not been decided yet under the
/// current policy generation with this verdict. Repeated datagrams make one event, not one each.
#[inline(always)]
fn first_decision(ctx: &SockAddrContext, target: &Target, decision: &Decision) -> bool {
    // SAFETY: `bpf_get_socket_cookie` accepts a sock_addr context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    Seen::new(cookie, target.family, target.daddr, target.dport, decision).first()
}
