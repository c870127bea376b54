//! What was reported already: one event per (socket, destination, port, policy generation,
//! verdict), shared by the sendmsg hooks, the egress backstop and the device programs, so a
//! destination one of them reported is not reported again by another.

use ollama_egress_common::{DedupKey, DedupValue};

use crate::{maps::DATAGRAM_SEEN, policy::Decision};

/// One (socket, destination, decision) as `DATAGRAM_SEEN` remembers it.
pub struct Seen {
    key: DedupKey,
    value: DedupValue,
}

impl Seen {
    /// The entry of socket `cookie` for `decision` about `daddr`/`dport` of `family` (as in
    /// `ConnectEvent`).
    #[inline(always)]
    pub fn new(cookie: u64, family: u32, daddr: [u8; 16], dport: u32, decision: &Decision) -> Self {
        Seen {
            key: DedupKey {
                cookie,
                daddr,
                dport,
                family,
            },
            value: DedupValue {
                generation: decision.generation,
                verdict: decision.verdict,
            },
        }
    }

    /// Whether this was recorded already.
    #[inline(always)]
    pub fn recorded(&self) -> bool {
        // SAFETY: the value is copied out before any update of the map.
        let seen = unsafe { DATAGRAM_SEEN.get(self.key) }.copied();
        seen == Some(self.value)
    }

    /// Records it.
    #[inline(always)]
    pub fn record(&self) {
        let _ = DATAGRAM_SEEN.insert(self.key, self.value, 0);
    }

    /// Records it unless it was recorded already: whether it is new.
    #[inline(always)]
    pub fn first(&self) -> bool {
        if self.recorded() {
            return false;
        }
        self.record();
        true
    }
}
