//! The decision shared by every hook: which slot is active, the address's domain binding (when
//! the slot has domain rules), longest-prefix match, verdict.

use aya_ebpf::{
    helpers::generated::bpf_ktime_get_boot_ns,
    maps::{LpmTrie, LruHashMap, lpm_trie::Key},
};
use ollama_egress_common::{
    ACTION_ALLOW, ACTION_DENY, FAMILY_IPV4, FAMILY_IPV6, MODE_ENFORCE, MODE_MONITOR, PolicyValue,
    RULE_DEFAULT, RULE_NO_POLICY, SlotConfig, V4_FORM_MAPPED, V4_FORM_NONE, VERDICT_ALLOWED,
    VERDICT_BLOCKED, VERDICT_WOULD_BLOCK,
    dns::{Binding, BindingKey, ORIGIN_DOMAIN, ORIGIN_TABLES},
    embedded_ipv4,
};

use crate::maps::{
    ACTIVE_SLOT, BINDINGS_0, BINDINGS_1, INBOUND_V4_0, INBOUND_V4_1, INBOUND_V6_0, INBOUND_V6_1,
    POLICY_V4_0, POLICY_V4_1, POLICY_V6_0, POLICY_V6_1, SLOT_CONFIG, STATS,
};

/// The outcome of judging one destination.
#[derive(Clone, Copy)]
pub struct Decision {
    /// `VERDICT_*`.
    pub verdict: u32,
    /// Rule that matched (or `RULE_DEFAULT`).
    pub rule_id: u32,
    /// Generation of the policy that decided.
    pub generation: u32,
    /// `MODE_*` of the policy that decided.
    pub mode: u32,
    /// `ORIGIN_*`: a domain binding or the tables (and the default) decided.
    pub origin: u32,
}

impl Decision {
    /// Whether the traffic must be refused.
    #[inline(always)]
    pub fn drops(&self) -> bool {
        self.verdict == VERDICT_BLOCKED
    }

    /// Whether the policy denies the traffic (blocked or would-block).
    #[inline(always)]
    pub fn denies(&self) -> bool {
        self.verdict != VERDICT_ALLOWED
    }

    /// `ACTION_*` of the decision.
    #[inline(always)]
    pub fn action(&self) -> u32 {
        if self.denies() {
            ACTION_DENY
        } else {
            ACTION_ALLOW
        }
    }
}

/// The active slot and its settings. `None` until userspace has written a complete policy.
#[inline(always)]
pub fn active() -> Option<(u32, SlotConfig)> {
    let slot = *ACTIVE_SLOT.get(0)? & 1;
    let cfg = *SLOT_CONFIG.get(slot)?;
    if cfg.valid == 0 {
        return None;
    }
    Some((slot, cfg))
}

/// The decision `action` of rule `rule_id` makes under the slot settings `cfg`, from the tables.
#[inline(always)]
pub fn decide(cfg: &SlotConfig, action: u32, rule_id: u32) -> Decision {
    let verdict = if action != ACTION_DENY {
        VERDICT_ALLOWED
    } else if cfg.mode == MODE_ENFORCE {
        VERDICT_BLOCKED
    } else {
        VERDICT_WOULD_BLOCK
    };
    Decision {
        verdict,
        rule_id,
        generation: cfg.generation,
        mode: cfg.mode,
        origin: ORIGIN_TABLES,
    }
}

/// Judges an IPv4 destination (network byte order).
#[inline(always)]
pub fn judge_v4(addr: [u8; 4]) -> Decision {
    judge_by(FAMILY_IPV4, v4_daddr(addr), |slot| {
        lookup(&POLICY_V4_0, &POLICY_V4_1, slot, addr)
    })
}

/// Judges `addr` of `family` (as `BindingKey` holds it): by its live domain binding when the
/// active slot has domain rules, else by the entry `lookup` finds in the active slot's trie
/// (the slot's default when there is none).
#[inline(always)]
fn judge_by(
    family: u32,
    addr: [u8; 16],
    lookup: impl FnOnce(u32) -> Option<PolicyValue>,
) -> Decision {
    match active() {
        None => unconfigured(),
        Some((slot, cfg)) => {
            if cfg.domain_rules != 0
                && let Some(d) = bound(slot, &cfg, family, addr)
            {
                return d;
            }
            match lookup(slot) {
                Some(v) => decide(&cfg, v.action, v.rule_id),
                None => decide(&cfg, cfg.default_action, RULE_DEFAULT),
            }
        }
    }
}

