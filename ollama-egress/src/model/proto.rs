//! [`Proto`]: the IP protocol of an event, as a number and as the name the log stores.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// IP protocol number of TCP.
const TCP: u8 = 6;
/// IP protocol number of UDP.
const UDP: u8 = 17;

/// The `proto` of an event: `tcp`, `udp`, or the IP protocol number in decimal. A log line
/// written by something else may hold any other string; it is kept as it is
/// ([`Proto::Other`]) so a line reads back and prints unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Proto {
    /// An IP protocol number, stored as `tcp`, `udp` or the number.
    Ip(u8),
    /// A string in the log that is not one of the forms above.
    Other(String),
}

/// The [`Proto`] of an IP protocol number: stored as `"tcp"` (6), `"udp"` (17), otherwise the
/// number in decimal.
pub fn proto_name(ipproto: u8) -> Proto {
    Proto::Ip(ipproto)
}

impl Proto {
    /// The stored form: `tcp`, `udp`, the number, or the string as read.
    pub fn as_str(&self) -> Cow<'_, str> {
        match self {
            Proto::Ip(TCP) => Cow::Borrowed("tcp"),
            Proto::Ip(UDP) => Cow::Borrowed("udp"),
            Proto::Ip(n) => Cow::Owned(n.to_string()),
            Proto::Other(s) => Cow::Borrowed(s),
        }
    }

    /// The `proto` label of the metrics: the stored form of a protocol number, `other` for
    /// anything else (the label stays bounded whatever a string holds).
    pub fn metric_label(&self) -> Cow<'_, str> {
        match self {
            Proto::Ip(_) => self.as_str(),
            Proto::Other(_) => Cow::Borrowed(super::kinds::OTHER_LABEL),
        }
    }

    /// The protocol of a stored form: `tcp`, `udp` and a number written as this type writes it
    /// become [`Proto::Ip`], anything else [`Proto::Other`].
    pub fn parse(s: &str) -> Proto {
        match s {
            "tcp" => Proto::Ip(TCP),
            "udp" => Proto::Ip(UDP),
            _ => match s.parse::<u8>() {
                Ok(n) if n != TCP && n != UDP && n.to_string() == s => Proto::Ip(n),
                _ => Proto::Other(s.to_owned()),
            },
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl From<&str> for Proto {
    fn from(s: &str) -> Proto {
        Proto::parse(s)
    }
}

impl PartialEq<&str> for Proto {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Proto {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Serialize for Proto {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_str())
    }
}

impl<'de> Deserialize<'de> for Proto {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Proto, D::Error> {
        let text = Cow::<'de, str>::deserialize(d)?;
        Ok(Proto::parse(&text))
    }
}
