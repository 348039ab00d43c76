//! Network egress allow-list (issue 13): the host-side servers a sandbox reaches the outside
//! world through, and the policy they apply.
//!
//! The sandbox's network namespace has only `lo`. The runner serves, on listeners created
//! inside that namespace and handed to the functions here as plain `std` sockets:
//!
//! - an HTTP proxy ([`http::serve_http`]: `CONNECT` tunnels and absolute-form requests),
//! - a SOCKS5 server ([`socks::serve_socks`], `socks5h`: names are resolved by the runner),
//! - a DNS stub ([`dns::serve_dns`]) that answers each allowed name with a private loopback
//!   address `127.64.x.y` (stable per name for the life of one [`Egress`]) and refuses others,
//! - a "mapped" TCP listener per allowed port ([`mapped::serve_mapped`]) that maps the
//!   `127.64.x.y` address a client connected to back to its name, for programs that ignore
//!   proxies (database drivers).
//!
//! Every connection goes through [`Egress::connect`]: the name is resolved on the host (through
//! a [`resolve::Resolver`]), every address is judged by the pure [`policy::judge`], and the
//! connection goes to an address that was checked, never through a second lookup. Every
//! decision is a `tracing` event (target `sandbox_runner::egress`); refusals are counted by
//! [`Refusals`] for the sandbox's summary.
//!
//! # Rules
//!
//! `HOST:PORT`, from `--allow-net` (repeatable) or the profile's `[network] allow` list, parsed
//! by [`Rules::parse`]. HOST is a DNS name (`api.example.com`, unicode names are converted to
//! their IDNA ASCII form, case and a trailing dot are ignored), a wildcard suffix
//! (`*.amazonaws.com`: any name strictly below it, not `amazonaws.com` itself), an IP address
//! (`10.1.2.3`, `[::1]`) or a CIDR block (`10.0.0.0/8`, `[fd00::/8]`). PORT is a number or a
//! range (`8000-8100`). No rule at all means loopback only: everything is refused.
//!
//! What a rule allows:
//!
//! - a **name** rule allows whatever that name resolves to, on its ports (it names the host);
//! - a **wildcard** rule allows the addresses its names resolve to, except special ones;
//! - an **IP** rule allows that address, whatever name it was reached by (it names the
//!   address, special or not: `127.0.0.1:8080` names loopback explicitly);
//! - a **CIDR** rule allows the addresses in its block, except special ones, unless the
//!   block itself lies within that special range (`127.0.0.0/8:80` names loopback).
//!
//! Special addresses ([`policy::AddressClass`]): loopback, link-local (`169.254.0.0/16`, which
//! holds the cloud metadata address `169.254.169.254`, and `fe80::/10`), unspecified (`0.0.0.0/8`,
//! `::`), multicast, the IPv4 broadcast address, and the host's own addresses
//! ([`EgressConfig::host_addresses`]). An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is judged,
//! and connected to, as its IPv4 address.
//!
//! # Which names are resolved
//!
//! A name is looked up on the host only when a name or wildcard rule covers it on the
//! requested port ([`Rules::covers_name`]); any other name is refused without a lookup, so the
//! sandbox cannot use the host's resolver to send data out in queries for names of its
//! choosing. IP and CIDR rules therefore apply to connections made to addresses (an IP literal,
//! or the addresses of a name that a name rule covers), not to arbitrary names.
//!
//! # DNS rebinding
//!
//! A name whose answers change between lookups (rebinding) gains nothing: every connection
//! does its own lookup, judges each address of *that* answer, and connects to exactly the
//! address it judged. There is no cache shared between a check and a connect, and no second
//! lookup between them; an answer that turns into `127.0.0.1` or `169.254.169.254` under a
//! wildcard rule is refused for that connection, whatever an earlier answer was. (A name rule
//! allows whatever its name resolves to, by definition: whoever controls an allowed name's
//! DNS controls where it points.)

pub mod dns;
pub mod http;
pub mod mapped;
pub mod policy;
pub mod relay;
pub mod resolve;
pub mod socks;
pub mod wire;

mod gate;
mod refusals;

pub use gate::{ConnectError, Connection, Egress, EgressConfig, ShutdownHandle};
pub use policy::{judge, judge_all, AddressClass, Refusal, Verdict};
pub use refusals::{RefusalSummary, Refusals, RefusedTarget};

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A rule that could not be parsed: the rule as written and why it is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("network rule {rule:?}: {reason}")]
pub struct RuleError {
    /// The rule as it was written.
    pub rule: String,
    /// What is wrong with it.
    pub reason: String,
}

