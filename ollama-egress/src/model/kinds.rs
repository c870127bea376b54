//! The fieldless enums of the vocabulary, each with one string form and its kernel number.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ollama_egress_common as k;
use serde::{Deserialize, Serialize};

/// A string that is not one of an enum's accepted values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {input:?}: expected one of {}", .expected.join(", "))]
pub struct ParseValueError {
    /// What was being parsed (`"verdict"`, `"mode"`, `"family"`).
    pub what: &'static str,
    /// The rejected input.
    pub input: String,
    /// The accepted values.
    pub expected: &'static [&'static str],
}

/// A number from the kernel that is not one of an enum's values (a kernel object built from
/// other sources than this daemon, or a corrupt event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value} from the kernel")]
pub struct UnknownKernelValue {
    /// What was being decoded (`"verdict"`, `"mode"`, ...).
    pub what: &'static str,
    /// The number received.
    pub value: u32,
}

/// Declares a fieldless enum with a fixed string form (serde, `Display`, `as_str()`,
/// `FromStr`) and its kernel number (`to_kernel()`, `kernel_value()`).
macro_rules! vocabulary_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal, {
        $($(#[$vmeta:meta])* $variant:ident => $s:literal = $kernel:expr),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $s)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Every string form, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($s),+];

            /// The string form, as in the log, the metrics and on the command line.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $s),+
                }
            }

            /// The kernel's number for this value (`ollama_egress_common`).
            pub const fn to_kernel(self) -> u32 {
                match self {
                    $($name::$variant => $kernel),+
                }
            }

            /// The value of a kernel number, `None` when it is none of them.
            fn kernel_value(value: u32) -> Option<$name> {
                $(if value == $kernel {
                    return Some($name::$variant);
                })+
                None
            }

            /// [`kernel_value`](Self::kernel_value) as an error that names the number.
            fn kernel_result(value: u32) -> Result<$name, UnknownKernelValue> {
                Self::kernel_value(value).ok_or(UnknownKernelValue { what: $what, value })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseValueError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok($name::$variant),)+
                    _ => Err(ParseValueError { what: $what, input: s.to_owned(), expected: Self::NAMES }),
                }
            }
        }
    };
}

vocabulary_enum!(
    /// What happened to a connection.
    Verdict, "verdict", {
        /// The policy allowed it.
        Allowed => "allowed" = k::VERDICT_ALLOWED,
        /// Enforce mode: the policy denied it and the kernel dropped it.
        Blocked => "blocked" = k::VERDICT_BLOCKED,
        /// Monitor mode: the policy denies it, but it was let through.
        WouldBlock => "would_block" = k::VERDICT_WOULD_BLOCK,
    }
);

vocabulary_enum!(
    /// The daemon's mode.
    Mode, "mode", {
        /// Record and count, block nothing.
        Monitor => "monitor" = k::MODE_MONITOR,
        /// Drop denied traffic in the kernel.
        Enforce => "enforce" = k::MODE_ENFORCE,
    }
);

vocabulary_enum!(
    /// Address family of a destination.
    Family, "family", {
        /// IPv4, IPv4-mapped IPv6 destinations (`::ffff:a.b.c.d`) included: the kernel judges
        /// and reports them as the IPv4 address.
        Ipv4 => "ipv4" = k::FAMILY_IPV4,
        /// IPv6.
        Ipv6 => "ipv6" = k::FAMILY_IPV6,
    }
);

vocabulary_enum!(
    /// Which way a connection goes, seen from the target's processes. Events carry
    /// [`Direction::as_str`]; the packet counters label it [`Direction::metric_label`].
    Direction, "direction", {
        /// The target connects out (egress).
        Outbound => "outbound" = k::DIRECTION_EGRESS,
        /// Someone connects to the target (ingress).
        Inbound => "inbound" = k::DIRECTION_INGRESS,
    }
);

vocabulary_enum!(
    /// What the policy does with traffic to a destination.
    Action, "action", {
        /// Let it through.
        Allow => "allow" = k::ACTION_ALLOW,
        /// Refuse it: drop in enforce mode, record `would_block` in monitor mode.
        Deny => "deny" = k::ACTION_DENY,
    }
);

