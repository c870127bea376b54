//! Traffic of the target that never meets a cgroup_skb program: AF_PACKET frames (SOCK_RAW and
//! SOCK_DGRAM, IP and non-IP), the outer packets of a VXLAN tunnel, and TUN devices.
//!
//! Layout: namespace `a` holds the daemon (whose devices get the tc programs) and the client in
//! the target cgroup; namespace `b` is the denied host, joined to `a` by a veth pair. A capture
//! on `b`'s end of the pair, outside the cgroup, counts what arrives.

use std::{
    ffi::CString,
    fs::File,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
    os::unix::process::CommandExt as _,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use ollama_egress_tests::{Daemon, NetNs, TestCgroup, probe, require_root, write_policy};
use serde_json::Value;

const DENIED: [u8; 4] = [198, 51, 100, 7];
const ALLOWED: [u8; 4] = [198, 51, 100, 8];
const SOURCE: [u8; 4] = [198, 51, 100, 1];
const POLICY: &str = "default = \"allow\"\n[deny]\ncidrs = [\"198.51.100.7/32\"]\n";
const ETH_P_IP: u16 = 0x0800;
/// IEEE 802 local experimental ethertype: a frame that is not IP.
const ETH_P_LOCAL: u16 = 0x88b5;
const MARKER: &[u8] = b"ollama-egress-device-bypass";
const VXLAN_PORT: u16 = 4789;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ns_fd(ns: &NetNs) -> File {
    File::open(format!("/run/netns/{}", ns.name)).expect("open netns")
}

/// Runs `f` with the calling thread in network namespace `ns`, then returns to the old one.
fn in_netns<T>(ns: &NetNs, f: impl FnOnce() -> T) -> T {
    let old = File::open("/proc/thread-self/ns/net").expect("own netns");
    nix::sched::setns(ns_fd(ns).as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
    let out = f();
    nix::sched::setns(old.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns back");
    out
}

/// The ifindex of `dev` in the calling thread's namespace.
fn if_index(dev: &str) -> u32 {
    let c = CString::new(dev).expect("name");
    // SAFETY: a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert!(i != 0, "no device {dev}");
    i
}

/// A veth pair from `a` (`dev_a`) to `b` (`dev_b`), both up; returns (ifindex in a, MAC in b).
fn veth(a: &NetNs, dev_a: &str, b: &NetNs, dev_b: &str) -> (u32, [u8; 6]) {
    ip(&[
        "-n", &a.name, "link", "add", dev_a, "type", "veth", "peer", "name", dev_b, "netns",
        &b.name,
    ]);
    ip(&["-n", &a.name, "link", "set", dev_a, "up"]);
    ip(&["-n", &b.name, "link", "set", dev_b, "up"]);
    let ifindex = in_netns(a, || if_index(dev_a));
    let out = Command::new("ip")
        .args(["-n", &b.name, "-o", "link", "show", dev_b])
        .output()
        .expect("ip link show");
    let text = String::from_utf8_lossy(&out.stdout);
    let mac = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {text}"));
    let mut m = [0u8; 6];
    for (d, h) in m.iter_mut().zip(mac.split(':')) {
        *d = u8::from_str_radix(h, 16).expect("hex");
    }
    (ifindex, m)
}

/// Namespaces, veth pair, cgroup, policy, and the daemon, which runs in namespace `a`.
struct Setup {
    daemon: Option<Daemon>,
    cg: TestCgroup,
    a: NetNs,
    b: NetNs,
    _tmp: tempfile::TempDir,
    args: Vec<String>,
    ifindex: u32,
    mac_b: [u8; 6],
}

impl Setup {
    fn new(name: &str, mode: &str) -> Self {
        require_root();
        let a = NetNs::new(&format!("{name}a"), &[]);
        let b = NetNs::new(&format!("{name}b"), &[]);
        let (ifindex, mac_b) = veth(&a, "va", &b, "vb");
        ip(&["-n", &a.name, "addr", "add", "198.51.100.1/24", "dev", "va"]);
        ip(&["-n", &b.name, "addr", "add", "198.51.100.7/24", "dev", "vb"]);
        ip(&["-n", &b.name, "addr", "add", "198.51.100.8/24", "dev", "vb"]);
        let cg = TestCgroup::new(name);
        let tmp = tempfile::tempdir().expect("tempdir");
        let policy = write_policy(tmp.path(), POLICY);
        let mut s = Self {
            daemon: None,
            cg,
            a,
            b,
            args: Vec::new(),
            _tmp: tmp,
            ifindex,
            mac_b,
        };
        s.args = vec![
            mode.to_owned(),
            "--cgroup".into(),
            s.cg.path.display().to_string(),
            "--policy".into(),
            policy.display().to_string(),
        ];
        s.start_daemon();
        s
    }

    fn start_daemon(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.daemon = Some(in_netns(&self.a, || Daemon::start(&args)));
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("daemon running")
    }

    /// Frames seen on `b`'s end while `send` runs and for 600 ms after it.
    fn arrivals(&self, dev: &str, send: impl FnOnce(), pred: fn(&[u8]) -> bool) -> usize {
        let capture = Capture::open(&self.b, dev);
        send();
        capture.count(Duration::from_millis(600), pred)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        drop(self.daemon.take());
    }
}

/// A packet socket on a device of namespace `b`, outside the cgroup: what the denied host's
/// wire carries.
struct Capture {
    fd: OwnedFd,
}

impl Capture {
    fn open(ns: &NetNs, dev: &str) -> Self {
        in_netns(ns, || {
            let ifindex = if_index(dev);
            // SAFETY: plain syscalls on a new descriptor owned below.
            unsafe {
                let s = libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    i32::from(0x0003u16.to_be()),
                );
                assert!(
                    s >= 0,
                    "capture socket: {}",
                    std::io::Error::last_os_error()
                );
                let fd = OwnedFd::from_raw_fd(s);
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_protocol = 0x0003u16.to_be();
                sll.sll_ifindex = ifindex as i32;
                let r = libc::bind(
                    s,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(r, 0, "bind capture: {}", std::io::Error::last_os_error());
                let tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 50_000,
                };
                libc::setsockopt(
                    s,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                );
                Self { fd }
            }
        })
    }

    /// Frames matching `pred` that arrive within `wait`.
    fn count(&self, wait: Duration, pred: fn(&[u8]) -> bool) -> usize {
        let deadline = Instant::now() + wait;
        let mut n = 0;
        let mut buf = vec![0u8; 65_536];
        while Instant::now() < deadline {
            // SAFETY: the buffer and the address are valid for their lengths.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            let r = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            // Only what arrives: not the host's own replies (ICMP errors quote the frame).
            let arrived = from.sll_pkttype != libc::PACKET_OUTGOING;
            if r > 0 && arrived && pred(&buf[..r as usize]) {
                n += 1;
            }
        }
        n
    }
}

fn has_marker(frame: &[u8]) -> bool {
    frame.windows(MARKER.len()).any(|w| w == MARKER)
}

/// A VXLAN packet (UDP to 4789) whose inner frame is IPv4 to 10.9.0.2: the client's, not the
/// kernel's own neighbour or router traffic over the tunnel.
fn is_vxlan(frame: &[u8]) -> bool {
    frame.len() >= 84
        && frame[12..14] == ETH_P_IP.to_be_bytes()
        && frame[23] == 17
        && frame[36..38] == VXLAN_PORT.to_be_bytes()
        && frame[62..64] == ETH_P_IP.to_be_bytes()
        && frame[80..84] == [10, 9, 0, 2]
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 UDP packet to `dst:9` carrying the marker.
fn ipv4_udp(dst: [u8; 4]) -> Vec<u8> {
    let udp_len = 8 + MARKER.len();
    let total = 20 + udp_len;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&SOURCE);
    p.extend_from_slice(&dst);
    let c = checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&9u16.to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(MARKER);
    p
}

/// [`ipv4_udp`] with IP options: a loose source route through `dst` on to the denied host.
fn ipv4_lsrr(dst: [u8; 4]) -> Vec<u8> {
    let plain = ipv4_udp(dst);
    let mut p = plain[..20].to_vec();
    p[0] = 0x47;
    let total = plain.len() + 8;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    // LSRR: type, length, pointer, one address; then end of options.
    p.extend_from_slice(&[0x83, 7, 4]);
    p.extend_from_slice(&DENIED);
    p.push(0);
    p[10..12].copy_from_slice(&[0, 0]);
    let c = checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&plain[20..]);
    p
}

fn ethernet(dst_mac: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = dst_mac.to_vec();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// What a child process does after entering namespace `a` (and the cgroup, when given).
enum Act {
    /// `count` frames on a SOCK_RAW packet socket.
    Raw { frame: Vec<u8> },
    /// `count` packets on a SOCK_DGRAM packet socket (the kernel adds the Ethernet header).
    Dgram { packet: Vec<u8>, ethertype: u16 },
    /// Like `Raw`, with `PACKET_QDISC_BYPASS` set first: the frames go to the driver
    /// without passing the device's qdisc and tc hooks.
    RawQdiscBypass { frame: Vec<u8> },
    /// Make an AF_XDP socket and set up its TX ring (`SOL_XDP`, `XDP_TX_RING`).
    XdpTxRing,
    /// Like `Raw`, after waiting `delay_us` in the cgroup.
    RawAfter { frame: Vec<u8>, delay_us: u32 },
    /// Open the TUN/TAP clone device.
    OpenTun,
    /// Make TUN device `tun0`, bring it up and write `packet` into it five times: the kernel
    /// receives it from the device and forwards it, with no socket of the sender.
    InjectTun { packet: Vec<u8> },
}

/// Forks a child that enters namespace `ns`, joins `cgroup` (if given) and acts; returns 0 or
/// the errno of the first failure. Only system calls run in the child.
fn child(ns: &NetNs, cgroup: Option<&Path>, ifindex: u32, mac: [u8; 6], act: &Act) -> i32 {
    let netns = ns_fd(ns);
    let procs = cgroup.map(|c| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(c.join("cgroup.procs"))
            .expect("cgroup.procs")
    });
    let tun = CString::new("/dev/net/tun").expect("path");
    // SAFETY: between fork and _exit the child only makes system calls on memory prepared
    // before the fork.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let fail = || libc::_exit(*libc::__errno_location());
            if libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                fail();
            }
            if let Some(p) = &procs
                && libc::write(p.as_raw_fd(), b"0\n".as_ptr().cast(), 2) != 2
            {
                fail();
            }
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = ifindex as i32;
            sll.sll_halen = 6;
            sll.sll_addr[..6].copy_from_slice(&mac);
            let (ty, data, proto): (i32, &[u8], u16) = match act {
                Act::Raw { frame } => (libc::SOCK_RAW, frame, ETH_P_IP),
                Act::RawQdiscBypass { frame } => (libc::SOCK_RAW, frame, ETH_P_IP),
                Act::RawAfter { frame, delay_us } => {
                    libc::usleep(*delay_us);
                    (libc::SOCK_RAW, frame, ETH_P_IP)
                }
                Act::Dgram { packet, ethertype } => (libc::SOCK_DGRAM, packet, *ethertype),
                Act::OpenTun => {
                    let fd = libc::open(tun.as_ptr(), libc::O_RDWR);
                    if fd < 0 {
                        fail();
                    }
                    libc::_exit(0);
                }
                Act::XdpTxRing => {
                    let s = libc::socket(libc::AF_XDP, libc::SOCK_RAW, 0);
                    let entries: libc::c_int = 64;
                    if s < 0
                        || libc::setsockopt(
                            s,
                            libc::SOL_XDP,
                            libc::XDP_TX_RING,
                            (&entries as *const libc::c_int).cast(),
                            std::mem::size_of::<libc::c_int>() as u32,
                        ) != 0
                    {
                        fail();
                    }
                    libc::_exit(0);
                }
                Act::InjectTun { packet } => {
                    let fd = libc::open(tun.as_ptr(), libc::O_RDWR);
                    if fd < 0 {
                        fail();
                    }
                    let mut ifr: libc::ifreq = std::mem::zeroed();
                    for (d, c) in ifr.ifr_name.iter_mut().zip(b"tun0") {
                        *d = *c as libc::c_char;
                    }
                    ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as i16;
                    if libc::ioctl(fd, libc::TUNSETIFF, &mut ifr) != 0 {
                        fail();
                    }
                    let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
                    ifr.ifr_ifru.ifru_flags = libc::IFF_UP as i16;
                    if s < 0 || libc::ioctl(s, libc::SIOCSIFFLAGS, &mut ifr) != 0 {
                        fail();
                    }
                    for _ in 0..5 {
                        if libc::write(fd, packet.as_ptr().cast(), packet.len()) < 0 {
                            fail();
                        }
                        libc::usleep(100_000);
                    }
                    libc::_exit(0);
                }
            };
            sll.sll_protocol = proto.to_be();
            let s = libc::socket(libc::AF_PACKET, ty, 0);
            if s < 0 {
                fail();
            }
            if let Act::RawQdiscBypass { .. } = act {
                let one: libc::c_int = 1;
                if libc::setsockopt(
                    s,
                    libc::SOL_PACKET,
                    libc::PACKET_QDISC_BYPASS,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                ) != 0
                {
                    fail();
                }
            }
            // Every frame is sent; the first error is the result (a frame dropped at the
            // device makes sendto fail with ENOBUFS).
            let mut first_err = 0;
            for _ in 0..5 {
                let r = libc::sendto(
                    s,
                    data.as_ptr().cast(),
                    data.len(),
                    0,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                if r < 0 && first_err == 0 {
                    first_err = *libc::__errno_location();
                }
                libc::usleep(20_000);
            }
            libc::_exit(first_err);
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        assert!(libc::WIFEXITED(status), "child status {status}");
        libc::WEXITSTATUS(status)
    }
}

