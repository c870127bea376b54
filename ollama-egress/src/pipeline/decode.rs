//! Turning kernel [`ConnectEvent`]s into [`EventRecord`]s.

use std::{
    collections::VecDeque,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use ollama_egress_common::{COMM_LEN, ConnectEvent, FAMILY_IPV4};
use ollama_egress_geo::GeoDb;
use time::OffsetDateTime;

use super::names::{LearnedAnswer, NamesTable};
use crate::{
    logstore::EventRecord,
    model::{Direction, Family, Hook, Mode, UnknownKernelValue, Verdict, Via, proto_name, rule},
};

/// Converts `bpf_ktime_get_boot_ns()` stamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct BootClock {
    /// Wall-clock nanoseconds at boot (realtime minus boottime, sampled once).
    wall_at_boot_ns: i128,
}

impl BootClock {
    /// Samples the offset between `CLOCK_REALTIME` and `CLOCK_BOOTTIME` now.
    pub fn now() -> Self {
        let boot = clock_ns(libc::CLOCK_BOOTTIME);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Self {
            wall_at_boot_ns: real - boot,
        }
    }

    /// A clock with a fixed offset (for tests).
    pub fn with_offset(wall_at_boot_ns: i128) -> Self {
        Self { wall_at_boot_ns }
    }

