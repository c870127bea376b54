//! The bench's stage (namespace, cgroups, server, prefix sets) and the configurations applied
//! to the client cgroup: ollama-egress enforce/monitor, nftables, iptables + ipset.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{
    daemon::{Daemon, DaemonSpec},
    load::worker_args,
    prefixes::{DENIED_ADDR, PrefixSet, iptables_script},
    sys::{Cgroup, ChildGuard, NAME_PREFIX, NetNs},
};

/// Port of the accept-and-close server.
pub const ACCEPT_PORT: u16 = 7001;
/// Port of the echo server.
pub const ECHO_PORT: u16 = 7002;
/// Port of the UDP sink.
pub const UDP_PORT: u16 = 7003;

/// A configuration of the client cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Config {
    /// ollama-egress --enforce with the CN country set.
    EnforceCn,
    /// ollama-egress --enforce with the 500k synthetic set.
    Enforce500k,
    /// nftables interval sets (CN) + `socket cgroupv2`.
    Nftables,
    /// iptables `-m cgroup --path` + ipset `hash:net` (CN).
    Ipset,
    /// ollama-egress --monitor with the CN set (events on, nothing dropped).
    MonitorCn,
    /// ollama-egress --enforce with the CN set and domain rules, the bench server's address
    /// bound to an allowed name (connects are allowed through the binding).
    EnforceCnDomains,
}

impl Config {
    /// Every configuration, in report order.
    pub const ALL: [Config; 6] = [
        Config::EnforceCn,
        Config::Enforce500k,
        Config::Nftables,
        Config::Ipset,
        Config::MonitorCn,
        Config::EnforceCnDomains,
    ];

    /// Its name in the report.
    pub fn label(self) -> &'static str {
        match self {
            Config::EnforceCn => "ollama-egress enforce, CN",
            Config::Enforce500k => "ollama-egress enforce, 500k",
            Config::Nftables => "nftables, CN",
            Config::Ipset => "iptables + ipset, CN",
            Config::MonitorCn => "ollama-egress monitor, CN",
            Config::EnforceCnDomains => "ollama-egress enforce, CN + domains",
        }
    }

    /// Short tag for file names.
    fn tag(self) -> &'static str {
        match self {
            Config::EnforceCn => "enforce-cn",
            Config::Enforce500k => "enforce-500k",
            Config::Nftables => "nft",
            Config::Ipset => "ipset",
            Config::MonitorCn => "monitor-cn",
            Config::EnforceCnDomains => "enforce-cn-domains",
        }
    }
}

/// Everything the runs share. Fields drop in order: the server, then the cgroups, then the
/// namespace (whose removal also takes any firewall state left in it).
pub struct Stage {
    _server: ChildGuard,
    /// Sibling cgroup with nothing attached: the baseline.
    pub base: Cgroup,
    /// The cgroup every configuration is applied to.
    pub client: Cgroup,
    /// The namespace all traffic stays in.
    pub ns: NetNs,
    /// `target/release/ollama-egress`.
    pub bin: PathBuf,
    /// Scratch directory (policy files, logs), removed at the end.
    pub work: tempdir::Dir,
    /// Country and ASN databases.
    pub geo: (PathBuf, PathBuf),
    /// The synthetic country database of the 500k set.
    pub big_geo: PathBuf,
    /// The CN set.
    pub cn: PrefixSet,
    /// The 500k set.
    pub big: PrefixSet,
    runs: std::cell::Cell<u32>,
}

/// A scratch directory removed on drop.
pub mod tempdir {
    use std::path::{Path, PathBuf};

    /// The directory.
    pub struct Dir(PathBuf);