/// Five SOCK_RAW and five SOCK_DGRAM frames to `dst`, from `cgroup` (or outside any target):
/// `(raw, dgram)` arrivals. A frame dropped at the device fails `sendto` with ENOBUFS: the
/// sender sees that error exactly when nothing arrives.
fn send_both(s: &Setup, cgroup: Option<&Path>, dst: [u8; 4]) -> (usize, usize) {
    let raw = Act::Raw {
        frame: ethernet(s.mac_b, ETH_P_IP, &ipv4_udp(dst)),
    };
    let dgram = Act::Dgram {
        packet: ipv4_udp(dst),
        ethertype: ETH_P_IP,
    };
    let mut counts = [0; 2];
    for (i, act) in [raw, dgram].iter().enumerate() {
        let mut errno = -1;
        counts[i] = s.arrivals(
            "vb",
            || errno = child(&s.a, cgroup, s.ifindex, s.mac_b, act),
            has_marker,
        );
        let expected = if counts[i] == 0 { libc::ENOBUFS } else { 0 };
        assert_eq!(
            errno, expected,
            "sendto's error with {} arrivals",
            counts[i]
        );
    }
    (counts[0], counts[1])
}

fn device_events(d: &Daemon, verdict: &str, rule: &str) -> Vec<Value> {
    d.wait_events(1, |e| e["verdict"] == verdict && e["rule"] == rule)
}