/// The decision of `addr`'s live binding in slot `slot` (whose settings are `cfg`): a live
/// deny binding denies, else a live allow binding allows; `None` without a live binding of the
/// slot's generation.
#[inline(always)]
fn bound(slot: u32, cfg: &SlotConfig, family: u32, addr: [u8; 16]) -> Option<Decision> {
    let key = BindingKey {
        addr,
        family,
        reserved: 0,
    };
    let b = binding(bindings(slot), &key)?;
    if b.generation != cfg.generation {
        return None;
    }
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let (action, rule) = if b.deny_until_ns > now {
        (ACTION_DENY, b.deny_rule)
    } else if b.allow_until_ns > now {
        (ACTION_ALLOW, b.allow_rule)
    } else {
        return None;
    };
    let mut d = decide(cfg, action, rule);
    d.origin = ORIGIN_DOMAIN;
    Some(d)
}

/// The bindings map of slot `slot`.
#[inline(always)]
pub fn bindings(slot: u32) -> &'static LruHashMap<BindingKey, Binding> {
    if slot == 0 { &BINDINGS_0 } else { &BINDINGS_1 }
}

#[inline(always)]
fn binding(map: &LruHashMap<BindingKey, Binding>, key: &BindingKey) -> Option<Binding> {
    // SAFETY: the value is copied out at once.
    unsafe { map.get(key) }.copied()
}

/// The entry for `addr` (a whole address of one family) in slot `slot`'s trie of that family,
/// `slot0` and `slot1` being the family's tries (`slot` is the one `active()` returned,
/// so settings and tries come from the same policy).
#[inline(always)]
fn lookup<const N: usize>(
    slot0: &LpmTrie<[u8; N], PolicyValue>,
    slot1: &LpmTrie<[u8; N], PolicyValue>,
    slot: u32,
    addr: [u8; N],
) -> Option<PolicyValue> {
    let key = Key::new(N as u32 * 8, addr);
    let hit = if slot == 0 {
        slot0.get(&key)
    } else {
        slot1.get(&key)
    };
    hit.copied()
}

/// How an IPv6 destination was judged.
#[derive(Clone, Copy)]
pub struct V6Judgement {
    /// The decision.
    pub decision: Decision,
    /// `V4_FORM_*`: [`V4_FORM_NONE`] when the IPv6 address itself decided, else the form of the
    /// IPv4 address (`v4`) that decided.
    pub form: u32,
    /// The IPv4 address that decided (network byte order), when `form` is not
    /// [`V4_FORM_NONE`].
    pub v4: [u8; 4],
}

impl V6Judgement {
    /// The family and address (as in `ConnectEvent::daddr`) of the address that decided for
    /// the IPv6 destination `addr`: the IPv4 one for an IPv4 address in IPv6 form.
    #[inline(always)]
    pub fn named(&self, addr: &[u8; 16]) -> (u32, [u8; 16]) {
        if self.form == V4_FORM_NONE {
            (FAMILY_IPV6, *addr)
        } else {
            (FAMILY_IPV4, v4_daddr(self.v4))
        }
    }
}

/// The family and address (as `ConnectEvent::daddr` holds it) by which a destination `addr`
/// (IPv6 when `v6`, else IPv4 in the first four bytes) is judged first: an IPv4 address in IPv6
/// form as IPv4, as the stored verdicts name it.
#[inline(always)]
pub fn judged_first(v6: bool, addr: [u8; 16]) -> (u32, [u8; 16]) {
    if !v6 {
        return (FAMILY_IPV4, addr);
    }
    match embedded_ipv4(&addr) {
        Some((v4, _)) => (FAMILY_IPV4, v4_daddr(v4)),
        None => (FAMILY_IPV6, addr),
    }
}

/// An IPv4 address (network byte order) as `ConnectEvent::daddr` holds it: in the first four
/// bytes.
#[inline(always)]
pub fn v4_daddr(v4: [u8; 4]) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[..4].copy_from_slice(&v4);
    d
}

