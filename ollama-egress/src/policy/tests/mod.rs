//! Unit tests of the policy module (no root needed).

mod compile;
mod domains;
mod inbound;
mod parse;
mod random;

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::{ExpandError, Expander};

/// The example of the module documentation and the task: every list of both sections.
pub(super) const FULL: &str = r#"# example policy
default = "deny"

[allow]
cidrs = ["127.0.0.0/8", "::1/128"]
countries = ["US"]
asns = [13335]

[deny]
cidrs = ["47.0.0.0/8"]
countries = ["CN"]          # ISO 3166 alpha-2
asns = [37963, 45102]
"#;

pub(super) fn net(s: &str) -> IpNet {
    s.parse().expect("test network")
}

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// An in-memory geo database.
#[derive(Default)]
pub(super) struct FakeGeo {
    pub countries: HashMap<String, Vec<IpNet>>,
    pub asns: HashMap<u32, Vec<IpNet>>,
    /// Every lookup fails with a database error.
    pub broken: bool,
}

impl FakeGeo {
    pub fn country(mut self, cc: &str, nets: &[&str]) -> Self {
        self.countries
            .insert(cc.to_string(), nets.iter().map(|n| net(n)).collect());
        self
    }

    pub fn asn(mut self, asn: u32, nets: &[&str]) -> Self {
        self.asns.insert(asn, nets.iter().map(|n| net(n)).collect());
        self
    }

    /// Data for [`FULL`].
    pub fn full() -> Self {
        FakeGeo::default()
            .country("US", &["3.0.0.0/8", "2600::/16"])
            .country(
                "CN",
                &["1.0.1.0/24", "36.0.0.0/8", "47.0.0.0/8", "240e::/20"],
            )
            .asn(13335, &["104.16.0.0/12", "1.1.1.0/24", "2606:4700::/32"])
            .asn(37963, &["47.96.0.0/11", "2408:4000::/22"])
            .asn(45102, &["47.74.0.0/15", "8.208.0.0/12"])
    }
}

impl Expander for FakeGeo {
    fn country_networks(&self, cc: &str) -> Result<Vec<IpNet>, ExpandError> {
        if self.broken {
            return Err(ExpandError::Database("corrupt country database".into()));
        }
        self.countries.get(cc).cloned().ok_or(ExpandError::Unknown)
    }

    fn asn_networks(&self, asn: u32) -> Result<Vec<IpNet>, ExpandError> {
        if self.broken {
            return Err(ExpandError::Database("corrupt ASN database".into()));
        }
        self.asns.get(&asn).cloned().ok_or(ExpandError::Unknown)
    }
}