#[test]
fn packet_socket_frames_to_a_denied_host_are_dropped_at_the_device() {
    let s = Setup::new("oe-dev-pkt", "--enforce");
    let (raw, dgram) = send_both(&s, Some(&s.cg.path), DENIED);
    assert_eq!(
        (raw, dgram),
        (0, 0),
        "AF_PACKET frames (SOCK_RAW, SOCK_DGRAM) from the cgroup reached the denied host"
    );
    let ev = device_events(s.daemon(), "blocked", "deny.cidrs:198.51.100.7/32");
    assert!(
        ev.iter()
            .any(|e| e["dst"] == "198.51.100.7" && e["dport"] == 9),
        "a blocked event for the denied host: {:?}",
        s.daemon().events()
    );
    // Only the target is judged, and only denied destinations are dropped.
    assert_eq!(send_both(&s, None, DENIED), (5, 5), "outside the cgroup");
    assert_eq!(
        send_both(&s, Some(&s.cg.path), ALLOWED),
        (5, 5),
        "allowed host"
    );
}

#[test]
fn non_ip_frames_of_the_target_are_dropped_in_enforce_mode() {
    let s = Setup::new("oe-dev-nonip", "--enforce");
    let frame = ethernet(s.mac_b, ETH_P_LOCAL, MARKER);
    let mut errno = 0;
    let got = s.arrivals(
        "vb",
        || {
            let act = Act::Raw {
                frame: frame.clone(),
            };
            errno = child(&s.a, Some(&s.cg.path), s.ifindex, s.mac_b, &act);
        },
        has_marker,
    );
    assert_eq!(got, 0, "a non-IP frame from the cgroup left the device");
    assert_eq!(errno, libc::ENOBUFS, "the dropped frame fails sendto");
    assert!(
        !device_events(s.daemon(), "blocked", "device-non-ip").is_empty(),
        "a blocked event for the non-IP frame: {:?}",
        s.daemon().events()
    );
    // A VLAN-tagged frame carrying IPv4 to the denied host is judged by its IP destination.
    let mut tagged = ethernet(s.mac_b, 0x8100, &[0, 5]);
    tagged.extend_from_slice(&ETH_P_IP.to_be_bytes());
    tagged.extend_from_slice(&ipv4_udp(DENIED));
    let mut errno = 0;
    let got = s.arrivals(
        "vb",
        || {
            let act = Act::Raw { frame: tagged };
            errno = child(&s.a, Some(&s.cg.path), s.ifindex, s.mac_b, &act);
        },
        has_marker,
    );
    assert_eq!(
        got, 0,
        "a VLAN-tagged frame to the denied host left the device"
    );
    assert_eq!(errno, libc::ENOBUFS, "the dropped frame fails sendto");
    // A source route through an allowed host on to the denied one.
    let mut errno = 0;
    let got = s.arrivals(
        "vb",
        || {
            let act = Act::Raw {
                frame: ethernet(s.mac_b, ETH_P_IP, &ipv4_lsrr(ALLOWED)),
            };
            errno = child(&s.a, Some(&s.cg.path), s.ifindex, s.mac_b, &act);
        },
        has_marker,
    );
    assert_eq!(got, 0, "a source-routed frame left the device");
    assert_eq!(errno, libc::ENOBUFS, "the dropped frame fails sendto");
    assert!(
        !device_events(s.daemon(), "blocked", "device-ip-options").is_empty(),
        "a blocked event for the source-routed frame: {:?}",
        s.daemon().events()
    );
}

