//! The IPv4 options walk of the egress backstop: a source-route option (or options that
//! cannot be read to their end) sends a packet on to other routers than its destination.

use aya_ebpf::{
    EbpfContext as _,
    cty::c_void,
    helpers::generated::{bpf_loop, bpf_skb_load_bytes},
    programs::SkBuffContext,
};

use super::IPV4_HDR_LEN;

/// Option bytes an IPv4 header can hold (IHL 15 × 4 − 20): each option is at least one byte,
/// so a walk of this many steps reaches the end.
const IPV4_MAX_OPTION_BYTES: usize = 40;
/// Stack buffer for the IPv4 options: a power of two above `IPV4_MAX_OPTION_BYTES`, so that
/// the option length byte after the last option byte is still inside it.
const OPTION_BUF: usize = 64;
/// IPv4 option: end of the option list.
const IPOPT_END: u8 = 0;
/// IPv4 option: no operation (one byte).
const IPOPT_NOOP: u8 = 1;
/// IPv4 option: loose source and record route.
const IPOPT_LSRR: u8 = 0x83;
/// IPv4 option: strict source and record route.
const IPOPT_SSRR: u8 = 0x89;

/// Whether an IPv4 header of `ihl` bytes carries a source-route option (LSRR or SSRR), or
/// options that cannot be read to their end (a length below 2 or past the header, a header
/// shorter than 20 bytes): the routers named in such a header, not only its destination,
/// receive the packet. Bytes after an end-of-list option are not looked at: receivers stop
/// there too.
#[inline(always)]
pub(super) fn source_routed(ctx: &SkBuffContext, ihl: usize) -> bool {
    let n = ihl.wrapping_sub(IPV4_HDR_LEN);
    if n == 0 || n > IPV4_MAX_OPTION_BYTES {
        return true;
    }
    // One copy of the options onto the stack, then a walk without helper calls.
    let mut walk = OptionWalk {
        buf: [0; OPTION_BUF],
        len: n as u64,
        off: 0,
        routed: 1,
    };
    // SAFETY: `buf` is writable for `OPTION_BUF` > `n` bytes; the helper checks the packet.
    let r = unsafe {
        bpf_skb_load_bytes(
            ctx.as_ptr(),
            IPV4_HDR_LEN as u32,
            walk.buf.as_mut_ptr().cast(),
            n as u32,
        )
    };
    if r != 0 {
        return true;
    }
    // `bpf_loop` (the verifier checks the step once, not once per iteration and path): every
    // step consumes at least one of at most 40 bytes, so 40 steps reach the end and one more
    // sees it.
    // SAFETY: `option_step` has the callback signature and only touches `walk`, which outlives
    // the call.
    let done = unsafe {
        bpf_loop(
            IPV4_MAX_OPTION_BYTES as u32 + 1,
            option_step as *mut c_void,
            (&raw mut walk).cast(),
            0,
        )
    };
    done < 0 || walk.routed != 0
}

/// State of an IPv4 options walk.
#[repr(C)]
struct OptionWalk {
    /// The options; zero past `len`. A power of two above `IPV4_MAX_OPTION_BYTES`, so that the
    /// length byte after the last option byte is still inside it and masked indices need no
    /// bounds check.
    buf: [u8; OPTION_BUF],
    /// Option bytes in the header.
    len: u64,
    /// Offset of the next option.
    off: u64,
    /// The verdict so far: non-zero until the walk ends cleanly.
    routed: u64,
}

/// One step of the options walk: 0 to go on, 1 when the walk has its answer in `routed`.
unsafe extern "C" fn option_step(_index: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `OptionWalk` that `source_routed` passed to `bpf_loop`.
    let w = unsafe { &mut *ctx.cast::<OptionWalk>() };
    let n = w.len as usize;
    let off = w.off as usize;
    if off >= n {
        // Exactly at the end: every option was read; past it: the last one overran.
        w.routed = u64::from(off > n);
        return 1;
    }
    // `off` < `n` <= 40: the mask changes nothing but shows the verifier the bound.
    let off = off & (OPTION_BUF - 1);
    let kind = w.buf[off];
    if kind == IPOPT_END {
        w.routed = 0;
        return 1;
    }
    if kind == IPOPT_LSRR || kind == IPOPT_SSRR {
        return 1;
    }
    if kind == IPOPT_NOOP {
        w.off = (off + 1) as u64;
        return 0;
    }
    let len = usize::from(w.buf[(off + 1) & (OPTION_BUF - 1)]);
    if len < 2 {
        return 1;
    }
    w.off = (off + len) as u64;
    0
}
