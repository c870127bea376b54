//! Guards of the device programs on the target cgroup.
//!
//! `tun_open` (cgroup device program) refuses, in enforce mode, every access to the TUN/TAP
//! clone device `/dev/net/tun`, whatever node it is reached through. A TUN or TAP device lets a
//! process inject packets that the kernel forwards without any socket of the target, so no
//! socket hook and no device program could attribute them. Every other device is left to the
//! other device rules of the cgroup (all programs must allow an access).
//!
//! `sockopt_guard` (cgroup setsockopt) refuses, in enforce mode, the socket options that send
//! frames to the driver past the devices' tc hooks: `PACKET_QDISC_BYPASS` on packet sockets
//! and every `SOL_XDP` option (an AF_XDP socket cannot transmit without them).

use aya_ebpf::{
    bindings::BPF_DEVCG_DEV_CHAR,
    macros::{cgroup_device, cgroup_sockopt},
    programs::{DeviceContext, SockoptContext},
};
use ollama_egress_common::{
    HOOK_DEVICE_OPEN, HOOK_SOCKOPT, RULE_DEVICE_BYPASS_OPTION, RULE_TUN_DEVICE, TUN_DEVICE,
};

use crate::{
    event::{Target, emit},
    policy::deny_with,
};

/// Returns 0 (refuse) for the TUN/TAP clone device in enforce mode, 1 (allow) otherwise.
#[cgroup_device]
pub fn tun_open(ctx: DeviceContext) -> i32 {
    try_tun_open(&ctx)
}

#[inline(always)]
fn try_tun_open(ctx: &DeviceContext) -> i32 {
    // SAFETY: the context pointer is valid for the program's run.
    let (access_type, major, minor) = unsafe {
        let d = &*ctx.device;
        (d.access_type, d.major, d.minor)
    };
    let is_char = access_type & 0xffff == BPF_DEVCG_DEV_CHAR;
    if !is_char || (major, minor) != TUN_DEVICE || !crate::exec::judges_current() {
        return 1;
    }
    let decision = deny_with(RULE_TUN_DEVICE);
    let target = Target {
        hook: HOOK_DEVICE_OPEN,
        family: 0,
        protocol: 0,
        dport: 0,
        daddr: [0; 16],
        v4_form: 0,
        direction: ollama_egress_common::DIRECTION_EGRESS,
        lport: 0,
    };
    emit(&target, &decision, None);
    if decision.drops() { 0 } else { 1 }
}

const SOL_PACKET: i32 = 263;
const PACKET_QDISC_BYPASS: i32 = 20;
const SOL_XDP: i32 = 283;

/// Returns 0 (EPERM) for an option that bypasses the device programs in enforce mode, 1
/// (proceed) otherwise.
#[cgroup_sockopt(setsockopt)]
pub fn sockopt_guard(ctx: SockoptContext) -> i32 {
    try_sockopt_guard(&ctx)
}

#[inline(always)]
fn try_sockopt_guard(ctx: &SockoptContext) -> i32 {
    // SAFETY: the context pointer is valid for the program's run; level and optname are
    // readable.
    let (level, optname) = unsafe { ((*ctx.sockopt).level, (*ctx.sockopt).optname) };
    let bypass = (level == SOL_PACKET && optname == PACKET_QDISC_BYPASS) || level == SOL_XDP;
    if !bypass || !crate::exec::judges_current() {
        return 1;
    }
    let decision = deny_with(RULE_DEVICE_BYPASS_OPTION);
    let target = Target {
        hook: HOOK_SOCKOPT,
        family: 0,
        protocol: level as u32,
        dport: optname as u32,
        daddr: [0; 16],
        v4_form: 0,
        direction: ollama_egress_common::DIRECTION_EGRESS,
        lport: 0,
    };
    emit(&target, &decision, None);
    if decision.drops() { 0 } else { 1 }
}