#[test]
fn packet_sockets_of_the_target_may_not_bypass_the_device_hooks() {
    let s = Setup::new("oe-dev-qbp", "--enforce");
    let mut errno = -1;
    let got = s.arrivals(
        "vb",
        || {
            let act = Act::RawQdiscBypass {
                frame: ethernet(s.mac_b, ETH_P_IP, &ipv4_udp(DENIED)),
            };
            errno = child(&s.a, Some(&s.cg.path), s.ifindex, s.mac_b, &act);
        },
        has_marker,
    );
    assert_eq!(
        got, 0,
        "frames sent with PACKET_QDISC_BYPASS reached the denied host"
    );
    assert_eq!(
        errno,
        libc::EPERM,
        "PACKET_QDISC_BYPASS is refused to the target"
    );
    assert!(
        !device_events(s.daemon(), "blocked", "device-bypass-option").is_empty(),
        "a blocked event: {:?}",
        s.daemon().events()
    );
    assert_eq!(
        child(&s.a, Some(&s.cg.path), 0, [0; 6], &Act::XdpTxRing),
        libc::EPERM,
        "AF_XDP rings are refused to the target"
    );
    assert_eq!(
        child(&s.a, None, 0, [0; 6], &Act::XdpTxRing),
        0,
        "outside the target"
    );
    // Outside the target the option stays available.
    let act = Act::RawQdiscBypass {
        frame: ethernet(s.mac_b, ETH_P_IP, &ipv4_udp(DENIED)),
    };
    assert_eq!(child(&s.a, None, s.ifindex, s.mac_b, &act), 0);
}

