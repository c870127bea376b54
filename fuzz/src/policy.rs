//! Policy parser and compiler checks.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use ollama_egress::policy::{
    Action, CompiledPolicy, ExpandError, Expander, Policy, PolicyError, RuleSet, compile,
};
use ollama_egress_common::{ACTION_ALLOW, ACTION_DENY, RULE_DEFAULT};

/// The origin every fuzzed policy is parsed under.
pub const ORIGIN: &str = "fuzz";

/// What a fake geo database answers for one country or ASN.
#[derive(Debug, Clone)]
pub enum Answer {
    /// These networks (host bits may be set: the compiler must normalise them).
    Nets(Vec<IpNet>),
    /// [`ExpandError::Unknown`].
    Unknown,
    /// [`ExpandError::Database`].
    Broken,
}

impl Answer {
    fn get(&self) -> Result<Vec<IpNet>, ExpandError> {
        match self {
            Answer::Nets(n) => Ok(n.clone()),
            Answer::Unknown => Err(ExpandError::Unknown),
            Answer::Broken => Err(ExpandError::Database("fuzz: corrupt database".into())),
        }
    }
}

/// A geo database in memory: what it does not list is [`ExpandError::Unknown`].
#[derive(Debug, Clone, Default)]
pub struct MapExpander {
    /// Upper-case country code → answer.
    pub countries: HashMap<String, Answer>,
    /// AS number → answer.
    pub asns: HashMap<u32, Answer>,
}

impl Expander for MapExpander {
    fn country_networks(&self, cc: &str) -> Result<Vec<IpNet>, ExpandError> {
        self.countries
            .get(cc)
            .map_or(Err(ExpandError::Unknown), Answer::get)
    }

    fn asn_networks(&self, asn: u32) -> Result<Vec<IpNet>, ExpandError> {
        self.asns
            .get(&asn)
            .map_or(Err(ExpandError::Unknown), Answer::get)
    }
}

/// A fixed, deterministic database for free-form policy text: every country and ASN maps to a
/// few overlapping networks derived from its name, except `ZZ` and ASNs ending in 999
/// (unknown) and `XX` and ASNs ending in 998 (database error).
pub struct DerivedExpander;

impl Expander for DerivedExpander {
    fn country_networks(&self, cc: &str) -> Result<Vec<IpNet>, ExpandError> {
        match cc {
            "ZZ" => return Err(ExpandError::Unknown),
            "XX" => return Err(ExpandError::Database("fuzz: corrupt database".into())),
            _ => {}
        }
        let b = cc.as_bytes();
        let (a, c) = (
            b.first().copied().unwrap_or(0),
            b.get(1).copied().unwrap_or(0),
        );
        let mut nets = vec![
            net4(Ipv4Addr::new(a, c, 0, 0), 16),
            // Inside the /16: redundant, the merge drops it.
            net4(Ipv4Addr::new(a, c, 1, 0), 24),
            // Host bits set: the compiler normalises.
            net4(Ipv4Addr::new(a, c, 3, 77), 24),
            net6(
                Ipv6Addr::new(0x2001, 0xdb8, u16::from_be_bytes([a, c]), 0, 0, 0, 0, 0),
                48,
            ),
            // IPv4-mapped: becomes a.c.2.0/24.
            net6(Ipv4Addr::new(a, c, 2, 0).to_ipv6_mapped(), 120),
        ];
        if c % 3 == 0 {
            // Shared by every country with the same first letter.
            nets.push(net4(Ipv4Addr::new(a, 0, 0, 0), 8));
        }
        if c % 5 == 0 {
            nets.push(net6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32));
        }
        Ok(nets)
    }

    fn asn_networks(&self, asn: u32) -> Result<Vec<IpNet>, ExpandError> {
        match asn % 1000 {
            999 => return Err(ExpandError::Unknown),
            998 => return Err(ExpandError::Database("fuzz: corrupt database".into())),
            _ => {}
        }
        let h = asn.wrapping_mul(0x9E37_79B9);
        let len = u8::try_from(asn % 33).unwrap_or(32);
        let mut nets = vec![net4(Ipv4Addr::from(h), len)];
        if asn.is_multiple_of(2) {
            let v6 = (0x2001_0db8_u128 << 96) | (u128::from(h) << 64);
            nets.push(net6(
                Ipv6Addr::from(v6),
                u8::try_from(asn % 129).unwrap_or(128),
            ));
        }
        if asn.is_multiple_of(7) {
            nets.push(net6(Ipv4Addr::from(h).to_ipv6_mapped(), 96 + len));
        }
        Ok(nets)
    }
}

