//! Reading packet bytes in the cgroup_skb and tc programs: straight from the packet's linear
//! data (direct packet access, no helper call) when it holds them, else with
//! `bpf_skb_load_bytes`.

use core::{mem::size_of, ptr::read_volatile};

use aya_ebpf::programs::sk_buff::SkBuff;

use super::{IPV4_HDR_LEN, IPV6_HDR_LEN};

/// Offsets beyond this are read with the helper: the verifier tracks a variable packet offset
/// only within a bound, and headers lie well inside it.
const MAX_DIRECT_OFFSET: usize = 1024;

/// The `T` at `off` bytes from the start of the packet's data (the network header in cgroup_skb
/// programs, the frame in tc programs). `T` is at least two bytes: for one byte the
/// compiler turns the bounds check into `data + off < data_end`, whose range the verifier does
/// not credit, and the program is refused.
#[inline(always)]
pub(crate) fn read<T: Copy>(skb: &SkBuff, off: usize) -> Result<T, i64> {
    const { assert!(size_of::<T>() >= 2, "read two bytes or more") };
    // SAFETY: `data` and `data_end` are context fields cgroup_skb and tc programs may read.
    let (data, end) = unsafe {
        (
            read_volatile(&(*skb.skb).data) as usize,
            read_volatile(&(*skb.skb).data_end) as usize,
        )
    };
    if off <= MAX_DIRECT_OFFSET && data + off + size_of::<T>() <= end {
        // SAFETY: the bytes lie inside the linear data, as the check above shows the verifier.
        return Ok(unsafe { core::ptr::read_unaligned((data + off) as *const T) });
    }
    skb.load(off)
}

/// The `T` at `rel` bytes into the upper-layer header at `l4_off` (from the network header):
/// directly at the usual offsets (after an IPv4 header without options or a bare IPv6
/// header), where the offset is a constant that costs the verifier little (a variable one
/// multiplies its paths), with the helper elsewhere.
#[inline(always)]
pub(crate) fn read_l4<T: Copy>(skb: &SkBuff, l4_off: usize, rel: usize) -> Result<T, i64> {
    match l4_off {
        IPV4_HDR_LEN => read(skb, IPV4_HDR_LEN + rel),
        IPV6_HDR_LEN => read(skb, IPV6_HDR_LEN + rel),
        _ => skb.load(l4_off + rel),
    }
}

/// Length of an Ethernet header without VLAN tags.
pub(crate) const ETH_HLEN: usize = 14;

/// The `T` at `rel` bytes into the network header at `l3` of a tc frame: directly behind a
/// bare Ethernet header or at the start (bare IP), with the helper behind VLAN tags.
#[inline(always)]
pub(crate) fn read_l3<T: Copy>(skb: &SkBuff, l3: usize, rel: usize) -> Result<T, i64> {
    match l3 {
        0 => read(skb, rel),
        ETH_HLEN => read(skb, ETH_HLEN + rel),
        _ => skb.load(l3 + rel),
    }
}
