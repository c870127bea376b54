//! Names: DNS queries the watched sockets send are recorded, the answers to them are learned
//! before the socket can read them, and their addresses bound to the question name.
//!
//! - Egress (the target's `egress` program, and `dns_egress` on the resolver's cgroup): a UDP
//!   or TCP packet to port 53 carrying a query records `DnsQueryKey` → now in `DNS_QUERIES`.
//! - Ingress (the target's `ingress` program, and `dns_ingress`): a UDP or TCP packet from port
//!   53 carrying a response takes its query out of `DNS_QUERIES`. None, or older than the query
//!   window: `STAT_DNS_IGNORED`, nothing learned. Else the message (its first `DNS_MSG_MAX`
//!   bytes) is walked by the shared parser from `bpf_loop`, in the per-CPU `DNS_SCRATCH`: a
//!   message it refuses is `STAT_DNS_MALFORMED`; else every A/AAAA address is bound, with its
//!   TTL clamped to the configured bounds, in each slot whose domain rules match the name
//!   (`BINDINGS_*`, merged: a stale generation is reset first, a rule raises its `*_until_ns`),
//!   one `DnsEvent` goes to userspace, and `STAT_DNS_LEARNED` counts the answer.
//!
//! An IPv4 address in IPv6 form (an AAAA record of a DNS64 resolver, a mapped address) is
//! bound and reported as the IPv4 address, the form the policy judges it in. Nothing here ever
//! drops a packet. The resolver programs judge nothing and learn only.

use core::ptr::null_mut;

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_NOEXIST,
    cty::c_void,
    helpers::generated::{bpf_ktime_get_boot_ns, bpf_loop, bpf_skb_load_bytes},
    macros::cgroup_skb,
    maps::{LpmTrie, LruHashMap, lpm_trie::Key},
    programs::SkBuffContext,
};
use ollama_egress_common::{
    ACTION_DENY, EventHeader, FAMILY_IPV4, FAMILY_IPV6, PolicyValue, STAT_EVENTS_LOST,
    dns::{
        Binding, BindingKey, DNS_MAX_ADDRS, DNS_MSG_MAX, DNS_PORT, DOMAIN_KEY_LEN, DnsConfig,
        DnsEvent, DnsQueryKey, DnsWalk, EVENT_KIND_DNS, STAT_DNS_BIND_FAILED, STAT_DNS_IGNORED,
        STAT_DNS_LEARNED, STAT_DNS_MALFORMED, Step, WALK_MAX_STEPS,
    },
    embedded_ipv4,
};

use crate::{
    maps::{DNS_CONFIG, DNS_QUERIES, DNS_SCRATCH, DOMAINS_0, DOMAINS_1, EVENTS, SLOT_CONFIG},
    policy::{bindings, bump_stat, v4_daddr},
    skb::{Chain, ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP, IPPROTO_UDP, read, read_l4, walk_chain},
};

/// Bytes of a DNS header.
const DNS_HEADER: usize = 12;
/// Bytes of a UDP header.
const UDP_HDR: usize = 8;

/// An IP packet's addresses and where its upper-layer header starts.
pub struct Packet {
    /// `FAMILY_*` of the addresses, as on the wire.
    pub family: u32,
    /// Source address, network byte order, IPv4 in the first four bytes.
    pub saddr: [u8; 16],
    /// Destination address, likewise.
    pub daddr: [u8; 16],
    /// The upper-layer protocol.
    pub proto: u8,
    /// Offset of the upper-layer header; 0 when unknown (a later fragment, an unreadable chain).
    pub l4_off: usize,
}

/// Records the query a packet to port 53 carries (the resolver programs; the target's
/// `egress` calls [`record_query`] with what it has read already).
#[cgroup_skb(egress)]
pub fn dns_egress(ctx: SkBuffContext) -> i32 {
    let _ = try_dns_egress(&ctx);
    1
}

fn try_dns_egress(ctx: &SkBuffContext) -> Result<(), i64> {
    let p = packet(ctx)?;
    record_query(ctx, p.family, None, p.daddr, p.proto, p.l4_off)
}

/// Learns the answer a packet from port 53 carries (the resolver programs; the target's
/// `ingress` calls [`learn`]).
#[cgroup_skb(ingress)]
pub fn dns_ingress(ctx: SkBuffContext) -> i32 {
    let _ = try_dns_ingress(&ctx);
    1
}

fn try_dns_ingress(ctx: &SkBuffContext) -> Result<(), i64> {
    let p = packet(ctx)?;
    learn(ctx, &p)
}