vocabulary_enum!(
    /// The kernel hook that made a decision.
    Hook, "hook", {
        /// `connect()` of an IPv4 socket.
        Connect4 => "connect4" = k::HOOK_CONNECT4,
        /// `connect()` of an IPv6 socket.
        Connect6 => "connect6" = k::HOOK_CONNECT6,
        /// A datagram with a destination on an IPv4 socket.
        Sendmsg4 => "sendmsg4" = k::HOOK_SENDMSG4,
        /// A datagram with a destination on an IPv6 socket.
        Sendmsg6 => "sendmsg6" = k::HOOK_SENDMSG6,
        /// A packet the cgroup_skb egress backstop judged.
        SkbEgress => "skb-egress" = k::HOOK_SKB_EGRESS,
        /// Traffic arriving at the target, judged by the inbound policy (cgroup_skb ingress).
        SkbIngress => "skb-ingress" = k::HOOK_SKB_INGRESS,
        /// A frame judged at a network device (tc egress).
        DeviceEgress => "device-egress" = k::HOOK_DEVICE_EGRESS,
        /// Opening the TUN/TAP clone device.
        DeviceOpen => "device-open" = k::HOOK_DEVICE_OPEN,
        /// Setting a socket option that bypasses the device programs.
        Sockopt => "sockopt" = k::HOOK_SOCKOPT,
    }
);

vocabulary_enum!(
    /// The form in which an IPv6 destination embedded the IPv4 address it was judged as.
    Via, "via", {
        /// `::ffff:a.b.c.d`.
        Mapped => "mapped" = k::V4_FORM_MAPPED,
        /// `::a.b.c.d`.
        Compatible => "compatible" = k::V4_FORM_COMPATIBLE,
        /// `::ffff:0:a.b.c.d` (SIIT).
        Translated => "translated" = k::V4_FORM_TRANSLATED,
        /// `64:ff9b::/96`.
        Nat64 => "nat64" = k::V4_FORM_NAT64,
        /// `64:ff9b:1::/48`.
        Nat64Local => "nat64-local" = k::V4_FORM_NAT64_LOCAL,
        /// `2002::/16`.
        SixToFour => "6to4" = k::V4_FORM_6TO4,
    }
);

impl Hook {
    /// The hook the kernel reported.
    pub fn from_kernel(value: u32) -> Result<Hook, UnknownKernelValue> {
        Hook::kernel_result(value)
    }
}

impl Via {
    /// The form the kernel reported: `None` for `V4_FORM_NONE` (no embedded address), an error
    /// for a number that is no form.
    pub fn from_kernel(value: u32) -> Result<Option<Via>, UnknownKernelValue> {
        if value == k::V4_FORM_NONE {
            return Ok(None);
        }
        Via::kernel_result(value).map(Some)
    }

    /// The form's name in messages (`policy check --explain`), e.g. `NAT64`.
    pub const fn describe(self) -> &'static str {
        match self {
            Via::Mapped => "IPv4-mapped",
            Via::Compatible => "IPv4-compatible",
            Via::Translated => "IPv4-translated",
            Via::Nat64 => "NAT64",
            Via::Nat64Local => "NAT64 local-use",
            Via::SixToFour => "6to4",
        }
    }
}

impl Verdict {
    /// The verdict the kernel reported; an error for a number that is no verdict (never read
    /// as "blocked" or anything else).
    pub fn from_kernel(value: u32) -> Result<Verdict, UnknownKernelValue> {
        Verdict::kernel_result(value)
    }

    /// The `verdict` label of a kernel counter index: the verdict's string, `other` for a
    /// number that is none.
    pub fn label_of_kernel(value: u32) -> &'static str {
        Verdict::kernel_value(value).map_or(OTHER_LABEL, Verdict::as_str)
    }
}

impl Mode {
    /// The mode the kernel reported.
    pub fn from_kernel(value: u32) -> Result<Mode, UnknownKernelValue> {
        Mode::kernel_result(value)
    }
}

impl Family {
    /// The family the kernel reported (`AF_INET`, `AF_INET6`).
    pub fn from_kernel(value: u32) -> Result<Family, UnknownKernelValue> {
        Family::kernel_result(value)
    }

    /// The family of an address as it appears on the wire.
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }
}

impl Direction {
    /// The direction the kernel reported.
    pub fn from_kernel(value: u32) -> Result<Direction, UnknownKernelValue> {
        Direction::kernel_result(value)
    }

    /// The `direction` label of the packet and byte counters: `egress` or `ingress`.
    pub const fn metric_label(self) -> &'static str {
        match self {
            Direction::Outbound => "egress",
            Direction::Inbound => "ingress",
        }
    }

    /// The `direction` label of a kernel counter index, `other` for a number that is none.
    pub fn label_of_kernel(value: u32) -> &'static str {
        Direction::kernel_value(value).map_or(OTHER_LABEL, Direction::metric_label)
    }
}

impl Action {
    /// Decodes the kernel's encoding; `None` for an unknown value.
    pub fn from_kernel(value: u32) -> Option<Action> {
        Action::kernel_result(value).ok()
    }
}

/// The label value of a kernel number that is none of an enum's values.
pub(crate) const OTHER_LABEL: &str = "other";
