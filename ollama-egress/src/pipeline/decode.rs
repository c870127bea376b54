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
        let mut rec = blank_record();
        self.decode_into(ev, exe.as_deref(), &mut rec)?;
        Ok(rec)
    }

    /// [`decode`](Self::decode) into `rec`, a record kept from the previous event: every field
    /// is written (an exhaustive destructuring, so a new field cannot keep the previous
    /// event's value), the strings into the buffers `rec` already has, so an event costs no
    /// allocation. On an error `rec` is partly written and must not be used.
    pub fn decode_into(
        &self,
        ev: &ConnectEvent,
        exe: Option<&str>,
        rec: &mut EventRecord,
    ) -> Result<(), UnknownKernelValue> {
        let EventRecord {
            ts,
            verdict,
            mode,
            direction,
            pid,
            tid,
            comm,
            exe: rec_exe,
            uid,
            gid,
            proto,
            family,
            dst,
            dport,
            host,
            country,
            asn,
            as_org,
            rule,
            container,
            hook,
            via,
            src,
            sport,
        } = rec;
        let generation = self
            .generations
            .iter()
            .rev()
            .find(|g| g.generation == ev.generation);
        *verdict = Verdict::from_kernel(ev.verdict)?;
        *mode = Mode::from_kernel(ev.mode)?;
        *direction = Direction::from_kernel(ev.direction)?;
        *hook = Some(Hook::from_kernel(ev.hook)?);
        *via = Via::from_kernel(ev.v4_form)?;
        set(
            rule,
            &rule::event_rule(
                ev.rule_id,
                ev.generation,
                generation.map(|g| g.rules.as_slice()),
            ),
        );
        // Events of hooks with no address (a device open, a socket option) carry family 0 and
        // are shown as `::`.
        let (fam, addr) = if ev.family == FAMILY_IPV4 {
            let a = &ev.daddr;
            (
                Family::Ipv4,
                IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
            )
        } else {
            (Family::Ipv6, IpAddr::V6(Ipv6Addr::from(ev.daddr)))
        };
        *family = fam;
        *dst = addr;
        match &self.geo {
            Some(g) => g.lookup_with(addr, |info| {
                set_optional(country, info.country.as_deref());
                *asn = info.asn;
                set_optional(as_org, info.as_org.as_deref());
            }),
            None => {
                *country = None;
                *asn = None;
                *as_org = None;
            }
        }
        let inbound = *direction == Direction::Inbound;
        // A source has no name the target looked up.
        let name = if inbound {
            None
        } else {
            self.names.host(addr, rule, ev.header.ts_boot_ns)
        };
        set_optional(host, name);
        // Inbound: the kernel's `dport` is the peer's port, `lport` the target's.
        let port = if inbound {
            *src = Some(addr);
            *sport = u16::try_from(ev.dport).ok();
            ev.lport
        } else {
            *src = None;
            *sport = None;
            ev.dport
        };
        *dport = u16::try_from(port).unwrap_or(0);
        *ts = self.clock.wall(ev.header.ts_boot_ns);
        *pid = ev.pid;
        *tid = ev.tid;
        set_comm(comm, &ev.comm);
        set_optional(rec_exe, exe);
        *uid = ev.uid;
        *gid = ev.gid;
        *proto = proto_name(u8::try_from(ev.protocol).unwrap_or(u8::MAX));
        set_optional(container, self.container.as_deref());
        Ok(())
    }
}

/// A record to [`Decoder::decode_into`] (every field is overwritten there).
pub fn blank_record() -> EventRecord {
    EventRecord {
        ts: OffsetDateTime::UNIX_EPOCH,
        verdict: Verdict::Allowed,
        mode: Mode::Monitor,
        direction: Direction::Outbound,
        pid: 0,
        tid: 0,
        comm: String::new(),
        exe: None,
        uid: 0,
        gid: 0,
        proto: proto_name(0),
        family: Family::Ipv4,
        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dport: 0,
        host: None,
        country: None,
        asn: None,
        as_org: None,
        rule: String::new(),
        container: None,
        hook: None,
        via: None,
        src: None,
        sport: None,
    }
}

/// `value` into `slot`, in the buffer it has.
fn set(slot: &mut String, value: &str) {
    slot.clear();
    slot.push_str(value);
}

/// `value` into `slot`, in the buffer it has when it has one.
fn set_optional(slot: &mut Option<String>, value: Option<&str>) {
    match (slot.as_mut(), value) {
        (Some(s), Some(v)) => set(s, v),
        (None, Some(v)) => *slot = Some(v.to_owned()),
        (_, None) => *slot = None,
    }
}

/// The NUL-terminated task name into `slot` (invalid UTF-8 replaced, as `from_utf8_lossy`).
fn set_comm(slot: &mut String, comm: &[u8; COMM_LEN]) {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    set(slot, &String::from_utf8_lossy(&comm[..end]));
}

/// The executable of process `tgid`, best effort (the process may have exited).
pub(super) fn exe_of(tgid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{tgid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests;
