//! A small bounded cache (CLOCK / second-chance eviction) for lookup results.

use std::collections::HashMap;
use std::hash::Hash;

struct Slot<K, V> {
    key: K,
    value: V,
    referenced: bool,
}

/// A fixed-capacity map that evicts an entry not used since the clock hand last passed it.
///
/// Hits and inserts are O(1) amortised; memory is bounded by `capacity` entries.
pub(crate) struct ClockCache<K, V> {
    capacity: usize,
    slots: Vec<Slot<K, V>>,
    index: HashMap<K, usize>,
    hand: usize,
}

impl<K: Hash + Eq + Copy, V: Clone> ClockCache<K, V> {
    /// A cache holding at most `capacity` entries (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        ClockCache {
            capacity,
            slots: Vec::with_capacity(capacity),
            index: HashMap::with_capacity(capacity),
            hand: 0,
        }
    }

    /// The cached value for `key`, borrowed, marking it recently used.
    pub(crate) fn get(&mut self, key: &K) -> Option<&V> {
        let &i = self.index.get(key)?;
        let slot = &mut self.slots[i];
        slot.referenced = true;
        Some(&slot.value)
    }

    /// Store `value` under `key`, evicting an old entry when full.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        if let Some(&i) = self.index.get(&key) {
            let slot = &mut self.slots[i];
            slot.value = value;
            slot.referenced = true;
            return;
        }
        if self.slots.len() < self.capacity {
            self.index.insert(key, self.slots.len());
            self.slots.push(Slot {
                key,
                value,
                referenced: false,
            });
            return;
        }
        // Every pass over a referenced slot clears its bit, so this ends within two laps.
        loop {
            let slot = &mut self.slots[self.hand];
            if slot.referenced {
                slot.referenced = false;
                self.hand = (self.hand + 1) % self.capacity;
                continue;
            }
            self.index.remove(&slot.key);
            self.index.insert(key, self.hand);
            *slot = Slot {
                key,
                value,
                referenced: false,
            };
            self.hand = (self.hand + 1) % self.capacity;
            return;
        }
    }

    /// Number of cached entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests;