/// An inclusive range of ports (`443` is `443-443`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// First port of the range.
    pub first: u16,
    /// Last port of the range (at least `first`).
    pub last: u16,
}

impl PortRange {
    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// An IP block: an address and a prefix length, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The block `addr/prefix`. `None` when the prefix is too long for the address family or
    /// host bits are set. An IPv4-mapped IPv6 block of prefix 96 or more becomes its IPv4 block.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (addr, prefix),
            },
            _ => (addr, prefix),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return None;
        }
        let cidr = Cidr { addr, prefix };
        (cidr.network() == addr).then_some(cidr)
    }

    /// The block's first address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(self.prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(self.prefix))),
        }
    }

    /// Whether `ip` (canonical: IPv4-mapped addresses as IPv4) lies in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, policy::canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => u32::from(a) & mask32(self.prefix) == u32::from(n),
            (IpAddr::V6(n), IpAddr::V6(a)) => u128::from(a) & mask128(self.prefix) == u128::from(n),
            _ => false,
        }
    }

    /// Whether this whole block lies within `outer`.
    pub fn is_within(&self, outer: &Cidr) -> bool {
        self.prefix >= outer.prefix && outer.contains(self.addr)
    }
}

fn mask32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

fn mask128(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The host part of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// One DNS name, normalized (ASCII/IDNA, lower case, no trailing dot).
    Name(String),
    /// `*.suffix`: any name strictly below `suffix` (normalized, stored without `*.`).
    Wildcard(String),
    /// One address (canonical: IPv4-mapped addresses as IPv4).
    Ip(IpAddr),
    /// A block of addresses.
    Cidr(Cidr),
}

/// One allow rule: `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// What the rule names.
    pub host: HostPattern,
    /// The ports it allows.
    pub ports: PortRange,
    text: String,
}

impl Rule {
    /// The rule as it was written (for messages and events).
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Rule, RuleError> {
        let err = |reason: &str| RuleError {
            rule: s.to_string(),
            reason: reason.to_string(),
        };
        let text = s.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| err("'[' without a closing ']'"))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| err("expected ':PORT' after ']'"))?;
            if !host.contains(':') {
                return Err(err("brackets are for IPv6 addresses and blocks only"));
            }
            (host, port)
        } else {
            let (host, port) = text
                .rsplit_once(':')
                .ok_or_else(|| err("expected HOST:PORT (a port is required)"))?;
            if host.contains(':') {
                return Err(err(
                    "an IPv6 address must be in brackets, e.g. [::1]:443 or [fd00::/8]:443",
                ));
            }
            (host, port)
        };
        let ports = parse_ports(port).map_err(|r| err(&r))?;
        let host = parse_host_pattern(host).map_err(|r| err(&r))?;
        Ok(Rule {
            host,
            ports,
            text: text.to_string(),
        })
    }
}

fn parse_ports(s: &str) -> Result<PortRange, String> {
    let one = |p: &str| -> Result<u16, String> {
        match p.parse::<u16>() {
            Ok(0) => Err("port 0 is not a port one can connect to".into()),
            Ok(n) if !p.starts_with('+') => Ok(n),
            _ => Err(format!(
                "{p:?} is not a port (a number 1-65535, or a range like 8000-8100)"
            )),
        }
    };
    match s.split_once('-') {
        None => {
            let p = one(s)?;
            Ok(PortRange { first: p, last: p })
        }
        Some((a, b)) => {
            let (first, last) = (one(a)?, one(b)?);
            if first > last {
                return Err(format!("port range {s} runs backwards"));
            }
            Ok(PortRange { first, last })
        }
    }
}

fn parse_host_pattern(s: &str) -> Result<HostPattern, String> {
    if s.is_empty() {
        return Err("the host is empty".into());
    }
    if let Some((addr, prefix)) = s.split_once('/') {
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} before '/' is not an IP address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("{prefix:?} is not a prefix length"))?;
        return Cidr::new(addr, prefix)
            .map(HostPattern::Cidr)
            .ok_or_else(|| {
                let max = if addr.is_ipv4() { 32 } else { 128 };
                if prefix > max {
                    format!("prefix /{prefix} is longer than {max} bits")
                } else {
                    let net = Cidr { addr, prefix }.network();
                    format!("{s} has host bits set (did you mean {net}/{prefix}?)")
                }
            });
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(HostPattern::Ip(policy::canonical(ip)));
    }
    if let Some(suffix) = s.strip_prefix("*.") {
        if suffix.contains('*') {
            return Err("only one leading '*.' is allowed in a wildcard".into());
        }
        let suffix = normalize_name(suffix)?;
        if !suffix.contains('.') {
            return Err(format!(
                "wildcard *.{suffix} would cover a whole top-level domain; name a domain below it"
            ));
        }
        return Ok(HostPattern::Wildcard(suffix));
    }
    if s.contains('*') {
        return Err("a wildcard is '*.' followed by a domain, e.g. *.example.com".into());
    }
    Ok(HostPattern::Name(normalize_name(s)?))
}

