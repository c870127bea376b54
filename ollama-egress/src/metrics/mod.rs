//! Prometheus metrics: the series listed below (the README's "Metrics, the Grafana dashboard,
//! alerts" shows them in use) and the `/metrics` endpoint.
//!
//! [`Metrics`] owns a private registry with every series of the contract:
//!
//! | series | type | labels | fed by |
//! |---|---|---|---|
//! | `ollama_egress_connections_total` | counter | `direction`, `verdict`, `proto`, `country` | [`Metrics::observe_event`] |
//! | `ollama_egress_inbound_decisions_total` | counter | — | [`Metrics::set_kernel`] |
//! | `ollama_egress_inbound_unreported_total` | counter | — | [`Metrics::set_kernel`] |
//! | `ollama_egress_packets_total` | counter | `direction`, `verdict` | [`Metrics::set_kernel`] |
//! | `ollama_egress_bytes_total` | counter | `direction`, `verdict` | [`Metrics::set_kernel`] |
//! | `ollama_egress_events_lost_total` | counter | — | [`Metrics::set_kernel`] |
//! | `ollama_egress_policy_prefixes` | gauge | `family`, `action` | [`Metrics::set_policy`] |
//! | `ollama_egress_policy_reloads_total` | counter | `result` | [`Metrics::reload`] |
//! | `ollama_egress_enforcing` | gauge | — | [`Metrics::set_enforcing`] |
//! | `ollama_egress_build_info` | gauge | `version` | [`Metrics::new`] |
//! | `ollama_egress_dns_answers_total` | counter | `result` | [`Metrics::set_kernel`] |
//! | `ollama_egress_dns_bindings` | gauge | — | [`Metrics::set_dns_bindings`] |
//! | `ollama_egress_dns_names_evicted_total` | counter | — | [`Metrics::set_dns_bindings`] |
//!
//! Labels stay bounded: a verdict, a protocol name or number, a direction, a family, an action,
//! a result, or an ISO country code (`unknown` when the geo database has none). Never an
//! address, a port or a pid.
//!
//! Every series except `connections_total` exists from the start (at 0), so dashboards and
//! alert rules have series before the first connection; `connections_total` series appear with
//! their first event.
//!
//! The kernel's counters arrive as absolute, CPU-summed snapshots. They are exported as
//! counters holding the kernel's value; should the kernel's value ever fall (the maps were
//! recreated), the exported counter carries on from where it was instead of going down.
//!
//! [`serve`] answers `GET /metrics` over plain HTTP/1.1 on a listener bound with [`bind`]
//! (which applies [`check_bind_address`]: loopback only unless `--metrics-allow-remote`).

mod series;
mod server;

#[cfg(test)]
mod tests;

use std::sync::{Mutex, PoisonError};

use ollama_egress_common::{DIRECTION_COUNT, VERDICT_COUNT};
use prometheus::{
    Encoder as _, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use server::{
    DEFAULT_ADDR, HEAD_LIMIT, IO_TIMEOUT, MAX_CONNECTIONS, bind, check_bind_address, serve,
};

use crate::{
    loader::CounterSnapshot,
    logstore::EventRecord,
    model::{Action, Direction, Family, Verdict},
    policy::PolicySummary,
};

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The label value for a destination whose country is not known.
pub const UNKNOWN_COUNTRY: &str = "unknown";

/// Errors of the metrics module.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The prometheus crate refused a metric (a bad name or a duplicate) or could not encode
    /// the registry.
    #[error("prometheus metrics: {0}")]
    Prometheus(#[from] prometheus::Error),
    /// The rendered text was not UTF-8 (the encoder never produces that; kept for safety).
    #[error("the rendered metrics are not UTF-8: {0}")]
    Utf8(#[from] std::string::FromUtf8Error),
    /// The metrics address is not a loopback address and remote access was not allowed.
    #[error(
        "refusing to serve metrics on {addr}: it is not a loopback address; the endpoint shows what Ollama connects to, so it stays on 127.0.0.1/::1 unless you pass --metrics-allow-remote"
    )]
    NotLoopback {
        /// The address asked for.
        addr: std::net::SocketAddr,
    },
    /// The metrics listener could not be bound.
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Label value of a kernel direction index (`DIRECTION_*`).
pub fn direction_name(direction: u32) -> &'static str {
    Direction::label_of_kernel(direction)
}

/// Label value of a kernel verdict index (`VERDICT_*`), the same strings as the event log's
/// `verdict`.
pub fn verdict_name(verdict: u32) -> &'static str {
    Verdict::label_of_kernel(verdict)
}

/// One kernel counter exported as a Prometheus counter: the kernel's absolute value plus what
/// was carried over from before any fall of the kernel's value.
#[derive(Clone, Copy, Debug, Default)]
struct Absolute {
    base: u64,
    last: u64,
}