fn net4(a: Ipv4Addr, len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new(a, len.min(32)).expect("length clamped"))
}

fn net6(a: Ipv6Addr, len: u8) -> IpNet {
    IpNet::V6(Ipv6Net::new(a, len.min(128)).expect("length clamped"))
}

/// Parses `text` and, when it parses, compiles it with and without `expander` and checks every
/// property of the result, probing the verdict of `probes` and of addresses around every
/// network. Returns the compiled policy when there is one.
pub fn check_text(
    text: &str,
    expander: &dyn Expander,
    probes: &[IpAddr],
) -> Option<CompiledPolicy> {
    let policy = match Policy::from_toml_str(text, ORIGIN) {
        Ok(p) => p,
        Err(e) => {
            check_parse_error(text, &e);
            return None;
        }
    };
    check_parsed(&policy);

    // Without a database: country and ASN rules are refused, all of them named.
    let geo_rules: Vec<String> = [(Action::Allow, &policy.allow), (Action::Deny, &policy.deny)]
        .iter()
        .flat_map(|(a, set)| {
            let a = a.as_str();
            set.countries
                .iter()
                .map(move |cc| format!("{a}.countries:{cc}"))
                .chain(set.asns.iter().map(move |n| format!("{a}.asns:{n}")))
        })
        .collect();
    let without = compile(&policy, None);
    match (&without, geo_rules.is_empty()) {
        (Ok(c), true) => check_compiled(&policy, c, &NoExpander, probes),
        (Err(PolicyError::GeoDatabaseMissing { rules, .. }), false) => {
            assert_eq!(rules, &geo_rules, "GeoDatabaseMissing names every geo rule");
        }
        (r, _) => panic!("compile without a database: unexpected {r:?} (geo rules {geo_rules:?})"),
    }

    let compiled = match compile(&policy, Some(expander)) {
        Ok(c) => c,
        Err(e) => {
            let msg = e.to_string();
            match reference_rules(&policy, expander) {
                Err(failing) => {
                    assert!(
                        matches!(
                            e,
                            PolicyError::NotInDatabase { .. } | PolicyError::Expansion { .. }
                        ),
                        "unexpected compile error {e:?}"
                    );
                    assert!(
                        msg.contains(&failing.1),
                        "error {msg:?} should name the first failing rule {failing:?}"
                    );
                }
                Ok(_) => panic!("compile failed ({msg}) though every expansion succeeds"),
            }
            return None;
        }
    };
    check_compiled(&policy, &compiled, expander, probes);
    if geo_rules.is_empty() {
        assert_eq!(
            without.as_ref().ok(),
            Some(&compiled),
            "a policy without geo rules compiles the same with and without a database"
        );
    }
    Some(compiled)
}

struct NoExpander;

impl Expander for NoExpander {
    fn country_networks(&self, _: &str) -> Result<Vec<IpNet>, ExpandError> {
        panic!("compile expanded a country without a database")
    }

    fn asn_networks(&self, _: u32) -> Result<Vec<IpNet>, ExpandError> {
        panic!("compile expanded an ASN without a database")
    }
}

/// A rejected file: the message names the origin, and a position inside the text.
fn check_parse_error(text: &str, e: &PolicyError) {
    let msg = e.to_string();
    assert!(
        msg.starts_with(ORIGIN),
        "error does not name the origin: {msg:?}"
    );
    assert!(!e.is_not_found());
    if let Some(at) = e.location() {
        assert_eq!(at.origin, ORIGIN);
        if at.line > 0 {
            let lines = text.split('\n').count();
            assert!(
                at.line <= lines,
                "line {} of a {lines}-line text: {msg}",
                at.line
            );
            assert!(at.column >= 1, "column 0 with a line: {msg}");
            let line = text.split('\n').nth(at.line - 1).unwrap_or("");
            assert!(
                at.column <= line.chars().count() + 1,
                "column {} past the end of line {:?}: {msg}",
                at.column,
                line
            );
        }
    }
}