#[test]
fn monitor_mode_records_packet_socket_frames_and_drops_nothing() {
    let s = Setup::new("oe-dev-mon", "--monitor");
    assert_eq!(send_both(&s, Some(&s.cg.path), DENIED), (5, 5));
    let ev = device_events(s.daemon(), "would_block", "deny.cidrs:198.51.100.7/32");
    assert!(
        ev.iter().any(|e| e["dst"] == "198.51.100.7"),
        "a would_block event: {:?}",
        s.daemon().events()
    );
}

#[test]
fn devices_created_after_the_start_are_judged_too() {
    let s = Setup::new("oe-dev-new", "--enforce");
    let (ifindex2, mac2) = veth(&s.a, "va2", &s.b, "vb2");
    // The watcher looks once a second.
    thread::sleep(Duration::from_millis(2500));
    let mut errno = 0;
    let got = s.arrivals(
        "vb2",
        || {
            let act = Act::Raw {
                frame: ethernet(mac2, ETH_P_IP, &ipv4_udp(DENIED)),
            };
            errno = child(&s.a, Some(&s.cg.path), ifindex2, mac2, &act);
        },
        has_marker,
    );
    assert_eq!(
        got, 0,
        "frames on a device created after the start got through"
    );
    assert_eq!(errno, libc::ENOBUFS, "the dropped frame fails sendto");
}