/// Reads the IP header (and an IPv6 extension header chain) of the packet.
#[inline(always)]
pub fn packet(ctx: &SkBuffContext) -> Result<Packet, i64> {
    match u16::from_be(ctx.skb.protocol() as u16) {
        ETH_P_IP => {
            let h: [u8; 20] = read(&ctx.skb, 0)?;
            let ihl = usize::from(h[0] & 0x0f) * 4;
            let later_fragment = (u16::from(h[6] & 0x1f) << 8) | u16::from(h[7]) != 0;
            Ok(Packet {
                family: FAMILY_IPV4,
                saddr: v4_daddr([h[12], h[13], h[14], h[15]]),
                daddr: v4_daddr([h[16], h[17], h[18], h[19]]),
                proto: h[9],
                l4_off: if later_fragment { 0 } else { ihl },
            })
        }
        ETH_P_IPV6 => {
            let h: [u8; 40] = read(&ctx.skb, 0)?;
            let mut saddr = [0u8; 16];
            let mut daddr = [0u8; 16];
            saddr.copy_from_slice(&h[8..24]);
            daddr.copy_from_slice(&h[24..40]);
            let (proto, l4_off) = match walk_chain(ctx, h[6]) {
                Ok(Chain::Final { proto, off }) => (proto, off),
                _ => (h[6], 0),
            };
            Ok(Packet {
                family: FAMILY_IPV6,
                saddr,
                daddr,
                proto,
                l4_off,
            })
        }
        _ => Err(0),
    }
}

/// Where a DNS message starts in a UDP or TCP packet whose upper-layer header of protocol
/// `proto` is at `l4_off`, with its ports (host byte order): (source port, destination port,
/// message offset, message bytes in this packet).
#[inline(always)]
fn message(ctx: &SkBuffContext, proto: u8, l4_off: usize) -> Result<(u16, u16, usize, usize), i64> {
    if l4_off == 0 || (proto != IPPROTO_UDP && proto != IPPROTO_TCP) {
        return Err(0);
    }
    let ports: [u8; 4] = read_l4(&ctx.skb, l4_off, 0)?;
    let sport = u16::from_be_bytes([ports[0], ports[1]]);
    let dport = u16::from_be_bytes([ports[2], ports[3]]);
    // Only DNS is looked at further: every other packet is done after its ports.
    if sport != DNS_PORT && dport != DNS_PORT {
        return Err(0);
    }
    let total = ctx.len() as usize;
    let (off, len) = if proto == IPPROTO_UDP {
        let off = l4_off + UDP_HDR;
        (off, total.saturating_sub(off))
    } else {
        // Data offset in 32-bit words; the message follows its two-byte length.
        let doff: u8 = ctx.load(l4_off + 12)?;
        let seg = l4_off + usize::from(doff >> 4) * 4;
        let framed: [u8; 2] = if seg + 2 <= total {
            ctx.load(seg)?
        } else {
            return Err(0);
        };
        let off = seg + 2;
        let here = total.saturating_sub(off);
        let announced = usize::from(u16::from_be_bytes(framed));
        (off, if announced < here { announced } else { here })
    };
    if len < DNS_HEADER {
        return Err(0);
    }
    Ok((sport, dport, off, len))
}

/// The id and whether the message is a response.
#[inline(always)]
fn id_and_qr(ctx: &SkBuffContext, off: usize) -> Result<(u16, bool), i64> {
    let h: [u8; 3] = ctx.load(off)?;
    Ok((u16::from_be_bytes([h[0], h[1]]), h[2] & 0x80 != 0))
}

/// Records the query a packet to `daddr` of `family` (as on the wire) carries, if it is one to
/// port 53; `proto` and `l4_off` as in [`Packet`].
///
/// With `own_answers` (the target's programs; the packet came from `saddr`), a DNS response
/// leaving a socket from port 53 — a DNS server of the target itself — takes the query it
/// answers out of `DNS_QUERIES`, so whoever asked learns nothing from it: a process of the
/// target could otherwise bind any name to any address by answering its own query. The
/// resolver programs pass `None`: the resolver answering its clients is whom names are learned
/// from.
#[inline(always)]
pub fn record_query(
    ctx: &SkBuffContext,
    family: u32,
    own_answers: Option<[u8; 16]>,
    daddr: [u8; 16],
    proto: u8,
    l4_off: usize,
) -> Result<(), i64> {
    // `message` returns only packets to or from port 53.
    let (sport, dport, off, _) = message(ctx, proto, l4_off)?;
    let (id, response) = id_and_qr(ctx, off)?;
    if response {
        if sport == DNS_PORT
            && let Some(saddr) = own_answers
        {
            let _ = DNS_QUERIES.remove(query_key(saddr, family, proto, dport, id));
        }
        return Ok(());
    }
    if dport != DNS_PORT {
        return Ok(());
    }
    let key = query_key(daddr, family, proto, sport, id);
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    DNS_QUERIES.insert(key, now, 0).map_err(i64::from)
}