/// A DNS name in the form rules are matched in: the IDNA ASCII form (unicode labels become
/// `xn--` labels), lower case, without a trailing dot. Errors say why the name is not valid.
pub fn normalize_name(name: &str) -> Result<String, String> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err("the name is empty".into());
    }
    let ascii = idna::domain_to_ascii(trimmed)
        .map_err(|_| format!("{name:?} is not a valid domain name"))?;
    if ascii.is_empty()
        || ascii.len() > 253
        || ascii.split('.').any(|l| l.is_empty() || l.len() > 63)
        || !ascii
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(format!("{name:?} is not a valid domain name"));
    }
    Ok(ascii.to_ascii_lowercase())
}

/// A parsed allow-list. Empty means loopback only (every outside connection is refused).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// Parse every rule; the first bad one is the error, naming it and why.
    pub fn parse<I, S>(rules: I) -> Result<Rules, RuleError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let rules = rules
            .into_iter()
            .map(|r| r.as_ref().parse())
            .collect::<Result<Vec<Rule>, _>>()?;
        Ok(Rules { rules })
    }

    /// Rules already parsed, in the order given.
    pub fn from_rules<I: IntoIterator<Item = Rule>>(rules: I) -> Rules {
        Rules {
            rules: rules.into_iter().collect(),
        }
    }

    /// The rules, in the order given.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// No rule: loopback only.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether a name or wildcard rule covers `name` (normalized) on `port`: only then is the
    /// name looked up on the host.
    pub fn covers_name(&self, name: &str, port: u16) -> bool {
        self.rules
            .iter()
            .any(|r| r.ports.contains(port) && name_matches(&r.host, name))
    }

    /// Whether a name or wildcard rule covers `name` (normalized) on any port: the DNS stub
    /// answers exactly these names.
    pub fn covers_name_any_port(&self, name: &str) -> bool {
        self.rules.iter().any(|r| name_matches(&r.host, name))
    }

    /// Every distinct port or port range of the rules (for the "mapped" listeners: one per
    /// allowed port of a name or wildcard rule).
    pub fn name_ports(&self) -> Vec<PortRange> {
        let mut out: Vec<PortRange> = Vec::new();
        for r in &self.rules {
            if matches!(r.host, HostPattern::Name(_) | HostPattern::Wildcard(_))
                && !out.contains(&r.ports)
            {
                out.push(r.ports);
            }
        }
        out
    }
}

/// Whether a name or wildcard pattern matches `name` (normalized).
pub(crate) fn name_matches(pattern: &HostPattern, name: &str) -> bool {
    match pattern {
        HostPattern::Name(n) => n == name,
        HostPattern::Wildcard(suffix) => name
            .strip_suffix(suffix.as_str())
            .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        _ => false,
    }
}

/// Where a connection asks to go: a name (normalized) or an address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name, normalized by [`normalize_name`].
    Name(String),
    /// An address (canonical: IPv4-mapped addresses as IPv4).
    Ip(IpAddr),
}

impl Host {
    /// A host as a client wrote it: an IP literal (IPv6 with or without brackets) or a name
    /// (normalized). Errors say why the name is not valid.
    pub fn parse(s: &str) -> Result<Host, String> {
        let bare = s
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(s);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Host::Ip(policy::canonical(ip)));
        }
        normalize_name(s).map(Host::Name)
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Host::Ip(a) => write!(f, "{a}"),
        }
    }
}

/// A destination: host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Name or address.
    pub host: Host,
    /// Port.
    pub port: u16,
}

