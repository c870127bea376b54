//! The hooks the programs attach to, and what the kernel has attached to a cgroup (aya 0.14
//! has no public query for cgroup_skb and sock_addr programs).

use std::{fs::File, io, os::fd::AsFd as _, path::Path};

use aya::programs::{CgroupSkbAttachType, CgroupSockAddrAttachType};

/// One hook of a cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachPoint {
    /// `cgroup_skb/egress`.
    Egress,
    /// `cgroup_skb/ingress`.
    Ingress,
    /// `cgroup/connect4`.
    Connect4,
    /// `cgroup/connect6`.
    Connect6,
    /// `cgroup/sendmsg4`.
    Sendmsg4,
    /// `cgroup/sendmsg6`.
    Sendmsg6,
    /// `sockops`: marks the connections the target accepts (the inbound guard).
    SockOps,
}

impl AttachPoint {
    /// Every hook, in attach order: the egress backstop first.
    pub const ALL: [Self; 7] = [
        Self::Egress,
        Self::Ingress,
        Self::Connect4,
        Self::Connect6,
        Self::Sendmsg4,
        Self::Sendmsg6,
        Self::SockOps,
    ];

    /// The program's function name in the kernel object.
    pub const fn program_name(self) -> &'static str {
        match self {
            Self::Egress => "egress",
            Self::Ingress => "ingress",
            Self::Connect4 => "connect4",
            Self::Connect6 => "connect6",
            Self::Sendmsg4 => "sendmsg4",
            Self::Sendmsg6 => "sendmsg6",
            Self::SockOps => "accepted",
        }
    }

    /// The cgroup_skb attach type, for the skb hooks.
    pub const fn skb_type(self) -> Option<CgroupSkbAttachType> {
        match self {
            Self::Egress => Some(CgroupSkbAttachType::Egress),
            Self::Ingress => Some(CgroupSkbAttachType::Ingress),
            _ => None,
        }
    }

    /// The sock_addr attach type, for the sock_addr hooks.
    pub const fn sock_addr_type(self) -> Option<CgroupSockAddrAttachType> {
        match self {
            Self::Connect4 => Some(CgroupSockAddrAttachType::Connect4),
            Self::Connect6 => Some(CgroupSockAddrAttachType::Connect6),
            Self::Sendmsg4 => Some(CgroupSockAddrAttachType::UDPSendMsg4),
            Self::Sendmsg6 => Some(CgroupSockAddrAttachType::UDPSendMsg6),
            _ => None,
        }
    }

    /// The kernel's `enum bpf_attach_type` value.
    pub const fn kernel_attach_type(self) -> u32 {
        match self {
            Self::Ingress => 0,   // BPF_CGROUP_INET_INGRESS
            Self::Egress => 1,    // BPF_CGROUP_INET_EGRESS
            Self::Connect4 => 10, // BPF_CGROUP_INET4_CONNECT
            Self::Connect6 => 11, // BPF_CGROUP_INET6_CONNECT
            Self::Sendmsg4 => 14, // BPF_CGROUP_UDP4_SENDMSG
            Self::Sendmsg6 => 15, // BPF_CGROUP_UDP6_SENDMSG
            Self::SockOps => 3,   // BPF_CGROUP_SOCK_OPS
        }
    }
}

/// Ids of the programs attached directly to `cgroup` at `point`.
pub fn attached_program_ids(cgroup: &Path, point: AttachPoint) -> io::Result<Vec<u32>> {
    let dir = File::open(cgroup)?;
    super::sys::prog_query(dir.as_fd(), point.kernel_attach_type())
}
