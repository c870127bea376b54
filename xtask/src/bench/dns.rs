//! Names in the bench: a DNS responder in the bench namespace, a client that asks it for fresh
//! names as fast as it answers, and the learning measurement (answers learned per second, the
//! kernel's and the daemon's CPU per answer).
//!
//! The responder answers every A query with one A record: `127.0.0.1` for [`SERVER_NAME`]
//! (so the bench server's address gets bound to an allowed name), an address of
//! 198.51.100.0/24 for every other name (bound, never connected to). TTL [`ANSWER_TTL_S`].

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::json;

use super::{
    configs::Stage,
    daemon::Daemon,
    kstats,
    load::{run_worker, worker_args},
    sys::cpu_time,
};

/// The responder's address in the bench namespace.
pub const DNS_ADDR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 53);
/// The name the bench server's address (127.0.0.1) is bound to.
pub const SERVER_NAME: &str = "server.bench.test";
/// The suffix of the fresh names the client asks for.
pub const FRESH_SUFFIX: &str = "allowed.bench.test";
/// TTL of every answer, seconds (the daemon's maximum lowers it to its own bound).
pub const ANSWER_TTL_S: u32 = 3600;
/// Deny rules of the domain configuration (names nobody asks for: the trie's size).
pub const DENY_RULES: usize = 1000;

/// The policy lines that the domain configuration adds to a policy whose last table is
/// `[deny]`: `DENY_RULES` denied names, then the allowed server name and fresh suffix.
pub fn policy_domains() -> String {
    let mut s = String::from("domains = [\n");
    for i in 0..DENY_RULES {
        s.push_str(&format!("  \"d{i}.denied.bench.test\",\n"));
    }
    s.push_str("]\n\n[allow]\n");
    s.push_str(&format!(
        "domains = [\"{SERVER_NAME}\", \"*.{FRESH_SUFFIX}\"]\n"
    ));
    s
}

/// Answers A queries on `sock` until the process exits.
pub fn respond(sock: UdpSocket) {
    let mut buf = [0u8; 512];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if let Some(reply) = answer(&buf[..n]) {
            let _ = sock.send_to(&reply, from);
        }
    }
}

/// The response to a query: the question copied, one A record.
pub fn answer(q: &[u8]) -> Option<Vec<u8>> {
    if q.len() < 12 || q[4..6] != [0, 1] {
        return None;
    }
    let mut i = 12;
    let mut name = Vec::new();
    loop {
        let len = usize::from(*q.get(i)?);
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        if !name.is_empty() {
            name.push(b'.');
        }
        name.extend_from_slice(q.get(i + 1..i + 1 + len)?);
        i += 1 + len;
    }
    let end = i + 5; // the root label, QTYPE, QCLASS
    let question = q.get(12..end)?;
    let addr = if name.eq_ignore_ascii_case(SERVER_NAME.as_bytes()) {
        [127, 0, 0, 1]
    } else {
        let h = name
            .iter()
            .fold(0u32, |h, &b| h.wrapping_mul(31) ^ u32::from(b));
        [198, 51, 100, (h % 250) as u8 + 1]
    };
    let mut r = Vec::with_capacity(end + 16);
    r.extend_from_slice(&q[0..2]); // id
    r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    r.extend_from_slice(question);
    r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    r.extend_from_slice(&ANSWER_TTL_S.to_be_bytes());
    r.extend_from_slice(&[0, 4]);
    r.extend_from_slice(&addr);
    Some(r)
}

