//! ollama-egress kernel programs.
//!
//! - `skb`: cgroup_skb egress (enforcement backstop, per-packet counters) and ingress (counters).
//! - `exec`: `--process` targets marked at exec/fork (tracepoints), their sockets recorded
//!   (cgroup sock_create/sock_release), and the gates that make the other programs judge only them.
//! - `sock_addr`: cgroup connect4/connect6/sendmsg4/sendmsg6 (one decision and one event per
//!   connection or datagram destination, immediate EPERM when enforcing).
//! - `dns`: DNS queries recorded at egress, answers learned at ingress (also `dns_egress` and
//!   `dns_ingress` for the resolver's cgroup); `verdict`: the decision a socket got at connect,
//!   honoured by the egress backstop (and `connected_destroyed`, a BTF tracepoint that forgets a
//!   destroyed TCP socket's); `inbound`: the inbound guard (sock_ops marks accepted
//!   connections; SYNs, datagrams and accepted connections judged by the inbound policy).
//! - `tc`: tc/tcx egress on network devices (frames of the target's sockets that no cgroup_skb
//!   program sees: packet sockets, tunnels); `device`: the target may not open /dev/net/tun.
//!
//! Every program is a thin wrapper around a `try_*` function; the shared decision logic is in
//! `policy`, the maps in `maps`, event emission in `event`, what was reported already in `seen`.
#![no_std]
#![no_main]

mod device;
mod dns;
mod event;
mod exec;
mod inbound;
mod maps;
mod policy;
mod seen;
mod skb;
mod sock_addr;
mod tc;
mod verdict;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program in which a panic is reachable, so this code is
    // never executed in the kernel.
    unsafe { core::hint::unreachable_unchecked() }
}