    impl Dir {
        /// Creates `path` (fresh).
        pub fn new(path: PathBuf) -> std::io::Result<Self> {
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path)?;
            Ok(Self(path))
        }
        /// Its path.
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Stage {
    /// Makes the namespace (only `lo`, with 127.0.0.1 and the denied documentation address),
    /// the two cgroups and the server; writes the policy, nft and ipset files.
    pub fn new(
        bin: PathBuf,
        geo: (PathBuf, PathBuf),
        cn: PrefixSet,
        (big, big_geo): (PrefixSet, PathBuf),
    ) -> anyhow::Result<Self> {
        let tag = format!("{NAME_PREFIX}{}", std::process::id());
        let work = tempdir::Dir::new(std::env::temp_dir().join(&tag))?;
        let ns = NetNs::new(tag.clone(), &[&format!("{DENIED_ADDR}/32")])?;
        let client = Cgroup::new(format!("{tag}-client"))?;
        let base = Cgroup::new(format!("{tag}-base"))?;
        let exe = std::env::current_exe()?;
        let mut args = worker_args("worker-serve", &ns.name, None);
        args.extend([
            "--accept".to_owned(),
            format!("0.0.0.0:{ACCEPT_PORT}"),
            "--echo".to_owned(),
            format!("0.0.0.0:{ECHO_PORT}"),
            "--udp".to_owned(),
            format!("127.0.0.1:{UDP_PORT}"),
            "--dns".to_owned(),
            super::dns::DNS_ADDR.to_string(),
        ]);
        let mut server = ChildGuard::spawn(
            Command::new(exe)
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        )?;
        // The servers bind before printing; give them a moment and check they are alive.
        std::thread::sleep(Duration::from_millis(300));
        if server.exited() {
            bail!("the bench server exited at start");
        }
        let stage = Self {
            _server: server,
            base,
            client,
            ns,
            bin,
            work,
            geo,
            big_geo,
            cn,
            big,
            runs: std::cell::Cell::new(0),
        };
        for (set, file) in [(&stage.cn, "cn"), (&stage.big, "500k")] {
            let dir = stage.work.path();
            fs::write(dir.join(format!("{file}.toml")), set.policy_toml())?;
            fs::write(
                dir.join(format!("{file}.nft")),
                set.nft_script(&stage.client.name),
            )?;
            fs::write(dir.join(format!("{file}.ipset")), set.ipset_restore())?;
        }
        fs::write(
            stage.file("cn-domains.toml"),
            stage.cn.policy_toml() + &super::dns::policy_domains(),
        )?;
        Ok(stage)
    }

    /// Path of a file written by [`Stage::new`]: `cn.toml`, `500k.nft`, …
    pub fn file(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// Starts a daemon on the client cgroup with a fresh log and pin directory and the policy
    /// file `policy` of [`Stage::file`] (the 500k one with its synthetic country database).
    pub fn daemon(&self, enforce: bool, policy: &str, tag: &str) -> anyhow::Result<Daemon> {
        let country = if policy == "500k.toml" {
            &self.big_geo
        } else {
            &self.geo.0
        };
        let policy = self.file(policy);
        let run = self.runs.get() + 1;
        self.runs.set(run);
        let name = format!("{NAME_PREFIX}{}-{run}-{tag}", std::process::id());
        Daemon::start(
            &self.bin,
            DaemonSpec {
                enforce,
                cgroup: &self.client.path,
                policy: &policy,
                geo: (country, &self.geo.1),
                log_dir: self.work.path().join(format!("log-{run}-{tag}")),
                pin_dir: Path::new("/sys/fs/bpf").join(name),
            },
        )
    }

    /// Applies `config` to the client cgroup; undone when the result drops.
    pub fn apply(&self, config: Config) -> anyhow::Result<Applied<'_>> {
        Ok(match config {
            Config::EnforceCn => Applied::Daemon(self.daemon(true, "cn.toml", config.tag())?),
            Config::Enforce500k => Applied::Daemon(self.daemon(true, "500k.toml", config.tag())?),
            Config::MonitorCn => Applied::Daemon(self.daemon(false, "cn.toml", config.tag())?),
            Config::EnforceCnDomains => {
                let d = self.daemon(true, "cn-domains.toml", config.tag())?;
                super::dns::bind_server_name(self)?;
                Applied::Daemon(d)
            }
            Config::Nftables => Applied::Firewall(Firewall::nft(&self.ns, &self.file("cn.nft"))?.0),
            Config::Ipset => Applied::Firewall(
                Firewall::ipset(&self.ns, &self.file("cn.ipset"), &self.client.name)?.0,
            ),
        })
    }
}

/// A configuration in force.
pub enum Applied<'a> {
    /// A running daemon (stopped and detached on drop).
    Daemon(Daemon),
    /// Firewall state in the namespace (removed on drop).
    Firewall(#[allow(dead_code)] Firewall<'a>),
}

/// nftables or iptables/ipset state in the bench namespace, removed on drop.
pub struct Firewall<'a> {
    ns: &'a NetNs,
    undo: String,
}

impl<'a> Firewall<'a> {
    /// Loads an nft script; returns the guard and how long `nft -f` took.
    pub fn nft(ns: &'a NetNs, script: &Path) -> anyhow::Result<(Self, Duration)> {
        let guard = Self {
            ns,
            undo: "nft delete table inet oebench".to_owned(),
        };
        let took = ns
            .sh(&format!("nft -f {}", script.display()))
            .context("loading the nftables set")?;
        Ok((guard, took))
    }

    /// Restores ipsets and adds the iptables rules; returns the guard and how long
    /// `ipset restore` took (the rules take a few milliseconds more).
    pub fn ipset(ns: &'a NetNs, restore: &Path, cgroup: &str) -> anyhow::Result<(Self, Duration)> {
        let undo = iptables_script(cgroup).replace(" -A ", " -D ")
            + "ipset destroy oeb4\nipset destroy oeb6\n";
        let guard = Self { ns, undo };
        let took = ns
            .sh(&format!("ipset restore -file {}", restore.display()))
            .context("loading the ipsets")?;
        ns.sh(&iptables_script(cgroup))
            .context("adding the iptables rules")?;
        Ok((guard, took))
    }
}

impl Drop for Firewall<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.ns.sh(&self.undo) {
            eprintln!("warning: removing firewall state: {e}");
        }
    }
}
