//! Turning kernel [`ConnectEvent`]s into [`EventRecord`]s.

use std::{
    collections::VecDeque,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use ollama_egress_common::{COMM_LEN, ConnectEvent, FAMILY_IPV4};
use ollama_egress_geo::GeoDb;
use time::OffsetDateTime;

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
        OffsetDateTime::from_unix_timestamp_nanos(ns).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
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
}

impl Decoder {
    /// A decoder with no generation yet; add one with [`Decoder::push_generation`].
    pub fn new(clock: BootClock, geo: Option<Arc<GeoDb>>) -> Self {
        Self {
            clock,
            generations: VecDeque::new(),
            geo,
        }
    }

    /// Makes a newly loaded policy generation known.
    pub fn push_generation(&mut self, info: GenerationInfo) {
        self.generations.push_back(info);
        while self.generations.len() > KEPT_GENERATIONS {
            self.generations.pop_front();
        }
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
        let info = self.geo.as_ref().map(|g| g.lookup(dst));
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
            dport: u16::try_from(ev.dport).unwrap_or(0),
            host: None,
            country: info.as_ref().and_then(|i| i.country.clone()),
            asn: info.as_ref().and_then(|i| i.asn),
            as_org: info.and_then(|i| i.as_org),
            rule,
            container: None,
            hook: Some(hook),
            via,
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
mod tests {
    use ollama_egress_common::{
        EVENT_KIND_CONNECT, EventHeader, FAMILY_IPV6, HOOK_CONNECT4, MODE_ENFORCE, VERDICT_BLOCKED,
        VERDICT_WOULD_BLOCK,
    };

    use super::*;

    fn event() -> ConnectEvent {
        let mut comm = [0u8; COMM_LEN];
        comm[..6].copy_from_slice(b"ollama");
        let mut daddr = [0u8; 16];
        daddr[..4].copy_from_slice(&[203, 0, 113, 7]);
        ConnectEvent {
            header: EventHeader {
                ts_boot_ns: 1_500_000,
                kind: EVENT_KIND_CONNECT,
                size: ConnectEvent::SIZE as u32,
            },
            tid: 4243,
            pid: 4242,
            uid: 0,
            gid: 0,
            comm,
            family: FAMILY_IPV4,
            protocol: 6,
            dport: 443,
            verdict: VERDICT_BLOCKED,
            rule_id: 1,
            generation: 3,
            hook: HOOK_CONNECT4,
            v4_form: 0,
            daddr,
            mode: MODE_ENFORCE,
            direction: 0,
            lport: 0,
            reserved: 0,
        }
    }

    fn decoder() -> Decoder {
        let mut d = Decoder::new(BootClock::with_offset(1_795_000_000_000_000_000), None);
        d.push_generation(GenerationInfo {
            generation: 3,
            rules: Arc::new(vec!["default".into(), "deny.cidrs:203.0.113.0/24".into()]),
            mode: Mode::Enforce,
        });
        d
    }

    #[test]
    fn decodes_a_blocked_ipv4_connect() {
        let ev = event();
        let bytes = ev.as_bytes().to_vec();
        let back = ConnectEvent::from_bytes(&bytes).expect("decodes");
        let rec = decoder()
            .decode(&back, Some("/usr/bin/ollama".into()))
            .expect("decodes");
        assert_eq!(rec.verdict, Verdict::Blocked);
        assert_eq!(rec.mode, Mode::Enforce);
        assert_eq!(rec.pid, 4242);
        assert_eq!(rec.tid, 4243);
        assert_eq!(rec.comm, "ollama");
        assert_eq!(rec.proto, "tcp");
        assert_eq!(rec.family, Family::Ipv4);
        assert_eq!(rec.dst, "203.0.113.7".parse::<IpAddr>().expect("ip"));
        assert_eq!(rec.dport, 443);
        assert_eq!(rec.rule, "deny.cidrs:203.0.113.0/24");
        assert_eq!(rec.exe.as_deref(), Some("/usr/bin/ollama"));
        assert_eq!(rec.ts.unix_timestamp_nanos(), 1_795_000_000_001_500_000);
        assert_eq!(rec.country, None);
    }

    #[test]
    fn decodes_ipv6_udp_would_block() {
        let mut ev = event();
        ev.family = FAMILY_IPV6;
        ev.daddr = "2001:db8::5".parse::<Ipv6Addr>().expect("ip").octets();
        ev.protocol = 17;
        ev.verdict = VERDICT_WOULD_BLOCK;
        ev.mode = ollama_egress_common::MODE_MONITOR;
        ev.rule_id = 0;
        let rec = decoder().decode(&ev, None).expect("decodes");
        assert_eq!(rec.verdict, Verdict::WouldBlock);
        assert_eq!(rec.mode, Mode::Monitor);
        assert_eq!(rec.family, Family::Ipv6);
        assert_eq!(rec.dst.to_string(), "2001:db8::5");
        assert_eq!(rec.proto, "udp");
        assert_eq!(rec.rule, "default");
    }

    #[test]
    fn unknown_generation_and_rule_are_named_not_guessed() {
        let mut ev = event();
        ev.generation = 99;
        assert_eq!(
            decoder().decode(&ev, None).expect("decodes").rule,
            "rule#1@99"
        );
        ev.generation = 3;
        ev.rule_id = 7;
        assert_eq!(decoder().decode(&ev, None).expect("decodes").rule, "rule#7");
        ev.rule_id = ollama_egress_common::RULE_IPV6_ROUTING_HEADER;
        assert_eq!(
            decoder().decode(&ev, None).expect("decodes").rule,
            "ipv6-routing-header"
        );
        ev.rule_id = ollama_egress_common::RULE_IPV4_SOURCE_ROUTE;
        assert_eq!(
            decoder().decode(&ev, None).expect("decodes").rule,
            "ipv4-source-route"
        );
        ev.generation = 99;
        assert_eq!(
            decoder().decode(&ev, None).expect("decodes").rule,
            "ipv4-source-route"
        );
    }

    #[test]
    fn an_unknown_verdict_is_an_error_not_blocked() {
        let mut ev = event();
        ev.verdict = 7;
        let err = decoder()
            .decode(&ev, None)
            .expect_err("verdict 7 is not a verdict");
        assert_eq!((err.what, err.value), ("verdict", 7), "{err}");
    }

    #[test]
    fn hook_group_and_embedded_form_are_decoded() {
        let mut ev = event();
        ev.gid = 1001;
        ev.hook = ollama_egress_common::HOOK_CONNECT6;
        ev.v4_form = ollama_egress_common::V4_FORM_NAT64;
        let rec = decoder().decode(&ev, None).expect("decodes");
        assert_eq!(rec.gid, 1001);
        assert_eq!(rec.hook, Some(Hook::Connect6));
        assert_eq!(rec.via, Some(Via::Nat64));
        assert_eq!(rec.direction, Direction::Outbound);
        let line = serde_json::to_string(&rec).expect("serialises");
        assert!(
            line.contains(r#""hook":"connect6""#) && line.contains(r#""via":"nat64""#),
            "{line}"
        );
    }

    #[test]
    fn unknown_mode_hook_form_or_direction_are_errors() {
        for (what, set) in [
            (
                "mode",
                (|e: &mut ConnectEvent| e.mode = 9) as fn(&mut ConnectEvent),
            ),
            ("hook", |e| e.hook = 99),
            ("via", |e| e.v4_form = 42),
            ("direction", |e| e.direction = 5),
        ] {
            let mut ev = event();
            set(&mut ev);
            let err = decoder().decode(&ev, None).expect_err(what);
            assert_eq!(err.what, what, "{err}");
        }
    }

    #[test]
    fn rejects_short_or_foreign_bytes() {
        let ev = event();
        assert!(ConnectEvent::from_bytes(&ev.as_bytes()[..40]).is_none());
        let mut other = ev;
        other.header.kind = 77;
        assert!(ConnectEvent::from_bytes(other.as_bytes()).is_none());
    }

    #[test]
    fn comm_without_nul_uses_all_bytes() {
        assert_eq!(comm_string(b"0123456789abcdef"), "0123456789abcdef");
    }
}