/// Judges an IPv6 destination (network byte order). An IPv4 address in IPv6 form (see
/// [`embedded_ipv4`]) is judged as that IPv4 address: IPv4-mapped addresses only by it, the
/// forms that leave as IPv6 (NAT64, 6to4, compatible, translated) first by an IPv6 deny rule
/// that covers them, then by it. `policy check --explain` judges the same way.
#[inline(always)]
pub fn judge_v6(addr: [u8; 16]) -> V6Judgement {
    if let Some((v4, form)) = embedded_ipv4(&addr) {
        if form != V4_FORM_MAPPED
            && let Some((slot, cfg)) = active()
            && let Some(v) = lookup_v6(slot, &addr)
            && v.action == ACTION_DENY
        {
            return V6Judgement {
                decision: decide(&cfg, v.action, v.rule_id),
                form: V4_FORM_NONE,
                v4: [0; 4],
            };
        }
        return V6Judgement {
            decision: judge_v4(v4),
            form,
            v4,
        };
    }
    V6Judgement {
        decision: judge_by(FAMILY_IPV6, addr, |slot| lookup_v6(slot, &addr)),
        form: V4_FORM_NONE,
        v4: [0; 4],
    }
}

/// The entry of slot `slot`'s IPv6 trie for `addr`.
#[inline(always)]
fn lookup_v6(slot: u32, addr: &[u8; 16]) -> Option<PolicyValue> {
    lookup(&POLICY_V6_0, &POLICY_V6_1, slot, *addr)
}

/// Judges the source `addr` (of `family`, as in `ConnectEvent::daddr`) of traffic arriving at
/// the target by the active slot's inbound tries. Sources are judged as they arrive: an IPv6
/// address by the IPv6 rules (an IPv4-mapped one, which only a dual-stack socket shows, by the
/// IPv4 rules). The tries always hold the inbound default as `/0` entries, so a miss means the
/// slot was not written by the daemon: denied (fail closed). Returns the family and address
/// judged with the decision.
#[inline(always)]
pub fn judge_inbound(family: u32, addr: [u8; 16]) -> (u32, [u8; 16], Decision) {
    let (family, addr) = match embedded_ipv4(&addr) {
        Some((v4, V4_FORM_MAPPED)) if family == FAMILY_IPV6 => (FAMILY_IPV4, v4_daddr(v4)),
        _ => (family, addr),
    };
    let Some((slot, cfg)) = active() else {
        return (family, addr, unconfigured());
    };
    let hit = if family == FAMILY_IPV4 {
        lookup(
            &INBOUND_V4_0,
            &INBOUND_V4_1,
            slot,
            [addr[0], addr[1], addr[2], addr[3]],
        )
    } else {
        lookup(&INBOUND_V6_0, &INBOUND_V6_1, slot, addr)
    };
    let d = match hit {
        Some(v) => decide(&cfg, v.action, v.rule_id),
        None => decide(&cfg, ACTION_DENY, RULE_NO_POLICY),
    };
    (family, addr, d)
}

/// A denial that does not come from the policy's tables (e.g. an IPv6 routing header).
#[inline(always)]
pub fn deny_with(rule_id: u32) -> Decision {
    match active() {
        Some((_, cfg)) => decide(&cfg, ACTION_DENY, rule_id),
        None => unconfigured(),
    }
}

/// Set to 1 by userspace when it loads the programs for enforce mode (`.rodata`, fixed at
/// load): with no valid policy slot they then deny instead of allowing.
#[unsafe(no_mangle)]
static ENFORCE_WITHOUT_POLICY: u32 = 0;

/// No valid policy slot: userspace writes a policy before it attaches any program, so this is
/// only reached if the maps were emptied or tampered with. Programs loaded for enforce mode
/// deny (fail closed); monitor programs let traffic through.
#[inline(always)]
fn unconfigured() -> Decision {
    // SAFETY: a plain read of a static the loader may have rewritten before load.
    let enforcing = unsafe { core::ptr::read_volatile(&ENFORCE_WITHOUT_POLICY) } != 0;
    Decision {
        verdict: if enforcing {
            VERDICT_BLOCKED
        } else {
            VERDICT_ALLOWED
        },
        rule_id: RULE_NO_POLICY,
        generation: 0,
        mode: if enforcing {
            MODE_ENFORCE
        } else {
            MODE_MONITOR
        },
        origin: ORIGIN_TABLES,
    }
}

/// Adds one to a per-CPU statistic.
#[inline(always)]
pub fn bump_stat(index: u32) {
    if let Some(p) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU value, this program is the only writer on this CPU right now.
        unsafe { *p += 1 };
    }
}