#[test]
fn a_target_process_in_another_network_namespace_is_judged_at_its_devices() {
    // As in a container: the target's process lives in a namespace of its own (`c`), whose
    // device leads to the denied host.
    let s = Setup::new("oe-dev-ns", "--enforce");
    let c = NetNs::new("oe-dev-nsc", &[]);
    let (ifindex_c, mac) = veth(&c, "vc", &s.b, "vb3");
    let mut errno = 0;
    let got = s.arrivals(
        "vb3",
        || {
            // The watcher finds the namespace within a second of the process joining.
            let act = Act::RawAfter {
                frame: ethernet(mac, ETH_P_IP, &ipv4_udp(DENIED)),
                delay_us: 2_500_000,
            };
            errno = child(&c, Some(&s.cg.path), ifindex_c, mac, &act);
        },
        has_marker,
    );
    assert_eq!(
        got, 0,
        "frames of the target's own namespace reached the denied host"
    );
    assert_eq!(errno, libc::ENOBUFS, "the dropped frame fails sendto");
    assert!(
        !device_events(s.daemon(), "blocked", "deny.cidrs:198.51.100.7/32").is_empty(),
        "a blocked event: {:?}",
        s.daemon().events()
    );
    // The links of a namespace that is gone are released, also from the pins.
    let pins = s.daemon().pin_dir.join("links");
    let count = || {
        std::fs::read_dir(&pins)
            .expect("links dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("tcx_"))
            .count()
    };
    let with_c = count();
    drop(c);
    thread::sleep(Duration::from_millis(2500));
    assert_eq!(count(), with_c - 2, "the pins of c's lo and vc are removed");
}

#[test]
fn device_enforcement_is_pinned_and_removed_by_detach() {
    let mut s = Setup::new("oe-dev-pin", "--enforce");
    let pin_dir = s.daemon().pin_dir.clone();
    assert!(
        std::fs::read_dir(pin_dir.join("links"))
            .expect("links dir")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("tcx_")),
        "tcx links are pinned"
    );
    // The daemon stops; enforcement at the devices stays.
    let mut d = s.daemon.take().expect("daemon");
    assert!(d.stop(), "daemon stopped cleanly");
    assert_eq!(
        send_both(&s, Some(&s.cg.path), DENIED),
        (0, 0),
        "after the stop"
    );
    // A restarted daemon adopts the pinned device links.
    s.daemon = Some(in_netns(&s.a, || {
        d.restart(&s.args.iter().map(String::as_str).collect::<Vec<_>>())
    }));
    assert_eq!(
        send_both(&s, Some(&s.cg.path), DENIED),
        (0, 0),
        "after the restart"
    );
    let mut d2 = s.daemon.take().expect("daemon");
    assert!(d2.stop());
    ollama_egress_tests::detach(&d2.pin_dir);
    assert!(!d2.pin_dir.exists(), "detach removed the pins");
    assert_eq!(
        send_both(&s, Some(&s.cg.path), DENIED),
        (5, 5),
        "detach removed the device programs too"
    );
    assert_eq!(
        child(&s.a, Some(&s.cg.path), 0, [0; 6], &Act::OpenTun),
        0,
        "detach removed the TUN guard"
    );
    assert_eq!(
        child(&s.a, Some(&s.cg.path), 0, [0; 6], &Act::XdpTxRing),
        0,
        "detach removed the socket option guard"
    );
}