/// A parsed policy is normalised, and writing it back out parses to the same policy.
fn check_parsed(p: &Policy) {
    assert_eq!(p.origin, ORIGIN);
    for set in [&p.allow, &p.deny] {
        for net in &set.cidrs {
            assert_eq!(canonical(*net), *net, "parsed cidr {net} is not normalised");
        }
        let unique: HashSet<&IpNet> = set.cidrs.iter().collect();
        assert_eq!(
            unique.len(),
            set.cidrs.len(),
            "duplicate cidrs accepted: {set:?}"
        );
        for cc in &set.countries {
            assert!(
                cc.len() == 2 && cc.bytes().all(|b| b.is_ascii_uppercase()),
                "country {cc:?} accepted"
            );
        }
        let unique: HashSet<&String> = set.countries.iter().collect();
        assert_eq!(
            unique.len(),
            set.countries.len(),
            "duplicate countries: {set:?}"
        );
        assert!(!set.asns.contains(&0), "AS 0 accepted");
        let unique: HashSet<&u32> = set.asns.iter().collect();
        assert_eq!(
            unique.len(),
            set.asns.len(),
            "duplicate ASNs accepted: {set:?}"
        );
    }
    let text = to_toml(p);
    let again = Policy::from_toml_str(&text, ORIGIN)
        .unwrap_or_else(|e| panic!("re-parsing the written policy failed: {e}\n{text}"));
    assert_eq!(&again, p, "parse(write(p)) != p\n{text}");
}

/// The policy as TOML text.
pub fn to_toml(p: &Policy) -> String {
    let mut out = format!("default = \"{}\"\n", p.default.as_str());
    for (name, set) in [("allow", &p.allow), ("deny", &p.deny)] {
        write_set(&mut out, name, set);
    }
    out
}

fn write_set(out: &mut String, name: &str, set: &RuleSet) {
    let _ = writeln!(out, "[{name}]");
    let cidrs: Vec<String> = set.cidrs.iter().map(|n| format!("\"{n}\"")).collect();
    let countries: Vec<String> = set.countries.iter().map(|c| format!("\"{c}\"")).collect();
    let asns: Vec<String> = set.asns.iter().map(u32::to_string).collect();
    let _ = writeln!(out, "cidrs = [{}]", cidrs.join(", "));
    let _ = writeln!(out, "countries = [{}]", countries.join(", "));
    let _ = writeln!(out, "asns = [{}]", asns.join(", "));
}

/// The documented normal form of a network: host bits clear, an IPv4-mapped IPv6 network of
/// length /96 or more as its IPv4 network.
pub fn canonical(net: IpNet) -> IpNet {
    match net.trunc() {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => net4(v4, v6.prefix_len() - 96),
            None => IpNet::V6(v6),
        },
        n => n,
    }
}

/// One rule as the reference sees it.
#[derive(Debug)]
pub struct RefRule {
    /// The stable id.
    pub id: String,
    /// Its action.
    pub action: Action,
    /// Its networks, normalised.
    pub nets: Vec<IpNet>,
}

/// The rule table a policy must compile to (index = rule id), or the (list, item) of the first
/// expansion that fails.
pub fn reference_rules(
    p: &Policy,
    expander: &dyn Expander,
) -> Result<Vec<RefRule>, (String, String)> {
    let mut rules = vec![RefRule {
        id: "default".into(),
        action: p.default,
        nets: Vec::new(),
    }];
    let mut seen = HashSet::new();
    let mut push = |rules: &mut Vec<RefRule>, id: String, action, nets: Vec<IpNet>| {
        if seen.insert(id.clone()) {
            rules.push(RefRule {
                id,
                action,
                nets: nets.into_iter().map(canonical).collect(),
            });
        }
    };
    for (action, set) in [(Action::Allow, &p.allow), (Action::Deny, &p.deny)] {
        let a = action.as_str();
        for net in &set.cidrs {
            push(
                &mut rules,
                format!("{a}.cidrs:{}", canonical(*net)),
                action,
                vec![*net],
            );
        }
        for cc in &set.countries {
            let nets = expander
                .country_networks(cc)
                .map_err(|_| (format!("{a}.countries"), cc.clone()))?;
            push(&mut rules, format!("{a}.countries:{cc}"), action, nets);
        }
        for &asn in &set.asns {
            let nets = expander
                .asn_networks(asn)
                .map_err(|_| (format!("{a}.asns"), asn.to_string()))?;
            push(&mut rules, format!("{a}.asns:{asn}"), action, nets);
        }
    }
    Ok(rules)
}

