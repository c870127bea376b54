//! `ollama-egress run`.

use std::path::PathBuf;

use clap::Args;

use super::{GeoArgs, TargetArgs};
use crate::{
    daemon::{DnsOptions, RunOptions},
    defaults,
    model::Mode,
    targeting::{
        TargetSpec,
        kube::{self, Selector},
    },
};

/// Options of `run`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["monitor", "enforce"])))]
pub struct RunArgs {
    /// Record every decision, block nothing: denied connections are logged as `would_block`.
    #[arg(long)]
    pub monitor: bool,
    /// Drop denied connections in the kernel (connect() fails at once with EPERM).
    #[arg(long)]
    pub enforce: bool,
    /// What to attach to.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Attach to the pod-level cgroup of the one pod on this Kubernetes node that this label
    /// selector matches (`k=v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, comma-joined),
    /// listed from the API server with the service account's token; a replacement pod is
    /// followed, a restarted container stays judged. Several matching pods on the node: refused
    /// (a daemon guards one pod; narrow the selector); none: it waits. Events name the pod
    /// (`container` = namespace/name).
    #[arg(long, value_name = "SELECTOR", value_parser = parse_selector, group = "target")]
    pub pod_selector: Option<Selector>,
    /// Only pods of this namespace, for --pod-selector (then a Role in it suffices for the
    /// daemon, and pods other namespaces label alike are never candidates). [default: every
    /// namespace]
    #[arg(long, value_name = "NAMESPACE", requires = "pod_selector")]
    pub pod_namespace: Option<String>,
    /// This node's name, for --pod-selector. [env: NODE_NAME, e.g. from the downward API's
    /// spec.nodeName]
    #[arg(long, value_name = "NAME", env = kube::NODE_NAME_ENV, hide_env = true)]
    pub node_name: Option<String>,
    /// The API server, for --pod-selector. [default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT]
    #[arg(long, value_name = "https://HOST:PORT")]
    pub kube_api: Option<String>,
    /// Allow an http:// --kube-api (tests only).
    #[arg(long, hide = true)]
    pub kube_insecure_http: bool,
    /// The service account directory (token, ca.crt), for --pod-selector.
    #[arg(long, value_name = "DIR", hide = true, default_value = kube::api::SERVICE_ACCOUNT_DIR)]
    pub kube_service_account: PathBuf,
    /// Policy file (TOML). [default: /etc/ollama-egress/policy.toml, or the built-in policy
    /// (allow loopback and private ranges, deny the rest) when that file does not exist]
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Geo databases.
    #[command(flatten)]
    pub geo: GeoArgs,
    /// Directory of the event log and the daemon's state.
    #[arg(long, value_name = "DIR", default_value = defaults::LOG_DIR)]
    pub log_dir: PathBuf,
    /// Also write every event on stdout, one JSON line each, exactly as in `events.jsonl`, for a
    /// log collector reading the container's output (Kubernetes, Loki, Elasticsearch). The log
    /// directory is still written (`logs` and `status` read it); the daemon's own messages stay
    /// on stderr. A line that cannot be written on stdout is counted with the log's dropped
    /// records (`status`) and never stops the daemon.
    #[arg(long)]
    pub log_stdout: bool,
    /// Address for the Prometheus metrics endpoint (`/metrics`).
    #[arg(long, value_name = "ADDR", default_value = defaults::METRICS_ADDR)]
    pub metrics_addr: std::net::SocketAddr,
    /// Serve metrics on a non-loopback --metrics-addr. They tell whoever can read them which
    /// countries Ollama talks to and what is blocked: by default only this machine can.
    #[arg(long)]
    pub metrics_allow_remote: bool,
    /// bpffs directory where programs, links and maps are pinned.
    #[arg(long, value_name = "DIR", default_value = defaults::PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Most prefixes each kernel policy table holds (per address family).
    #[arg(long, value_name = "N", default_value_t = ollama_egress_common::DEFAULT_MAX_PREFIXES)]
    pub max_prefixes: u32,
    /// Size of the kernel's event ring buffer in bytes: a power of two, at least 4096. Events
    /// that find it full are counted as lost (`ollama_egress_events_lost_total`).
    #[arg(long, value_name = "BYTES", default_value_t = ollama_egress_common::DEFAULT_RINGBUF_BYTES, value_parser = parse_ring_size)]
    pub event_buffer_bytes: u32,
    /// Also learn names from the DNS answers arriving at this cgroup: a local resolver daemon
    /// that answers Ollama's lookups over a socket (systemd-resolved with nss-resolve), so that
    /// Ollama sends no DNS packet itself. An absolute path or one relative to the cgroup v2
    /// root. [default: the cgroup of systemd-resolved.service when it runs, else none]
    #[arg(long, value_name = "PATH", conflicts_with = "dns_unit")]
    pub dns_cgroup: Option<PathBuf>,
    /// Also learn names from the DNS answers arriving at the cgroup of this systemd unit (the
    /// local resolver, e.g. systemd-resolved.service or dnsmasq.service).
    #[arg(long, value_name = "NAME")]
    pub dns_unit: Option<String>,
    /// A name learned from a DNS answer stays bound to its addresses at least this long,
    /// seconds (a shorter TTL is raised to it). At least 1.
    #[arg(long, value_name = "SECONDS", default_value_t = ollama_egress_common::dns::DEFAULT_DNS_MIN_TTL_S, value_parser = clap::value_parser!(u32).range(1..))]
    pub dns_min_ttl: u32,
    /// A name learned from a DNS answer stays bound to its addresses at most this long,
    /// seconds (a longer TTL is lowered to it). An established connection outlives it.
    #[arg(long, value_name = "SECONDS", default_value_t = ollama_egress_common::dns::DEFAULT_DNS_MAX_TTL_S, value_parser = clap::value_parser!(u32).range(1..))]
    pub dns_max_ttl: u32,
    /// Accepted so that older command lines still parse: --process no longer moves processes
    /// into a managed cgroup.
    #[arg(long, value_name = "NAME", hide = true)]
    pub managed_cgroup: Option<String>,
}

