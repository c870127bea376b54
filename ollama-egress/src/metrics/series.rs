//! The `connections_total` series of recent events, by their typed labels: counting an event
//! finds its counter without building label strings or hashing them (the label lookup cost
//! as much as a tenth of an event's work in the daemon).

use prometheus::{IntCounter, IntCounterVec};

use crate::logstore::EventRecord;
use crate::model::{CountryCode, Direction, OTHER_LABEL, Proto, Verdict};

/// The labels of one `connections_total` series, typed: what the label strings are made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Labels {
    direction: Direction,
    verdict: Verdict,
    /// The IP protocol number; `None` for a protocol string that is none (label `other`).
    proto: Option<u8>,
    /// `None`: no country, or not a valid code (label `unknown`).
    country: Option<CountryCode>,
}

impl Labels {
    pub(super) fn of(rec: &EventRecord) -> Labels {
        Labels {
            direction: rec.direction,
            verdict: rec.verdict,
            proto: match rec.proto {
                Proto::Ip(n) => Some(n),
                Proto::Other(_) => None,
            },
            country: rec
                .country
                .as_deref()
                .and_then(|c| CountryCode::parse(c).ok()),
        }
    }

    /// The series of these labels in `vec` (created at 0 when new).
    fn series(&self, vec: &IntCounterVec) -> IntCounter {
        let proto = match self.proto {
            Some(n) => Proto::Ip(n).metric_label().into_owned(),
            None => OTHER_LABEL.to_owned(),
        };
        let country = self
            .country
            .map_or_else(|| super::UNKNOWN_COUNTRY.to_owned(), String::from);
        vec.with_label_values(&[
            self.direction.as_str(),
            self.verdict.as_str(),
            &proto,
            &country,
        ])
    }

    /// A cheap index into the cache; collisions only cost a lookup in the vector.
    fn slot(&self) -> usize {
        let [a, b] = match self.country {
            Some(c) => c.as_str().as_bytes().try_into().unwrap_or([0, 0]),
            None => [0, 0],
        };
        let mixed = u32::from(a) * 31
            + u32::from(b) * 17
            + u32::from(self.proto.map_or(0x100, u16::from)) * 5
            + self.verdict.to_kernel() * 3
            + self.direction.to_kernel();
        mixed as usize % SLOTS
    }
}

/// Entries of the cache: more than the series a daemon usually has busy at once.
const SLOTS: usize = 64;

/// A direct-mapped cache of series by [`Labels`]. Its counters are the vector's own (a
/// prometheus counter is shared, not copied), so counting through the cache counts in the
/// exported series; nothing removes a `connections_total` series.
pub(super) struct SeriesCache {
    slots: [Option<(Labels, IntCounter)>; SLOTS],
}

impl Default for SeriesCache {
    fn default() -> Self {
        SeriesCache {
            slots: std::array::from_fn(|_| None),
        }
    }
}

impl SeriesCache {
    /// The counter of `labels`, from the cache or from `vec`.
    pub(super) fn get(&mut self, labels: Labels, vec: &IntCounterVec) -> &IntCounter {
        let slot = &mut self.slots[labels.slot()];
        if slot.as_ref().is_some_and(|(cached, _)| *cached != labels) {
            *slot = None;
        }
        &slot.get_or_insert_with(|| (labels, labels.series(vec))).1
    }
}