/// The verdict of the reference semantics: IPv4-mapped destinations as IPv4; the longest
/// matching prefix; on an equal prefix deny; then the lowest rule id; no match → default.
pub fn reference_lookup(rules: &[RefRule], default: Action, ip: IpAddr) -> (Action, u32) {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let mut best: Option<(u8, bool, std::cmp::Reverse<usize>)> = None;
    for (i, rule) in rules.iter().enumerate() {
        for net in &rule.nets {
            if net.contains(&ip) {
                let key = (
                    net.prefix_len(),
                    rule.action == Action::Deny,
                    std::cmp::Reverse(i),
                );
                if best.is_none_or(|b| key > b) {
                    best = Some(key);
                }
            }
        }
    }
    match best {
        Some((_, _, std::cmp::Reverse(i))) => {
            (rules[i].action, u32::try_from(i).expect("rule ids fit u32"))
        }
        None => (default, RULE_DEFAULT),
    }
}

/// Every property of a compiled policy.
pub fn check_compiled(p: &Policy, c: &CompiledPolicy, expander: &dyn Expander, probes: &[IpAddr]) {
    let rules = reference_rules(p, expander)
        .unwrap_or_else(|f| panic!("compile succeeded though expanding {f:?} fails"));
    assert_eq!(c.origin, p.origin);
    assert_eq!(c.default_action, p.default);
    let ids: Vec<&str> = c.rules.iter().map(|r| r.id.as_str()).collect();
    let want: Vec<&str> = rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, want, "rule table");
    for (r, w) in c.rules.iter().zip(&rules) {
        assert_eq!(r.action, w.action, "action of rule {}", r.id);
    }
    for (i, r) in c.rules.iter().enumerate() {
        let id = u32::try_from(i).expect("rule ids fit u32");
        assert_eq!(c.rule_name(id), r.id);
        assert_eq!(c.rule_id(&r.id), Some(id));
    }

    check_entries(c, &c.v4, |n| IpNet::V4(*n));
    check_entries(c, &c.v6, |n| IpNet::V6(*n));
    for (net, _) in &c.v6 {
        assert!(
            !(net.prefix_len() >= 96 && net.network().to_ipv4_mapped().is_some()),
            "IPv4-mapped network {net} in the IPv6 trie"
        );
    }
    let v4_owned: usize = c.rules.iter().map(|r| r.v4_prefixes).sum();
    let v6_owned: usize = c.rules.iter().map(|r| r.v6_prefixes).sum();
    assert_eq!(v4_owned, c.v4.len(), "per-rule IPv4 prefix counts");
    assert_eq!(v6_owned, c.v6.len(), "per-rule IPv6 prefix counts");
    assert_eq!(
        c.rules[0].v4_prefixes + c.rules[0].v6_prefixes,
        0,
        "default owns prefixes"
    );
    let s = c.summary();
    assert_eq!(s.prefixes.ipv4.allow + s.prefixes.ipv4.deny, c.v4.len());
    assert_eq!(s.prefixes.ipv6.allow + s.prefixes.ipv6.deny, c.v6.len());

    // Verdicts: the probes, and the edges of every network of every rule and of every entry.
    let mut addrs: Vec<IpAddr> = probes.to_vec();
    let nets = rules
        .iter()
        .flat_map(|r| r.nets.iter().copied())
        .chain(c.v4.iter().map(|(n, _)| IpNet::V4(*n)))
        .chain(c.v6.iter().map(|(n, _)| IpNet::V6(*n)));
    for net in nets.take(512) {
        addrs.extend(edges(net));
    }
    addrs.extend([
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V4(Ipv4Addr::BROADCAST),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::from(u128::MAX)),
    ]);
    let mapped: Vec<IpAddr> = addrs
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
            IpAddr::V6(_) => None,
        })
        .collect();
    addrs.extend(mapped);
    for ip in addrs {
        let got = c.lookup(ip);
        let want = reference_lookup(&rules, p.default, ip);
        assert_eq!(got, want, "verdict for {ip}");
        if let Some((net, value)) = c.lookup_entry(ip) {
            assert_eq!(
                (Action::from_kernel(value.action), value.rule_id),
                (Some(got.0), got.1)
            );
            let judged = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                v4 => v4,
            };
            assert!(
                net.contains(&judged),
                "lookup_entry {net} does not hold {ip}"
            );
        }
    }
}