impl RunArgs {
    /// The daemon's options.
    pub fn options(&self) -> RunOptions {
        let target = match &self.pod_selector {
            Some(selector) => TargetSpec::Pod(kube::PodSpec {
                selector: selector.clone(),
                node: self.node_name.clone(),
                namespace: self.pod_namespace.clone(),
                api: kube::ApiSpec {
                    url: self.kube_api.clone(),
                    insecure_http: self.kube_insecure_http,
                    service_account: self.kube_service_account.clone(),
                },
            }),
            None => self.target.spec(),
        };
        RunOptions {
            mode: if self.enforce {
                Mode::Enforce
            } else {
                Mode::Monitor
            },
            target,
            engine_socket: self.target.engine_socket.clone(),
            policy: self.policy.clone(),
            geo_db: self.geo.geo_db.clone(),
            asn_db: self.geo.asn_db.clone(),
            log_dir: self.log_dir.clone(),
            log_stdout: self.log_stdout,
            max_prefixes: self.max_prefixes,
            event_buffer_bytes: self.event_buffer_bytes,
            pin_dir: self.pin_dir.clone(),
            metrics_addr: self.metrics_addr,
            metrics_allow_remote: self.metrics_allow_remote,
            dns: DnsOptions {
                cgroup: self.dns_cgroup.clone(),
                unit: self.dns_unit.clone(),
                min_ttl_s: self.dns_min_ttl,
                max_ttl_s: self.dns_max_ttl,
            },
        }
    }
}

fn parse_selector(s: &str) -> Result<Selector, String> {
    Selector::parse(s).map_err(|e| e.to_string())
}

fn parse_ring_size(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|e| format!("{s:?} is not a number of bytes: {e}"))?;
    if n < 4096 || !n.is_power_of_two() {
        return Err(format!("{n} is not a power of two of at least 4096"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests;
