//! `--history`: `policy suggest` and `policy replay` over a generated event log of about
//! 1 GiB (wall time and peak RSS of each command, as `/usr/bin/time -v` reports them).
//!
//! The log looks like a monitor log of a busy Ollama host: 60 % of the lines to names (a few
//! fixed ones and 200 storage buckets under one suffix, on 2,000 CDN addresses, `would_block`),
//! 30 % to 5,000 addresses without a name (`allowed`: the stricter policy blocks them), the
//! rest loopback, a private range and inbound connections, and one malformed line in 10,000. Nothing is sent anywhere: the addresses are only text.

use std::{
    fs::File,
    io::{BufWriter, Write as _},
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// One command's run.
#[derive(Debug, Clone)]
pub struct HistoryStat {
    /// What ran, e.g. `policy suggest`.
    pub what: String,
    /// Log size, bytes.
    pub bytes: u64,
    /// Log lines.
    pub lines: u64,
    /// Wall time.
    pub wall: Duration,
    /// Peak RSS (`ru_maxrss`), KiB.
    pub max_rss_kib: u64,
    /// What it printed, in short (entries written, changes found).
    pub output: String,
}

/// The names of the generated log.
const NAMES: [&str; 4] = [
    "registry.ollama.ai",
    "ollama.com",
    "huggingface.co",
    "cdn-lfs.huggingface.co",
];

/// A stricter policy than the log's: names and the private range only.
const STRICT: &str = "default = \"deny\"\n[allow]\ncidrs = [\"127.0.0.0/8\", \"10.0.0.0/8\"]\n\
    domains = [\"registry.ollama.ai\", \"*.r2.cloudflarestorage.com\"]\n";

/// Generates a log of at least `bytes` in `dir`, then times `suggest` and `replay` over it;
/// `dir` is removed afterwards, also on an error.
pub fn measure(bin: &Path, dir: &Path, bytes: u64) -> anyhow::Result<Vec<HistoryStat>> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = run(bin, dir, bytes);
    let _ = std::fs::remove_dir_all(dir);
    result
}

fn run(bin: &Path, dir: &Path, bytes: u64) -> anyhow::Result<Vec<HistoryStat>> {
    let (size, lines) = generate(&dir.join("events.jsonl"), bytes)?;
    let policy = dir.join("strict.toml");
    std::fs::write(&policy, STRICT).context("writing the replay policy")?;
    let suggested = dir.join("suggested.toml");
    let mut out = Vec::new();
    let log_dir = dir.display().to_string();
    let (wall, rss) = timed(
        Command::new(bin)
            .args(["policy", "suggest", "--log-dir", &log_dir])
            .stdout(File::create(&suggested)?),
        &[0],
    )?;
    let text = std::fs::read_to_string(&suggested)?;
    out.push(HistoryStat {
        what: "policy suggest".into(),
        bytes: size,
        lines,
        wall,
        max_rss_kib: rss,
        output: format!("{} entries", text.matches("\", # ").count()),
    });
    let report = dir.join("replay.txt");
    let (wall, rss) = timed(
        Command::new(bin)
            .args(["policy", "replay"])
            .arg(&policy)
            .args(["--log-dir", &log_dir])
            .stdout(File::create(&report)?),
        &[1],
    )?;
    let text = std::fs::read_to_string(&report)?;
    out.push(HistoryStat {
        what: "policy replay (stricter policy)".into(),
        bytes: size,
        lines,
        wall,
        max_rss_kib: rss,
        output: text.lines().last().unwrap_or("").to_owned(),
    });
    Ok(out)
}

/// Runs `cmd` to its end; wall time and peak RSS (KiB). Its exit status must be in `ok`.
fn timed(cmd: &mut Command, ok: &[i32]) -> anyhow::Result<(Duration, u64)> {
    let start = Instant::now();
    let child = cmd.stderr(Stdio::inherit()).spawn().context("spawning")?;
    let pid = libc::pid_t::try_from(child.id()).context("pid")?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to locals; the child is ours and not waited for elsewhere.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    if r != pid {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let exit = std::process::ExitStatus::from_raw(status);
    match exit.code() {
        Some(c) if ok.contains(&c) => {}
        _ => bail!("{cmd:?} ended with {exit}"),
    }
    Ok((wall, u64::try_from(usage.ru_maxrss).unwrap_or(0)))
}

/// Writes the log; its size and line count.
fn generate(path: &PathBuf, bytes: u64) -> anyhow::Result<(u64, u64)> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let (mut size, mut lines, mut x) = (0u64, 0u64, 0x9e37_79b9_7f4a_7c15u64);
    while size < bytes {
        // xorshift: the same log every run.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let ms = lines;
        let ts = format!(
            "2026-11-{:02}T{:02}:{:02}:{:02}.{:03}000Z",
            1 + ms / 86_400_000,
            ms / 3_600_000 % 24,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        );
        let line = if lines % 10_000 == 9_999 {
            format!("{{\"ts\":\"{ts}\",\"verdict\":\"would_b\n")
        } else {
            record(&ts, x)
        };
        w.write_all(line.as_bytes())?;
        size += line.len() as u64;
        lines += 1;
    }
    w.flush()?;
    Ok((size, lines))
}

/// One record line from the random value `x`.
fn record(ts: &str, x: u64) -> String {
    let pick = x % 100;
    let a = (x >> 8) as u32;
    let (verdict, direction, src, dst, host, asn, dport) = match pick {
        0..60 => {
            let host = if pick < 30 {
                format!("b{}.r2.cloudflarestorage.com", a % 200)
            } else {
                NAMES[(a % 4) as usize].to_owned()
            };
            let dst = format!("104.{}.{}.{}", 16 + a % 8, (a >> 3) % 10, (a >> 8) % 25);
            (
                "would_block",
                "outbound",
                None,
                dst,
                Some(host),
                "13335",
                443,
            )
        }
        60..90 => {
            let n = a % 5000;
            let dst = format!("45.{}.{}.{}", n / 250, (n / 50) % 5, n % 50 + 1);
            ("allowed", "outbound", None, dst, None, "null", 443)
        }
        90..94 => (
            "allowed",
            "outbound",
            None,
            "127.0.0.1".into(),
            None,
            "null",
            11434,
        ),
        94..99 => {
            let dst = format!("10.0.{}.{}", a % 4, (a >> 2) % 200 + 1);
            ("allowed", "outbound", None, dst, None, "null", 8080)
        }
        _ => {
            let src = format!("\"src\":\"198.51.100.{}\",\"sport\":40000,", a % 200 + 1);
            (
                "would_block",
                "inbound",
                Some(src),
                "192.0.2.2".into(),
                None,
                "null",
                11434,
            )
        }
    };
    let host = host.map_or("null".to_owned(), |h| format!("\"{h}\""));
    let as_org = if asn == "null" {
        "null"
    } else {
        "\"Cloudflare, Inc.\""
    };
    format!(
        "{{\"ts\":\"{ts}\",\"verdict\":\"{verdict}\",\"mode\":\"monitor\",\"direction\":\"{direction}\",\
         {}\"pid\":4242,\"tid\":4243,\"comm\":\"ollama\",\"exe\":\"/usr/bin/ollama\",\"uid\":998,\
         \"gid\":998,\"proto\":\"tcp\",\"family\":\"ipv4\",\"dst\":\"{dst}\",\"dport\":{dport},\
         \"host\":{host},\"country\":null,\"asn\":{asn},\"as_org\":{as_org},\"rule\":\"default\",\
         \"container\":null,\"hook\":\"connect4\",\"via\":null}}\n",
        src.unwrap_or_default()
    )
}