/// The trie entries of one family: normalised, strictly sorted (so each prefix once), valid
/// rule ids and actions, and no entry whose nearest enclosing entry has the same value.
fn check_entries<N: Copy + Ord + std::fmt::Debug>(
    c: &CompiledPolicy,
    entries: &[(N, ollama_egress_common::PolicyValue)],
    to_net: impl Fn(&N) -> IpNet,
) {
    for w in entries.windows(2) {
        assert!(
            w[0].0 < w[1].0,
            "entries not strictly sorted: {:?} then {:?}",
            w[0].0,
            w[1].0
        );
    }
    let mut enclosing: Vec<(IpNet, ollama_egress_common::PolicyValue)> = Vec::new();
    for (n, value) in entries {
        let net = to_net(n);
        assert_eq!(net.trunc(), net, "entry {net} has host bits set");
        assert!(
            value.action == ACTION_ALLOW || value.action == ACTION_DENY,
            "entry {net}: action {}",
            value.action
        );
        let id = value.rule_id as usize;
        assert!(
            id < c.rules.len(),
            "entry {net}: rule id {id} of {}",
            c.rules.len()
        );
        assert_ne!(
            value.rule_id, RULE_DEFAULT,
            "entry {net} owned by the default rule"
        );
        assert_eq!(
            Action::from_kernel(value.action),
            Some(c.rules[id].action),
            "entry {net}: action differs from rule {}",
            c.rules[id].id
        );
        while enclosing.last().is_some_and(|(e, _)| !e.contains(&net)) {
            enclosing.pop();
        }
        if let Some((e, v)) = enclosing.last() {
            assert_ne!(v, value, "entry {net} is redundant under {e}");
        }
        enclosing.push((net, *value));
    }
}

/// Addresses at and just outside the edges of `net`.
fn edges(net: IpNet) -> [IpAddr; 4] {
    match net {
        IpNet::V4(n) => {
            let lo = u32::from(n.network());
            let hi = u32::from(n.broadcast());
            [lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1)].map(|a| IpAddr::V4(a.into()))
        }
        IpNet::V6(n) => {
            let lo = u128::from(n.network());
            let hi = u128::from(n.broadcast());
            [lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1)].map(|a| IpAddr::V6(a.into()))
        }
    }
}