#[inline(always)]
fn query_key(server: [u8; 16], family: u32, proto: u8, local_port: u16, id: u16) -> DnsQueryKey {
    DnsQueryKey {
        server,
        family,
        proto: u32::from(proto),
        server_port: u32::from(DNS_PORT),
        local_port: u32::from(local_port),
        id: u32::from(id),
        reserved: 0,
    }
}

/// The settings of name learning; the defaults while userspace has not written them.
#[inline(always)]
fn config() -> DnsConfig {
    match DNS_CONFIG.get(0) {
        Some(c) if c.max_ttl_s != 0 => *c,
        _ => DnsConfig::default(),
    }
}

/// Learns the answer `p` carries, if it is a response from port 53 to a recorded query.
#[inline(always)]
pub fn learn(ctx: &SkBuffContext, p: &Packet) -> Result<(), i64> {
    let (sport, dport, off, len) = message(ctx, p.proto, p.l4_off)?;
    if sport != DNS_PORT {
        return Ok(());
    }
    let (id, response) = id_and_qr(ctx, off)?;
    if !response {
        return Ok(());
    }
    let key = query_key(p.saddr, p.family, p.proto, dport, id);
    // SAFETY: the value is copied out at once.
    let Some(sent) = (unsafe { DNS_QUERIES.get(key) }).copied() else {
        bump_stat(STAT_DNS_IGNORED);
        return Ok(());
    };
    let _ = DNS_QUERIES.remove(key);
    let cfg = config();
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    if now.wrapping_sub(sent) > u64::from(cfg.query_window_ms) * 1_000_000 {
        bump_stat(STAT_DNS_IGNORED);
        return Ok(());
    }
    let Some(w) = DNS_SCRATCH.get_ptr_mut(0) else {
        return Err(0);
    };
    // SAFETY: per-CPU scratch; the packet programs that use it do not nest on one CPU.
    let w = unsafe { &mut *w };
    let n = if len > DNS_MSG_MAX { DNS_MSG_MAX } else { len };
    // SAFETY: `msg` is writable for `DNS_MSG_MAX` >= `n` bytes; the helper checks the packet.
    let r = unsafe {
        bpf_skb_load_bytes(
            ctx.as_ptr(),
            off as u32,
            w.msg.as_mut_ptr().cast(),
            n as u32,
        )
    };
    if r != 0 {
        bump_stat(STAT_DNS_MALFORMED);
        return Ok(());
    }
    w.reset(n as u32);
    // SAFETY: `walk_step` has the callback signature and uses only the scratch map.
    let steps = unsafe { bpf_loop(WALK_MAX_STEPS, walk_step as *mut c_void, null_mut(), 0) };
    if steps < 0 || w.outcome().is_err() {
        bump_stat(STAT_DNS_MALFORMED);
        return Ok(());
    }
    bind(w, &cfg, now);
    w.event.header = EventHeader {
        ts_boot_ns: now,
        kind: EVENT_KIND_DNS,
        size: DnsEvent::SIZE as u32,
    };
    w.event.server = p.saddr;
    w.event.server_family = p.family;
    w.event.proto = u32::from(p.proto);
    if w.event.n_addrs != 0 && EVENTS.output::<DnsEvent>(&w.event, 0).is_err() {
        bump_stat(STAT_EVENTS_LOST);
    }
    bump_stat(STAT_DNS_LEARNED);
    Ok(())
}

/// One step of the walk over the message in `DNS_SCRATCH`: 0 to go on, 1 when it has ended.
unsafe extern "C" fn walk_step(_index: u32, _ctx: *mut c_void) -> i64 {
    let Some(w) = DNS_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU scratch, used by this program only while it runs.
    match unsafe { &mut *w }.step() {
        Step::Continue => 0,
        Step::Done => 1,
    }
}

/// What the domain rules of both slots say about the answer's name.
#[repr(C)]
struct BindWalk {
    now: u64,
    min_ttl_s: u64,
    max_ttl_s: u64,
    /// Per slot: non-zero when a rule matched.
    hit: [u32; 2],
    /// Per slot: the generation of its settings.
    generation: [u32; 2],
    /// Per slot: the matching rule's action.
    action: [u32; 2],
    /// Per slot: the matching rule's id.
    rule: [u32; 2],
    /// Addresses found.
    n_addrs: u32,
    reserved: u32,
}

