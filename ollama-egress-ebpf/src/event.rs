//! Building and sending [`ConnectEvent`]s.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::bpf_ktime_get_boot_ns,
    },
};
use ollama_egress_common::{ConnectEvent, EVENT_KIND_CONNECT, EventHeader, STAT_EVENTS_LOST};

use crate::{
    maps::EVENTS,
    policy::{Decision, bump_stat},
};

/// Where a decision was made and about what.
pub struct Target {
    /// `HOOK_*`.
    pub hook: u32,
    /// Family as judged.
    pub family: u32,
    /// IP protocol of the socket.
    pub protocol: u32,
    /// Destination port, host byte order.
    pub dport: u32,
    /// Destination address, network byte order, IPv4 in the first four bytes.
    pub daddr: [u8; 16],
    /// `V4_FORM_*` of an IPv6 destination judged as IPv4 (0 otherwise).
    pub v4_form: u32,
    /// `DIRECTION_*`: for [`DIRECTION_INGRESS`], `daddr`/`dport` are the peer's (the source
    /// judged) and `lport` the target's port.
    pub direction: u32,
    /// Local port, host byte order, 0 when unknown.
    pub lport: u32,
}

/// Who an event names.
pub struct Sender {
    /// `bpf_get_current_pid_tgid()` of the task that was running.
    pub pid_tgid: u64,
    /// Owner of the traffic.
    pub uid: u32,
    /// Group of the task, 0 when the hook does not know it.
    pub gid: u32,
    /// Name of the task, zeros when the hook does not know it.
    pub comm: [u8; 16],
}

impl Sender {
    /// The current task. `uid` is the socket owner when the hook knows it (the packet
    /// programs), else the task's uid is taken.
    #[inline(always)]
    pub fn current(uid: Option<u32>) -> Self {
        let uid_gid = bpf_get_current_uid_gid();
        Sender {
            pid_tgid: bpf_get_current_pid_tgid(),
            uid: uid.unwrap_or(uid_gid as u32),
            gid: (uid_gid >> 32) as u32,
            comm: bpf_get_current_comm().unwrap_or([0; 16]),
        }
    }
}

/// Sends one event for `decision` of the current task, waking the reader when the buffer fills
/// (see [`send`]). `uid` as in [`Sender::current`].
#[inline(always)]
pub fn emit(target: &Target, decision: &Decision, uid: Option<u32>) {
    send(target, decision, || Sender::current(uid), wakeup_flags);
}

/// Sends one event, counting it as lost when the ring buffer is full. `sender` and `flags` (those
/// of `bpf_ringbuf_submit`) are only asked for once the event has its place.
#[inline(always)]
pub fn send(
    target: &Target,
    decision: &Decision,
    sender: impl FnOnce() -> Sender,
    flags: impl FnOnce() -> u64,
) {
    let Some(mut entry) = EVENTS.reserve::<ConnectEvent>(0) else {
        bump_stat(STAT_EVENTS_LOST);
        return;
    };
    let sender = sender();
    // SAFETY: helper without preconditions.
    let ts = unsafe { bpf_ktime_get_boot_ns() };
    entry.write(ConnectEvent {
        header: EventHeader {
            ts_boot_ns: ts,
            kind: EVENT_KIND_CONNECT,
            size: ConnectEvent::SIZE as u32,
        },
        tid: sender.pid_tgid as u32,
        pid: (sender.pid_tgid >> 32) as u32,
        uid: sender.uid,
        gid: sender.gid,
        comm: sender.comm,
        family: target.family,
        protocol: target.protocol,
        dport: target.dport,
        verdict: decision.verdict,
        rule_id: decision.rule_id,
        generation: decision.generation,
        hook: target.hook,
        v4_form: target.v4_form,
        daddr: target.daddr,
        mode: decision.mode,
        direction: target.direction,
        lport: target.lport,
        reserved: 0,
    });
    entry.submit(flags());
}

/// Waking the reader costs more than making the decision (an interrupt per event). The reader
/// drains on a short timer anyway, so the kernel only wakes it once the buffer is a quarter
/// full, before it could overflow.
#[inline(always)]
pub(crate) fn wakeup_flags() -> u64 {
    let size = EVENTS.query(u64::from(BPF_RB_RING_SIZE));
    let pending = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    if pending >= size / 4 {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}