impl Absolute {
    /// Takes the kernel's new value; returns the exported total.
    fn update(&mut self, kernel: u64) -> u64 {
        if kernel < self.last {
            self.base = self.base.saturating_add(self.last);
        }
        self.last = kernel;
        self.base.saturating_add(kernel)
    }
}

const D: usize = DIRECTION_COUNT as usize;
const V: usize = VERDICT_COUNT as usize;

/// What the last kernel snapshot left behind, so each new one can be turned into increments.
#[derive(Debug, Default)]
struct KernelState {
    packets: [[Absolute; V]; D],
    bytes: [[Absolute; V]; D],
    events_lost: Absolute,
    dns_answers: [Absolute; 3],
    inbound: [Absolute; 2],
}

/// The `result` labels of `ollama_egress_dns_answers_total`, in [`CounterSnapshot::dns_answers`]
/// order.
pub const DNS_RESULTS: [&str; 3] = ["learned", "ignored", "malformed"];

/// Sets `counter` to `total` (which never falls below the counter's value).
fn raise_to(counter: &IntCounter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

/// The daemon's metrics. `Send + Sync`: share it with an `Arc`.
pub struct Metrics {
    registry: Registry,
    connections: IntCounterVec,
    /// `connections` series by typed labels, for [`Metrics::observe_event`].
    series: Mutex<series::SeriesCache>,
    packets: [[IntCounter; V]; D],
    bytes: [[IntCounter; V]; D],
    events_lost: IntCounter,
    kernel: Mutex<KernelState>,
    policy_prefixes: IntGaugeVec,
    reloads_success: IntCounter,
    reloads_error: IntCounter,
    enforcing: IntGauge,
    dns_answers: [IntCounter; 3],
    inbound: [IntCounter; 2],
    dns_bindings: IntGauge,
    dns_evicted: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every series; `version` is the `build_info` label (the crate version).
    pub fn new(version: &str) -> Result<Self, MetricsError> {
        let registry = Registry::new();

        let connections = IntCounterVec::new(
            Opts::new(
                "ollama_egress_connections_total",
                "Connection decisions (one per connect() or first datagram of a socket; inbound: one per connection attempt or datagram source, within the event rate bound), by direction, verdict, protocol and country of the destination (inbound: of the source).",
            ),
            &["direction", "verdict", "proto", "country"],
        )?;
        let packets_vec = IntCounterVec::new(
            Opts::new(
                "ollama_egress_packets_total",
                "Packets of the target cgroup seen by the kernel programs, by direction and verdict.",
            ),
            &["direction", "verdict"],
        )?;
        let bytes_vec = IntCounterVec::new(
            Opts::new(
                "ollama_egress_bytes_total",
                "Bytes (IP packet length) of the target cgroup seen by the kernel programs, by direction and verdict.",
            ),
            &["direction", "verdict"],
        )?;
        let events_lost = IntCounter::new(
            "ollama_egress_events_lost_total",
            "Connection events the kernel could not hand to the daemon because the ring buffer was full.",
        )?;
        let policy_prefixes = IntGaugeVec::new(
            Opts::new(
                "ollama_egress_policy_prefixes",
                "Prefixes in the kernel policy tables, by address family and action.",
            ),
            &["family", "action"],
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "ollama_egress_policy_reloads_total",
                "Policy reloads (SIGHUP), by result; on error the previous policy stays in force.",
            ),
            &["result"],
        )?;
        let enforcing = IntGauge::new(
            "ollama_egress_enforcing",
            "1 while the enforce programs are verified attached to the target cgroup, else 0.",
        )?;
        let dns_answers_vec = IntCounterVec::new(
            Opts::new(
                "ollama_egress_dns_answers_total",
                "DNS answers arriving at the watched sockets and the resolver cgroup, by result: learned (answered a query they sent), ignored (answered no query: forged, late or unasked), malformed.",
            ),
            &["result"],
        )?;
        let dns_answers = DNS_RESULTS.map(|r| dns_answers_vec.with_label_values(&[r]));
        let dns_bindings = IntGauge::new(
            "ollama_egress_dns_bindings",
            "Live (address, name) bindings the daemon learned from DNS answers.",
        )?;
        let dns_evicted = IntCounter::new(
            "ollama_egress_dns_names_evicted_total",
            "(address, name) bindings the daemon's names table dropped for room before their TTL ran out (their connections then show no host).",
        )?;
        let inbound = [
            IntCounter::new(
                "ollama_egress_inbound_decisions_total",
                "Inbound decisions in the kernel: connection attempts (SYNs) at the target's listeners and datagrams from sources its sockets did not send to.",
            )?,
            IntCounter::new(
                "ollama_egress_inbound_unreported_total",
                "Inbound decisions without an event of their own: repeats (a retransmitted SYN, further datagrams of a source) and decisions over the event rate bound (a SYN flood). Events plus these equal the decisions.",
            )?,
        ];
        let build_info = IntGaugeVec::new(
            Opts::new(
                "ollama_egress_build_info",
                "Always 1; the version label names the running ollama-egress.",
            ),
            &["version"],
        )?;

        let packets = std::array::from_fn(|d| {
            std::array::from_fn(|v| {
                packets_vec.with_label_values(&[direction_name(d as u32), verdict_name(v as u32)])
            })
        });
        let bytes = std::array::from_fn(|d| {
            std::array::from_fn(|v| {
                bytes_vec.with_label_values(&[direction_name(d as u32), verdict_name(v as u32)])
            })
        });
        for family in Family::ALL {
            for action in Action::ALL {
                policy_prefixes
                    .with_label_values(&[family.as_str(), action.as_str()])
                    .set(0);
            }
        }
        let reloads_success = reloads.with_label_values(&["success"]);
        let reloads_error = reloads.with_label_values(&["error"]);
        build_info.with_label_values(&[version]).set(1);

        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(packets_vec))?;
        registry.register(Box::new(bytes_vec))?;
        registry.register(Box::new(events_lost.clone()))?;
        registry.register(Box::new(policy_prefixes.clone()))?;
        registry.register(Box::new(reloads))?;
        registry.register(Box::new(enforcing.clone()))?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(dns_answers_vec))?;
        registry.register(Box::new(dns_bindings.clone()))?;
        registry.register(Box::new(dns_evicted.clone()))?;
        for c in &inbound {
            registry.register(Box::new(c.clone()))?;
        }

        Ok(Self {
            registry,
            connections,
            series: Mutex::default(),
            packets,
            bytes,
            events_lost,
            kernel: Mutex::new(KernelState::default()),
            policy_prefixes,
            reloads_success,
            reloads_error,
            enforcing,
            dns_answers,
            inbound,
            dns_bindings,
            dns_evicted,
        })
    }

    /// Counts one decoded connection event in `connections_total`.
    pub fn observe_event(&self, rec: &EventRecord) {
        self.series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(series::Labels::of(rec), &self.connections)
            .inc();
    }

    /// Takes a snapshot of the kernel's counters (absolute values, summed over CPUs).
    pub fn set_kernel(&self, snap: &CounterSnapshot) {
        let mut state = self.kernel.lock().unwrap_or_else(PoisonError::into_inner);
        for d in 0..D {
            for v in 0..V {
                let c = snap.packets[d][v];
                raise_to(&self.packets[d][v], state.packets[d][v].update(c.packets));
                raise_to(&self.bytes[d][v], state.bytes[d][v].update(c.bytes));
            }
        }
        raise_to(
            &self.events_lost,
            state.events_lost.update(snap.events_lost),
        );
        for (i, n) in snap.dns_answers.iter().enumerate() {
            raise_to(&self.dns_answers[i], state.dns_answers[i].update(*n));
        }
        for (i, n) in snap.inbound.iter().enumerate() {
            raise_to(&self.inbound[i], state.inbound[i].update(*n));
        }
    }

    /// Sets `dns_bindings` (the live (address, name) pairs of the names table) and
    /// `dns_names_evicted_total` (its evictions since start).
    pub fn set_dns_bindings(&self, pairs: usize, evicted: u64) {
        self.dns_bindings
            .set(i64::try_from(pairs).unwrap_or(i64::MAX));
        raise_to(&self.dns_evicted, evicted);
    }

    /// Sets `policy_prefixes` from the policy now in the kernel.
    pub fn set_policy(&self, summary: &PolicySummary) {
        let p = &summary.prefixes;
        for (family, totals) in [(Family::Ipv4, p.ipv4), (Family::Ipv6, p.ipv6)] {
            for (action, n) in [(Action::Allow, totals.allow), (Action::Deny, totals.deny)] {
                self.policy_prefixes
                    .with_label_values(&[family.as_str(), action.as_str()])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
    }

    /// Counts one policy reload, successful or not.
    pub fn reload(&self, ok: bool) {
        if ok {
            self.reloads_success.inc();
        } else {
            self.reloads_error.inc();
        }
    }

    /// Sets `enforcing`: pass `true` only after the kernel confirmed that the enforce programs
    /// are attached to the target cgroup.
    pub fn set_enforcing(&self, on: bool) {
        self.enforcing.set(i64::from(on));
    }

    /// The registry in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> Result<String, MetricsError> {
        let mut buf = Vec::with_capacity(4096);
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8(buf)?)
    }
}