impl Target {
    /// A destination from a host as a client wrote it and a port.
    pub fn new(host: &str, port: u16) -> Result<Target, String> {
        Ok(Target {
            host: Host::parse(host)?,
            port,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(rule: &str) -> String {
        let e = rule.parse::<Rule>().unwrap_err();
        assert_eq!(e.rule, rule);
        e.to_string()
    }

    #[test]
    fn parses_every_form_of_the_issue() {
        let rules = Rules::parse([
            "api.example.com:443",
            "*.amazonaws.com:443",
            "db.internal:5432",
            "10.1.2.3:8080",
            "10.0.0.0/8:5432",
            "[::1]:443",
            "[fd00::/8]:443",
            "web.test:8000-8100",
        ])
        .unwrap();
        let hosts: Vec<_> = rules.rules().iter().map(|r| r.host.clone()).collect();
        assert_eq!(hosts[0], HostPattern::Name("api.example.com".into()));
        assert_eq!(hosts[1], HostPattern::Wildcard("amazonaws.com".into()));
        assert_eq!(hosts[3], HostPattern::Ip("10.1.2.3".parse().unwrap()));
        assert_eq!(
            hosts[4],
            HostPattern::Cidr(Cidr::new("10.0.0.0".parse().unwrap(), 8).unwrap())
        );
        assert_eq!(hosts[5], HostPattern::Ip("::1".parse().unwrap()));
        assert_eq!(
            hosts[6],
            HostPattern::Cidr(Cidr::new("fd00::".parse().unwrap(), 8).unwrap())
        );
        assert_eq!(
            rules.rules()[7].ports,
            PortRange {
                first: 8000,
                last: 8100
            }
        );
        assert_eq!(rules.rules()[0].text(), "api.example.com:443");
    }

    #[test]
    fn names_are_normalized() {
        let r: Rule = "API.Example.COM.:443".parse().unwrap();
        assert_eq!(r.host, HostPattern::Name("api.example.com".into()));
        let r: Rule = "bücher.example:443".parse().unwrap();
        assert_eq!(r.host, HostPattern::Name("xn--bcher-kva.example".into()));
        let r: Rule = "*.BÜCHER.example:443".parse().unwrap();
        assert_eq!(
            r.host,
            HostPattern::Wildcard("xn--bcher-kva.example".into())
        );
        let r: Rule = "[::ffff:10.1.2.3]:80".parse().unwrap();
        assert_eq!(r.host, HostPattern::Ip("10.1.2.3".parse().unwrap()));
        let r: Rule = "[::ffff:10.0.0.0/104]:80".parse().unwrap();
        assert_eq!(
            r.host,
            HostPattern::Cidr(Cidr::new("10.0.0.0".parse().unwrap(), 8).unwrap())
        );
    }

    #[test]
    fn errors_name_the_rule_and_why() {
        assert!(bad("example.com").contains("port is required"));
        assert!(bad("example.com:0").contains("port 0"));
        assert!(bad("example.com:http").contains("not a port"));
        assert!(bad("example.com:70000").contains("not a port"));
        assert!(bad("example.com:90-80").contains("backwards"));
        assert!(bad("::1:443").contains("brackets"));
        assert!(bad("[::1:443").contains("closing"));
        assert!(bad("[example.com]:443").contains("IPv6"));
        assert!(bad("10.0.0.1/8:80").contains("did you mean 10.0.0.0/8"));
        assert!(bad("10.0.0.0/33:80").contains("longer than 32"));
        assert!(bad("*:443").contains("wildcard"));
        assert!(bad("a.*.com:443").contains("wildcard"));
        assert!(bad("*.com:443").contains("top-level"));
        assert!(bad("bad name:443").contains("not a valid domain name"));
        assert!(bad(":443").contains("empty"));
        let e = Rules::parse(["ok.test:1", "nope"]).unwrap_err();
        assert_eq!(e.rule, "nope");
        assert!(e.to_string().starts_with("network rule \"nope\": "));
    }

    #[test]
    fn wildcard_covers_names_strictly_below() {
        let rules = Rules::parse(["*.example.com:443"]).unwrap();
        assert!(rules.covers_name("a.example.com", 443));
        assert!(rules.covers_name("a.b.example.com", 443));
        assert!(!rules.covers_name("example.com", 443));
        assert!(!rules.covers_name("badexample.com", 443));
        assert!(!rules.covers_name("a.example.com", 80));
        assert!(rules.covers_name_any_port("a.example.com"));
    }

    #[test]
    fn hosts_parse_literals_and_names() {
        assert_eq!(
            Host::parse("[::1]").unwrap(),
            Host::Ip("::1".parse().unwrap())
        );
        assert_eq!(
            Host::parse("::ffff:127.0.0.1").unwrap(),
            Host::Ip("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            Host::parse("Allowed.Test.").unwrap(),
            Host::Name("allowed.test".into())
        );
        assert_eq!(
            Target::new("::1", 80).unwrap().to_string(),
            "[::1]:80".to_string()
        );
    }
}