#[test]
fn vxlan_outer_packets_to_a_denied_host_are_dropped() {
    vxlan_outer_packets_dropped("oe-dev-vx", None);
}

/// The inner socket first tried to connect to the tunnel's denied remote: the verdict it keeps
/// about that host (a refusal) must not let the outer packets through.
#[test]
fn vxlan_outer_packets_are_dropped_when_the_inner_socket_was_refused_the_remote() {
    vxlan_outer_packets_dropped("oe-dev-vxr", Some("198.51.100.7:4789"));
}

/// Sends five datagrams to an allowed host behind a VXLAN tunnel whose remote is denied (after
/// a `connect()` of the socket to `connect_first`), and checks that none reach the remote.
fn vxlan_outer_packets_dropped(name: &str, connect_first: Option<&str>) {
    let s = Setup::new(name, "--enforce");
    // The tunnel is made by a process in the cgroup (CAP_NET_ADMIN); its remote is the
    // denied host, its inner network an allowed one.
    let netns = ns_fd(&s.a);
    let procs = s.cg.path.join("cgroup.procs");
    let in_cgroup = |args: &[&str]| {
        let netns = netns.as_raw_fd();
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(&procs)
            .expect("cgroup.procs");
        let procs_fd = procs.as_raw_fd();
        let mut cmd = Command::new("ip");
        cmd.args(args);
        // SAFETY: only system calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(netns, libc::CLONE_NEWNET) != 0
                    || libc::write(procs_fd, b"0\n".as_ptr().cast(), 2) != 2
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().expect("ip in the cgroup");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    in_cgroup(&[
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        "42",
        "remote",
        "198.51.100.7",
        "local",
        "198.51.100.1",
        "dstport",
        "4789",
        "dev",
        "va",
    ]);
    in_cgroup(&["addr", "add", "10.9.0.1/24", "dev", "vx0"]);
    in_cgroup(&["link", "set", "vx0", "up"]);
    in_cgroup(&[
        "neigh",
        "add",
        "10.9.0.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        "vx0",
    ]);
    let got = s.arrivals(
        "vb",
        || {
            let cgroup = s.cg.path.display().to_string();
            let mut args = vec![
                "--netns",
                &s.a.name,
                "--cgroup",
                &cgroup,
                "udp",
                "10.9.0.2:9",
                "--count",
                "5",
            ];
            if let Some(first) = connect_first {
                args.extend(["--connect-first", first]);
            }
            let p = probe(&args);
            assert!(p.ok(), "the inner destination is allowed: {}", p.json);
        },
        is_vxlan,
    );
    assert_eq!(
        got, 0,
        "VXLAN packets from the cgroup reached the denied host"
    );
    assert!(
        !device_events(s.daemon(), "blocked", "deny.cidrs:198.51.100.7/32").is_empty(),
        "a blocked event for the tunnel's remote: {:?}",
        s.daemon().events()
    );
}

/// Forwarding in namespace `a`, so that a packet injected through a TUN device goes on to
/// the denied host; the packet comes from 10.8.0.2 (the far end of the tunnel).
fn forward_from_tun(s: &Setup) -> Vec<u8> {
    for key in [
        "ipv4.ip_forward",
        "ipv4.conf.all.rp_filter",
        "ipv4.conf.default.rp_filter",
    ] {
        let value = if key.ends_with("forward") { "1" } else { "0" };
        let out = Command::new("ip")
            .args(["netns", "exec", &s.a.name, "sysctl", "-qw"])
            .arg(format!("net.{key}={value}"))
            .output()
            .expect("sysctl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut p = ipv4_udp(DENIED);
    p[12..16].copy_from_slice(&[10, 8, 0, 2]);
    p[10..12].copy_from_slice(&[0, 0]);
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

#[test]
fn tun_injection_with_forwarding_is_refused_in_enforce_mode() {
    let s = Setup::new("oe-dev-tunf", "--enforce");
    let packet = forward_from_tun(&s);
    let mut errno = -1;
    let got = s.arrivals(
        "vb",
        || {
            let act = Act::InjectTun { packet };
            errno = child(&s.a, Some(&s.cg.path), 0, [0; 6], &act);
        },
        has_marker,
    );
    assert_eq!(
        got, 0,
        "packets injected through TUN reached the denied host"
    );
    assert_eq!(errno, libc::EPERM, "opening /dev/net/tun is refused");
}

#[test]
fn tun_injection_in_monitor_mode_goes_through_and_is_recorded() {
    let s = Setup::new("oe-dev-tunfm", "--monitor");
    let packet = forward_from_tun(&s);
    let got = s.arrivals(
        "vb",
        || {
            let act = Act::InjectTun { packet };
            assert_eq!(child(&s.a, Some(&s.cg.path), 0, [0; 6], &act), 0);
        },
        has_marker,
    );
    assert_eq!(
        got, 5,
        "monitor mode refuses nothing: the injection is forwarded"
    );
    assert!(
        !device_events(s.daemon(), "would_block", "tun-device").is_empty(),
        "a would_block event: {:?}",
        s.daemon().events()
    );
}

#[test]
fn the_target_cannot_open_the_tun_device_in_enforce_mode() {
    let s = Setup::new("oe-dev-tun", "--enforce");
    assert_eq!(
        child(&s.a, Some(&s.cg.path), 0, [0; 6], &Act::OpenTun),
        libc::EPERM,
        "opening /dev/net/tun from the cgroup"
    );
    assert!(
        !device_events(s.daemon(), "blocked", "tun-device").is_empty(),
        "a blocked event: {:?}",
        s.daemon().events()
    );
    assert_eq!(
        child(&s.a, None, 0, [0; 6], &Act::OpenTun),
        0,
        "outside the cgroup"
    );
    drop(s);
    let m = Setup::new("oe-dev-tunm", "--monitor");
    assert_eq!(
        child(&m.a, Some(&m.cg.path), 0, [0; 6], &Act::OpenTun),
        0,
        "monitor mode refuses nothing"
    );
    assert!(
        !device_events(m.daemon(), "would_block", "tun-device").is_empty(),
        "a would_block event: {:?}",
        m.daemon().events()
    );
}

#[test]
fn a_guard_detached_behind_the_daemons_back_is_reported() {
    let s = Setup::new("oe-dev-ver", "--enforce");
    let pin = s.daemon().pin_dir.join("links").join("tun_open");
    let link = ollama_egress::loader::sys::obj_get(&pin).expect("pinned tun_open link");
    ollama_egress::loader::sys::link_detach(link.as_fd()).expect("detach");
    // The daemon checks the attachment every 2 s.
    let deadline = Instant::now() + Duration::from_secs(6);
    let reported = loop {
        let text = s.daemon().stderr_text();
        if text.contains("no longer attached") && text.contains("tun_open") {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        thread::sleep(Duration::from_millis(200));
    };
    assert!(
        reported,
        "the daemon reports the missing guard:\n{}",
        s.daemon().stderr_text()
    );
}