/// Looks the name up in both slots' domain rules, then binds every address (one `bpf_loop`
/// step each), clamping the TTLs in the event.
#[inline(always)]
fn bind(w: &DnsWalk, cfg: &DnsConfig, now: u64) {
    let mut b = BindWalk {
        now,
        min_ttl_s: u64::from(cfg.min_ttl_s),
        max_ttl_s: u64::from(cfg.max_ttl_s),
        hit: [0; 2],
        generation: [0; 2],
        action: [0; 2],
        rule: [0; 2],
        n_addrs: w.event.n_addrs,
        reserved: 0,
    };
    // SAFETY: `LookupKey` and the trie key are both `{ u32, [u8; DOMAIN_KEY_LEN] }`, packed
    // the same (no padding: 4 + 256 bytes).
    let key = unsafe { &*(&raw const w.key).cast::<Key<[u8; DOMAIN_KEY_LEN]>>() };
    for slot in 0..2u32 {
        let Some(sc) = SLOT_CONFIG.get(slot) else {
            continue;
        };
        if sc.valid == 0 || sc.domain_rules == 0 {
            continue;
        }
        if let Some(v) = rule(if slot == 0 { &DOMAINS_0 } else { &DOMAINS_1 }, key) {
            let s = slot as usize;
            b.hit[s] = 1;
            b.generation[s] = sc.generation;
            b.action[s] = v.action;
            b.rule[s] = v.rule_id;
        }
    }
    // SAFETY: `bind_step` has the callback signature and only touches `b` and the scratch.
    unsafe {
        bpf_loop(
            DNS_MAX_ADDRS as u32,
            bind_step as *mut c_void,
            (&raw mut b).cast(),
            0,
        )
    };
}

#[inline(always)]
fn rule(
    trie: &LpmTrie<[u8; DOMAIN_KEY_LEN], PolicyValue>,
    key: &Key<[u8; DOMAIN_KEY_LEN]>,
) -> Option<PolicyValue> {
    trie.get(key).copied()
}

/// Binds address `index` of the answer in the scratch: 0 to go on, 1 past the last one.
unsafe extern "C" fn bind_step(index: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `BindWalk` that `bind` passed to `bpf_loop`.
    let b = unsafe { &*ctx.cast::<BindWalk>() };
    if index >= b.n_addrs {
        return 1;
    }
    let Some(w) = DNS_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU scratch, used by this program only while it runs.
    let w = unsafe { &mut *w };
    let a = &mut w.event.addrs[index as usize & (DNS_MAX_ADDRS - 1)];
    let ttl = u64::from(a.ttl_s).clamp(b.min_ttl_s, b.max_ttl_s.max(b.min_ttl_s));
    a.ttl_s = ttl as u32;
    if a.family == FAMILY_IPV6
        && let Some((v4, _)) = embedded_ipv4(&a.addr)
    {
        a.addr = v4_daddr(v4);
        a.family = FAMILY_IPV4;
    }
    let key = BindingKey {
        addr: a.addr,
        family: a.family,
        reserved: 0,
    };
    let until = b.now + ttl * 1_000_000_000;
    for slot in 0..2usize {
        if b.hit[slot] != 0 {
            merge(
                bindings(slot as u32),
                &key,
                b.generation[slot],
                b.action[slot] == ACTION_DENY,
                b.rule[slot],
                until,
            );
        }
    }
    0
}

/// Merges one binding into `map`: an entry of another generation is reset first; the rule
/// raises its side's lifetime.
#[inline(always)]
fn merge(
    map: &LruHashMap<BindingKey, Binding>,
    key: &BindingKey,
    generation: u32,
    deny: bool,
    rule: u32,
    until: u64,
) {
    if let Some(p) = map.get_ptr_mut(key) {
        // SAFETY: the map's value, valid for the program's run.
        apply(unsafe { &mut *p }, generation, deny, rule, until);
        return;
    }
    let mut fresh = Binding {
        generation,
        ..Binding::default()
    };
    apply(&mut fresh, generation, deny, rule, until);
    if map.insert(key, fresh, u64::from(BPF_NOEXIST)).is_ok() {
        return;
    }
    // Another CPU inserted it meanwhile.
    match map.get_ptr_mut(key) {
        // SAFETY: as above.
        Some(p) => apply(unsafe { &mut *p }, generation, deny, rule, until),
        None => bump_stat(STAT_DNS_BIND_FAILED),
    }
}

#[inline(always)]
fn apply(b: &mut Binding, generation: u32, deny: bool, rule: u32, until: u64) {
    if b.generation != generation {
        *b = Binding {
            generation,
            ..Binding::default()
        };
    }
    if deny {
        if until > b.deny_until_ns {
            b.deny_until_ns = until;
        }
        b.deny_rule = rule;
    } else {
        if until > b.allow_until_ns {
            b.allow_until_ns = until;
        }
        b.allow_rule = rule;
    }
}