/// A query for `name` (type A) with message id `id`.
pub fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(name.len() + 18);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The client: asks `server` for fresh names (or `count` times for `name`) with `window`
/// queries in flight, for `secs`; prints the answers and their rate.
pub fn client(
    server: SocketAddrV4,
    secs: f64,
    window: u32,
    name: Option<&str>,
    count: Option<u64>,
) -> anyhow::Result<serde_json::Value> {
    let sock = UdpSocket::bind("0.0.0.0:0").context("binding the DNS client")?;
    sock.connect(server).context("connecting the DNS client")?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    let pid = std::process::id();
    let start = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    let (mut sent, mut answered, mut timeouts) = (0u64, 0u64, 0u64);
    let mut buf = [0u8; 512];
    let want = count.unwrap_or(u64::MAX);
    let ask = |sent: &mut u64| -> anyhow::Result<()> {
        let n = match name {
            Some(n) => n.to_owned(),
            None => format!("q{}-{pid}.{FRESH_SUFFIX}", *sent),
        };
        sock.send(&query(*sent as u16, &n))
            .context("sending a query")?;
        *sent += 1;
        Ok(())
    };
    while sent < u64::from(window).min(want) {
        ask(&mut sent)?;
    }
    while answered < want && (count.is_some() || start.elapsed() < limit) {
        match sock.recv(&mut buf) {
            Ok(_) => {
                answered += 1;
                if sent < want {
                    ask(&mut sent)?;
                }
            }
            Err(_) => {
                // A lost answer: ask again so the window stays full.
                timeouts += 1;
                if timeouts > 20 {
                    bail!("the DNS responder stopped answering ({answered} answers)");
                }
                ask(&mut sent)?;
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(json!({
        "pid": pid,
        "sent": sent,
        "answered": answered,
        "timeouts": timeouts,
        "secs": elapsed,
        "rate": answered as f64 / elapsed,
    }))
}

/// Worker arguments of a client run in the client cgroup.
fn client_args(stage: &Stage, secs: f64, name: Option<&str>, count: Option<u64>) -> Vec<String> {
    let mut args = worker_args("worker-dns", &stage.ns.name, Some(&stage.client.path));
    args.extend([
        "--server".to_owned(),
        DNS_ADDR.to_string(),
        "--secs".to_owned(),
        secs.to_string(),
    ]);
    if let Some(n) = name {
        args.extend(["--name".to_owned(), n.to_owned()]);
    }
    if let Some(c) = count {
        args.extend(["--count".to_owned(), c.to_string()]);
    }
    args
}

/// Looks up [`SERVER_NAME`] from the client cgroup, so the daemon binds the bench server's
/// address to it.
pub fn bind_server_name(stage: &Stage) -> anyhow::Result<()> {
    let out = run_worker(&client_args(stage, 5.0, Some(SERVER_NAME), Some(1)))?;
    if out["answered"].as_u64() != Some(1) {
        bail!("looking up {SERVER_NAME}: {out}");
    }
    Ok(())
}

/// Name learning under a daemon with domain rules.
#[derive(Clone, Debug, Default)]
pub struct Learning {
    /// Answers the client got.
    pub answers: u64,
    /// Answers per second.
    pub rate: f64,
    /// Answers the kernel learned (the daemon's `dns_answers_total{result="learned"}` delta).
    pub learned: u64,
    /// Kernel ns per call of each program that ran.
    pub kernel: Vec<kstats::Cost>,
    /// Daemon CPU per answer, µs.
    pub daemon_us_per_answer: f64,
}

/// One client run of `secs` in the client cgroup under `daemon`.
pub fn measure(stage: &Stage, daemon: &Daemon, secs: f64) -> anyhow::Result<Learning> {
    let learned_before = daemon.metric(r#"ollama_egress_dns_answers_total{result="learned"}"#)?;
    let k_before = kstats::snapshot(&daemon.log_dir)?;
    let cpu_before = cpu_time(daemon.pid()).unwrap_or_default();
    let out = run_worker(&client_args(stage, secs, None, None))?;
    let answers = out["answered"].as_u64().unwrap_or(0);
    // The daemon reads the ring buffer on a short timer: give it a moment to drain.
    let until = Instant::now() + Duration::from_secs(5);
    let mut learned = 0;
    while Instant::now() < until {
        learned = daemon
            .metric(r#"ollama_egress_dns_answers_total{result="learned"}"#)?
            .saturating_sub(learned_before);
        if learned >= answers {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let cpu = cpu_before.until(&cpu_time(daemon.pid()).unwrap_or_default());
    let k_after = kstats::snapshot(&daemon.log_dir)?;
    Ok(Learning {
        answers,
        rate: out["rate"].as_f64().unwrap_or(0.0),
        learned,
        kernel: kstats::delta(&k_before, &k_after),
        daemon_us_per_answer: cpu.as_secs_f64() * 1e6 / answers.max(1) as f64,
    })
}

#[cfg(test)]
mod tests;