/// Probe addresses taken from raw bytes (4 bytes → IPv4, 16 → IPv6, alternating).
pub fn probes_from_bytes(bytes: &[u8]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 4 && out.len() < 64 {
        if rest[0] & 1 == 0 || rest.len() < 16 {
            let (a, r) = rest.split_at(4);
            out.push(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])));
            rest = r;
        } else {
            let (a, r) = rest.split_at(16);
            let mut o = [0u8; 16];
            o.copy_from_slice(a);
            out.push(IpAddr::V6(Ipv6Addr::from(o)));
            rest = r;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Structured policies: valid-looking files with many overlapping networks.

/// Country codes the structured target chooses from (`cn` duplicates `CN` once upper-cased).
const COUNTRIES: [&str; 7] = ["CN", "DE", "US", "RU", "JP", "cn", "Zz"];

/// A policy built from fuzz bytes: text plus the fake database it is compiled with.
#[derive(Debug, Arbitrary)]
pub struct StructuredPolicy {
    default: Option<bool>,
    allow: Option<Section>,
    deny: Option<Section>,
    geo: Vec<(u8, GeoAnswer)>,
    asn_db: Vec<(u8, GeoAnswer)>,
    probes: Vec<NetSpec>,
}

#[derive(Debug, Arbitrary)]
struct Section {
    cidrs: Vec<NetSpec>,
    countries: Vec<u8>,
    asns: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
enum GeoAnswer {
    Nets(Vec<NetSpec>),
    Unknown,
    Broken,
}

/// A network in a small, overlap-prone address space.
#[derive(Debug, Arbitrary)]
struct NetSpec {
    form: Form,
    bits: u32,
    len: u8,
}

#[derive(Debug, Arbitrary)]
enum Form {
    /// `a.b.c.d/len`, host bits cleared.
    V4,
    /// `2001:db8:XXXX:XXXX::/len`, host bits cleared.
    V6Doc,
    /// `::ffff:a.b.c.d/len` (any length 0..=128): mapped networks of /96 and longer become
    /// IPv4, shorter ones stay IPv6 and cover the mapped range.
    V6Mapped,
    /// A bare IPv4 address.
    Bare,
    /// As written, host bits and all (usually an error).
    Raw,
}

impl NetSpec {
    fn net(&self) -> IpNet {
        match self.form {
            Form::V4 | Form::Bare | Form::Raw => {
                let len = if matches!(self.form, Form::Bare) {
                    32
                } else {
                    self.len % 33
                };
                net4(Ipv4Addr::from(self.bits), len)
            }
            Form::V6Doc => {
                let a = (0x2001_0db8_u128 << 96) | (u128::from(self.bits) << 64);
                net6(Ipv6Addr::from(a), self.len % 129)
            }
            Form::V6Mapped => net6(Ipv4Addr::from(self.bits).to_ipv6_mapped(), self.len % 129),
        }
    }

    fn text(&self) -> String {
        match self.form {
            Form::Bare => Ipv4Addr::from(self.bits).to_string(),
            Form::Raw => self.net().to_string(),
            _ => self.net().trunc().to_string(),
        }
    }

    fn probe(&self) -> IpAddr {
        self.net().addr()
    }
}

impl StructuredPolicy {
    /// The policy file text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        match self.default {
            Some(true) => out.push_str("default = \"allow\"\n"),
            Some(false) => out.push_str("default = \"deny\"\n"),
            None => {}
        }
        for (name, section) in [("allow", &self.allow), ("deny", &self.deny)] {
            let Some(s) = section else { continue };
            let _ = writeln!(out, "[{name}]");
            let cidrs: Vec<String> = s
                .cidrs
                .iter()
                .map(|n| format!("\"{}\"", n.text()))
                .collect();
            let countries: Vec<String> = s
                .countries
                .iter()
                .map(|&i| format!("\"{}\"", COUNTRIES[usize::from(i) % COUNTRIES.len()]))
                .collect();
            let asns: Vec<String> = s.asns.iter().map(u8::to_string).collect();
            let _ = writeln!(out, "cidrs = [{}]", cidrs.join(", "));
            let _ = writeln!(out, "countries = [{}]", countries.join(", "));
            let _ = writeln!(out, "asns = [{}]", asns.join(", "));
        }
        out
    }

    /// The fake database.
    pub fn expander(&self) -> MapExpander {
        let answer = |a: &GeoAnswer| match a {
            GeoAnswer::Nets(n) => Answer::Nets(n.iter().map(NetSpec::net).collect()),
            GeoAnswer::Unknown => Answer::Unknown,
            GeoAnswer::Broken => Answer::Broken,
        };
        let mut e = MapExpander::default();
        for (i, a) in &self.geo {
            let cc = COUNTRIES[usize::from(*i) % COUNTRIES.len()].to_ascii_uppercase();
            e.countries.insert(cc, answer(a));
        }
        for (n, a) in &self.asn_db {
            e.asns.insert(u32::from(*n), answer(a));
        }
        e
    }

    /// Addresses whose verdict is checked.
    pub fn probes(&self) -> Vec<IpAddr> {
        self.probes.iter().map(NetSpec::probe).collect()
    }
}
