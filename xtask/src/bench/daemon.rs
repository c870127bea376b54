//! A running `ollama-egress run` for the bench ([`Daemon`], stopped and detached on drop) and
//! [`detach`].

use std::{
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::sys::{ChildGuard, check_interrupted};

/// Options of one `ollama-egress run`.
pub struct DaemonSpec<'a> {
    /// `--enforce` or `--monitor`.
    pub enforce: bool,
    /// The client cgroup.
    pub cgroup: &'a Path,
    /// Policy file.
    pub policy: &'a Path,
    /// Country and ASN databases.
    pub geo: (&'a Path, &'a Path),
    /// Log directory (fresh).
    pub log_dir: PathBuf,
    /// bpffs pin directory (fresh, removed on drop).
    pub pin_dir: PathBuf,
}

/// A running `ollama-egress run`; on drop it is stopped with SIGTERM and its pins are removed
/// with `ollama-egress detach` (enforce mode leaves them attached on purpose).
pub struct Daemon {
    child: Option<ChildGuard>,
    bin: PathBuf,
    /// Its log directory.
    pub log_dir: PathBuf,
    pin_dir: PathBuf,
    stderr: PathBuf,
    metrics_port: u16,
}

impl Daemon {
    /// Starts the daemon and waits until `<log-dir>/state.json` names its pid.
    pub fn start(bin: &Path, spec: DaemonSpec<'_>) -> anyhow::Result<Self> {
        fs::create_dir_all(&spec.log_dir)?;
        let stderr = spec.log_dir.with_extension("stderr");
        let metrics = free_port()?;
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg(if spec.enforce {
                "--enforce"
            } else {
                "--monitor"
            })
            .arg("--cgroup")
            .arg(spec.cgroup)
            .arg("--policy")
            .arg(spec.policy)
            .arg("--geo-db")
            .arg(spec.geo.0)
            .arg("--asn-db")
            .arg(spec.geo.1)
            .arg("--log-dir")
            .arg(&spec.log_dir)
            .arg("--pin-dir")
            .arg(&spec.pin_dir)
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{metrics}"))
            .env("OLLAMA_EGRESS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr)?)
            // Its own process group: Ctrl-C reaches the bench, which stops it and detaches.
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            // A bench killed with SIGKILL takes its daemon along (the next run removes the
            // pins it leaves).
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = ChildGuard::spawn(&mut cmd)?;
        let mut d = Self {
            child: Some(child),
            bin: bin.to_owned(),
            log_dir: spec.log_dir,
            pin_dir: spec.pin_dir,
            stderr,
            metrics_port: metrics,
        };
        d.wait_ready()?;
        Ok(d)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let pid = self.pid();
        let end = Instant::now() + Duration::from_secs(120);
        while Instant::now() < end {
            check_interrupted()?;
            if let Some(st) = self.state()
                && st["pid"].as_u64() == Some(u64::from(pid))
            {
                return Ok(());
            }
            if self.child.as_mut().is_none_or(ChildGuard::exited) {
                bail!(
                    "ollama-egress exited before it was ready:\n{}",
                    fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("ollama-egress not ready after 120 s")
    }

    /// The value of one series of its metrics (`name{labels}` exactly as exposed), 0 when
    /// absent.
    pub fn metric(&self, series: &str) -> anyhow::Result<u64> {
        use std::io::{Read as _, Write as _};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
            .context("connecting to the daemon's metrics")?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        c.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut text = String::new();
        c.read_to_string(&mut text)
            .context("reading the daemon's metrics")?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, ChildGuard::pid)
    }

    /// The parsed `state.json`.
    pub fn state(&self) -> Option<serde_json::Value> {
        let text = fs::read_to_string(self.log_dir.join("state.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Stops it and removes its pins.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take()
            && !c.stop(Duration::from_secs(30))
        {
            eprintln!(
                "warning: ollama-egress did not stop cleanly:\n{}",
                fs::read_to_string(&self.stderr).unwrap_or_default()
            );
        }
        if self.pin_dir.exists() {
            detach(&self.bin, &self.pin_dir);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `ollama-egress detach --pin-dir DIR`, warning on failure.
pub fn detach(bin: &Path, pin_dir: &Path) {
    let out = Command::new(bin)
        .arg("detach")
        .arg("--pin-dir")
        .arg(pin_dir)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => eprintln!(
            "warning: detach {}: {}",
            pin_dir.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => eprintln!("warning: detach {}: {e}", pin_dir.display()),
    }
    if pin_dir.exists() {
        let _ = fs::remove_dir_all(pin_dir);
    }
}

/// A TCP port that was free a moment ago on 127.0.0.1.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