    /// Wall-clock time of a boot-time stamp.
    pub fn wall(&self, boot_ns: u64) -> OffsetDateTime {
        let ns = self.wall_at_boot_ns + i128::from(boot_ns);
        // Seconds and nanoseconds in 64-bit steps (until 2262): a 128-bit division per event
        // showed in the profile.
        let at = match i64::try_from(ns) {
            Ok(ns) => OffsetDateTime::from_unix_timestamp(ns.div_euclid(1_000_000_000))
                .ok()
                .and_then(|t| {
                    t.replace_nanosecond(ns.rem_euclid(1_000_000_000) as u32)
                        .ok()
                }),
            Err(_) => OffsetDateTime::from_unix_timestamp_nanos(ns).ok(),
        };
        at.unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

/// `CLOCK_BOOTTIME` now, in nanoseconds: the clock of `bpf_ktime_get_boot_ns()`.
pub fn boot_now_ns() -> u64 {
    u64::try_from(clock_ns(libc::CLOCK_BOOTTIME)).unwrap_or(0)
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// What the decoder needs to know about one policy generation.
#[derive(Clone, Debug)]
pub struct GenerationInfo {
    /// The generation number the kernel stamps on events.
    pub generation: u32,
    /// Rule names, indexed by rule id.
    pub rules: Arc<Vec<String>>,
    /// The mode the generation was loaded in.
    pub mode: Mode,
}

/// Generations kept for events still in flight after a reload.
const KEPT_GENERATIONS: usize = 8;

/// Decodes events, naming rules by the policy generation that decided them.
pub struct Decoder {
    clock: BootClock,
    generations: VecDeque<GenerationInfo>,
    geo: Option<Arc<GeoDb>>,
    names: NamesTable,
    /// Boot time of the last expiry sweep of `names`.
    swept_ns: u64,
    /// The target container's name, stamped on every event.
    container: Option<String>,
}

/// How often expired names are swept out of the table, at most.
const SWEEP_NS: u64 = 1_000_000_000;

impl Decoder {
    /// A decoder with no generation yet; add one with [`Decoder::push_generation`].
    pub fn new(clock: BootClock, geo: Option<Arc<GeoDb>>) -> Self {
        Self {
            clock,
            generations: VecDeque::new(),
            geo,
            names: NamesTable::default(),
            swept_ns: 0,
            container: None,
        }
    }

    /// Names the target's container on every event (`container`), set once at start-up.
    #[must_use]
    pub fn with_container(mut self, container: Option<String>) -> Self {
        self.container = container;
        self
    }

    /// Names another target on the events from now on (a Kubernetes pod's replacement).
    pub fn set_container(&mut self, container: Option<String>) {
        self.container = container;
    }

    /// Makes a newly loaded policy generation known.
    pub fn push_generation(&mut self, info: GenerationInfo) {
        self.generations.push_back(info);
        while self.generations.len() > KEPT_GENERATIONS {
            self.generations.pop_front();
        }
    }

    /// Learns the names of a DNS answer the kernel learned.
    pub fn learn(&mut self, answer: &LearnedAnswer) {
        if answer.at_boot_ns.saturating_sub(self.swept_ns) >= SWEEP_NS {
            self.names.expire(answer.at_boot_ns);
            self.swept_ns = answer.at_boot_ns;
        }
        self.names.learn(answer);
    }

    /// The names learned so far.
    pub fn names(&self) -> &NamesTable {
        &self.names
    }

    /// Forgets the names that expired by `now_ns` (boot time).
    pub fn expire_names(&mut self, now_ns: u64) {
        self.names.expire(now_ns);
        self.swept_ns = now_ns;
    }

    /// Replaces the geo databases used for tagging.
    pub fn set_geo(&mut self, geo: Option<Arc<GeoDb>>) {
        self.geo = geo;
    }

    /// Decodes `ev`; `exe` is the executable path, when known. A verdict the kernel cannot
    /// have sent is an error, never guessed.
    pub fn decode(
        &self,
        ev: &ConnectEvent,
        exe: Option<String>,
    ) -> Result<EventRecord, UnknownKernelValue> {
        let generation = self
            .generations
            .iter()
            .rev()
            .find(|g| g.generation == ev.generation);
        let rule = rule::event_rule(
            ev.rule_id,
            ev.generation,
            generation.map(|g| g.rules.as_slice()),
        );
        let verdict = Verdict::from_kernel(ev.verdict)?;
        let mode = Mode::from_kernel(ev.mode)?;
        let direction = Direction::from_kernel(ev.direction)?;
        let hook = Hook::from_kernel(ev.hook)?;
        let via = Via::from_kernel(ev.v4_form)?;
        // Events of hooks with no address (a device open, a socket option) carry family 0 and
        // are shown as `::`.
        let (family, dst) = if ev.family == FAMILY_IPV4 {
            let a = &ev.daddr;
            (
                Family::Ipv4,
                IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
            )
        } else {
            (Family::Ipv6, IpAddr::V6(Ipv6Addr::from(ev.daddr)))
        };
        let info = self.geo.as_ref().map(|g| g.lookup(dst)).unwrap_or_default();
        let inbound = direction == Direction::Inbound;
        // A source has no name the target looked up.
        let host = if inbound {
            None
        } else {
            self.names.host(dst, &rule, ev.header.ts_boot_ns)
        };
        // Inbound: the kernel's `dport` is the peer's port, `lport` the target's.
        let (dport, src, sport) = if inbound {
            (ev.lport, Some(dst), u16::try_from(ev.dport).ok())
        } else {
            (ev.dport, None, None)
        };
        Ok(EventRecord {
            ts: self.clock.wall(ev.header.ts_boot_ns),
            verdict,
            mode,
            direction,
            pid: ev.pid,
            tid: ev.tid,
            comm: comm_string(&ev.comm),
            exe,
            uid: ev.uid,
            gid: ev.gid,
            proto: proto_name(u8::try_from(ev.protocol).unwrap_or(u8::MAX)),
            family,
            dst,
            dport: u16::try_from(dport).unwrap_or(0),
            host,
            country: info.country,
            asn: info.asn,
            as_org: info.as_org,
            rule,
            container: self.container.clone(),
            hook: Some(hook),
            via,
            src,
            sport,
        })
    }
}

/// The NUL-terminated task name as a string.
fn comm_string(comm: &[u8; COMM_LEN]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// The executable of process `tgid`, best effort (the process may have exited).
pub(super) fn exe_of(tgid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{tgid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests;
