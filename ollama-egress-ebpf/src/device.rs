//! cgroup device program on the target: refuses (in enforce mode) every access to the TUN/TAP
//! clone device `/dev/net/tun`, whatever node it is reached through. A TUN or TAP device lets a
//! process inject packets that the kernel forwards without any socket of the target, so no
//! socket hook and no device program could attribute them. Every other device is left to the
//! other device rules of the cgroup (all programs must allow an access).

use aya_ebpf::{bindings::BPF_DEVCG_DEV_CHAR, macros::cgroup_device, programs::DeviceContext};
use ollama_egress_common::{HOOK_DEVICE_OPEN, RULE_TUN_DEVICE, TUN_DEVICE};

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
    if !is_char || (major, minor) != TUN_DEVICE {
        return 1;
    }
    let decision = deny_with(RULE_TUN_DEVICE);
    let target = Target {
        hook: HOOK_DEVICE_OPEN,
        family: 0,
        protocol: 0,
        dport: 0,
        daddr: [0; 16],
        v4_mapped: 0,
    };
    emit(&target, &decision);
    if decision.drops() { 0 } else { 1 }
}
