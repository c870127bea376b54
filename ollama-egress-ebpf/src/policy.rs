//! The decision shared by every hook: which slot is active, longest-prefix match, verdict.

use aya_ebpf::maps::lpm_trie::Key;
use ollama_egress_common::{
    ACTION_DENY, MODE_ENFORCE, RULE_DEFAULT, RULE_NO_POLICY, SlotConfig, VERDICT_ALLOWED,
    VERDICT_BLOCKED, VERDICT_WOULD_BLOCK,
};

use crate::maps::{
    ACTIVE_SLOT, POLICY_V4_0, POLICY_V4_1, POLICY_V6_0, POLICY_V6_1, SLOT_CONFIG, STATS,
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

#[inline(always)]
fn decide(cfg: &SlotConfig, action: u32, rule_id: u32) -> Decision {
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
    }
}

/// Judges an IPv4 destination (network byte order).
#[inline(always)]
pub fn judge_v4(addr: [u8; 4]) -> Decision {
    let Some((slot, cfg)) = active() else {
        return unconfigured();
    };
    let key = Key::new(32, addr);
    let hit = if slot == 0 {
        POLICY_V4_0.get(&key)
    } else {
        POLICY_V4_1.get(&key)
    };
    match hit {
        Some(v) => decide(&cfg, v.action, v.rule_id),
        None => decide(&cfg, cfg.default_action, RULE_DEFAULT),
    }
}

/// Judges an IPv6 destination (network byte order). IPv4-mapped addresses are judged as IPv4.
#[inline(always)]
pub fn judge_v6(addr: [u8; 16]) -> Decision {
    if let Some(v4) = v4_mapped(&addr) {
        return judge_v4(v4);
    }
    let Some((slot, cfg)) = active() else {
        return unconfigured();
    };
    let key = Key::new(128, addr);
    let hit = if slot == 0 {
        POLICY_V6_0.get(&key)
    } else {
        POLICY_V6_1.get(&key)
    };
    match hit {
        Some(v) => decide(&cfg, v.action, v.rule_id),
        None => decide(&cfg, cfg.default_action, RULE_DEFAULT),
    }
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
    }
}

/// The IPv4 address inside an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`).
#[inline(always)]
pub fn v4_mapped(addr: &[u8; 16]) -> Option<[u8; 4]> {
    let prefix_ok = addr[0] == 0
        && addr[1] == 0
        && addr[2] == 0
        && addr[3] == 0
        && addr[4] == 0
        && addr[5] == 0
        && addr[6] == 0
        && addr[7] == 0
        && addr[8] == 0
        && addr[9] == 0
        && addr[10] == 0xff
        && addr[11] == 0xff;
    if prefix_ok {
        Some([addr[12], addr[13], addr[14], addr[15]])
    } else {
        None
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
