//! The policy as a pure function: rules, where a connection asks to go, one resolved address
//! and the host's own addresses in; a [`Verdict`] out. No lookup, no socket, no clock.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use super::{name_matches, Cidr, Host, HostPattern, Rules};

/// An address a wildcard or CIDR rule never reaches unless it names it explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddressClass {
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `169.254.0.0/16` (with the cloud metadata address `169.254.169.254`), `fe80::/10`.
    LinkLocal,
    /// `0.0.0.0/8` (Linux connects `0.0.0.0` to the local host), `::`.
    Unspecified,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// One of the host's own addresses.
    HostOwn,
}

impl AddressClass {
    /// The class of `ip` (canonical), if it is special. The fixed ranges are checked before
    /// the host's own addresses, so `127.0.0.1` is `Loopback` even when listed in `own`.
    pub fn of(ip: IpAddr, own: &[IpAddr]) -> Option<AddressClass> {
        let ip = canonical(ip);
        let class = match ip {
            IpAddr::V4(a) => {
                let o = a.octets();
                if o[0] == 127 {
                    Some(AddressClass::Loopback)
                } else if o[0] == 169 && o[1] == 254 {
                    Some(AddressClass::LinkLocal)
                } else if o[0] == 0 {
                    Some(AddressClass::Unspecified)
                } else if a.is_multicast() {
                    Some(AddressClass::Multicast)
                } else if a.is_broadcast() {
                    Some(AddressClass::Broadcast)
                } else {
                    None
                }
            }
            IpAddr::V6(a) => {
                if a.is_loopback() {
                    Some(AddressClass::Loopback)
                } else if a.is_unspecified() {
                    Some(AddressClass::Unspecified)
                } else if a.segments()[0] & 0xffc0 == 0xfe80 {
                    Some(AddressClass::LinkLocal)
                } else if a.is_multicast() {
                    Some(AddressClass::Multicast)
                } else {
                    None
                }
            }
        };
        class.or_else(|| {
            own.iter()
                .any(|o| canonical(*o) == ip)
                .then_some(AddressClass::HostOwn)
        })
    }

    /// Whether a CIDR rule's block names this class explicitly: it lies within the class's
    /// range (for the host's own addresses: the block is exactly that one address).
    fn named_by(self, block: &Cidr, ip: IpAddr) -> bool {
        let within = |addr: IpAddr, prefix: u8| block.is_within(&Cidr::new(addr, prefix).unwrap());
        let v4 = |a: [u8; 4], p| within(IpAddr::V4(Ipv4Addr::from(a)), p);
        let v6 = |a: Ipv6Addr, p| within(IpAddr::V6(a), p);
        match self {
            AddressClass::Loopback => v4([127, 0, 0, 0], 8) || v6(Ipv6Addr::LOCALHOST, 128),
            AddressClass::LinkLocal => {
                v4([169, 254, 0, 0], 16) || v6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10)
            }
            AddressClass::Unspecified => v4([0, 0, 0, 0], 8) || v6(Ipv6Addr::UNSPECIFIED, 128),
            AddressClass::Multicast => {
                v4([224, 0, 0, 0], 4) || v6(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8)
            }
            AddressClass::Broadcast => v4([255, 255, 255, 255], 32),
            AddressClass::HostOwn => {
                block.addr() == ip && block.prefix() == if ip.is_ipv4() { 32 } else { 128 }
            }
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressClass::Loopback => "loopback",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
            AddressClass::HostOwn => "one of the host's own addresses",
        })
    }
}

/// Why a connection is refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Refusal {
    /// No rule names this host or address.
    NotListed,
    /// A rule names the host or address, but not on this port.
    PortNotAllowed,
    /// Only a wildcard or CIDR rule matches, and the address is special.
    Special {
        /// The kind of special address.
        class: AddressClass,
        /// The broad rule that matched (as written).
        rule: String,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotListed => f.write_str("no rule allows this host"),
            Refusal::PortNotAllowed => f.write_str("no rule allows this port of this host"),
            Refusal::Special { class, rule } => write!(
                f,
                "the address is {class}, which a wildcard or CIDR rule ({rule}) never reaches \
                 unless it names it"
            ),
        }
    }
}

/// The decision for one address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Connect; `rule` is the rule that allows it, as written.
    Allow {
        /// The allowing rule, as written.
        rule: String,
    },
    /// Do not connect.
    Refuse(Refusal),
}

impl Verdict {
    /// Whether the verdict allows the connection.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allow { .. })
    }
}

/// An address as it is judged and connected to: an IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`) becomes its IPv4 address; any other address is unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Judge a connection to `host:port` that would go to `addr` (one address `host` resolved
/// to, or `host` itself when it is an address), with the host's own addresses `own`.
///
/// A name rule matching `host` allows any address; a wildcard rule matching `host` allows
/// addresses that are not special ([`AddressClass`]); an IP rule allows exactly its address;
/// a CIDR rule allows the addresses of its block that are not special, or special ones its
/// block lies within. The first rule that allows wins; otherwise the most telling refusal:
/// special address over wrong port over not listed.
pub fn judge(rules: &Rules, host: &Host, port: u16, addr: IpAddr, own: &[IpAddr]) -> Verdict {
    let addr = canonical(addr);
    let class = AddressClass::of(addr, own);
    let mut refusal = Refusal::NotListed;
    for rule in rules.rules() {
        // (matches host or address, explicit: may reach special addresses)
        let explicit = match (&rule.host, host) {
            (p @ HostPattern::Name(_), Host::Name(name)) if name_matches(p, name) => true,
            (p @ HostPattern::Wildcard(_), Host::Name(name)) if name_matches(p, name) => false,
            (HostPattern::Ip(ip), _) if canonical(*ip) == addr => true,
            (HostPattern::Cidr(block), _) if block.contains(addr) => {
                class.map_or(true, |c| c.named_by(block, addr))
            }
            _ => continue,
        };
        if !rule.ports.contains(port) {
            if refusal == Refusal::NotListed {
                refusal = Refusal::PortNotAllowed;
            }
            continue;
        }
        match class {
            Some(class) if !explicit => {
                refusal = Refusal::Special {
                    class,
                    rule: rule.text().to_string(),
                };
            }
            _ => {
                return Verdict::Allow {
                    rule: rule.text().to_string(),
                }
            }
        }
    }
    Verdict::Refuse(refusal)
}

/// [`judge`] for every address of one lookup, each on its own (in order, canonical).
pub fn judge_all(
    rules: &Rules,
    host: &Host,
    port: u16,
    addrs: &[IpAddr],
    own: &[IpAddr],
) -> Vec<(IpAddr, Verdict)> {
    addrs
        .iter()
        .map(|a| (canonical(*a), judge(rules, host, port, *a, own)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules(r: &[&str]) -> Rules {
        Rules::parse(r).unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn name(s: &str) -> Host {
        Host::parse(s).unwrap()
    }
    fn allowed(r: &Rules, host: &str, port: u16, addr: &str, own: &[IpAddr]) -> bool {
        judge(r, &name(host), port, ip(addr), own).is_allowed()
    }
    fn class_refusal(v: Verdict) -> Option<AddressClass> {
        match v {
            Verdict::Refuse(Refusal::Special { class, .. }) => Some(class),
            _ => None,
        }
    }

    const OWN: &[IpAddr] = &[
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
    ];

    #[test]
    fn no_rule_refuses_everything() {
        let r = Rules::default();
        assert_eq!(
            judge(&r, &name("example.com"), 443, ip("93.184.216.34"), &[]),
            Verdict::Refuse(Refusal::NotListed)
        );
        assert!(!allowed(&r, "127.0.0.1", 80, "127.0.0.1", &[]));
    }

    #[test]
    fn name_rule_allows_whatever_the_name_resolves_to() {
        let r = rules(&["db.internal:5432"]);
        for a in [
            "10.1.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "::1",
            "203.0.113.7",
        ] {
            assert!(allowed(&r, "db.internal", 5432, a, OWN), "{a}");
        }
        assert_eq!(
            judge(&r, &name("db.internal"), 5433, ip("10.1.1.1"), OWN),
            Verdict::Refuse(Refusal::PortNotAllowed)
        );
        assert_eq!(
            judge(&r, &name("other.internal"), 5432, ip("10.1.1.1"), OWN),
            Verdict::Refuse(Refusal::NotListed)
        );
        // The rule names the host, not its address.
        assert!(!allowed(&r, "10.1.1.1", 5432, "10.1.1.1", OWN));
    }

    #[test]
    fn wildcard_never_reaches_special_addresses() {
        let r = rules(&["*.amazonaws.com:443"]);
        assert!(allowed(&r, "s3.amazonaws.com", 443, "52.216.1.1", OWN));
        assert!(allowed(&r, "s3.amazonaws.com", 443, "10.0.0.5", OWN));
        let cases = [
            ("127.0.0.1", AddressClass::Loopback),
            ("127.1.2.3", AddressClass::Loopback),
            ("::1", AddressClass::Loopback),
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("169.254.169.254", AddressClass::LinkLocal),
            ("::ffff:169.254.169.254", AddressClass::LinkLocal),
            ("169.254.0.1", AddressClass::LinkLocal),
            ("fe80::1", AddressClass::LinkLocal),
            ("febf::1", AddressClass::LinkLocal),
            ("0.0.0.0", AddressClass::Unspecified),
            ("::", AddressClass::Unspecified),
            ("224.0.0.1", AddressClass::Multicast),
            ("ff02::1", AddressClass::Multicast),
            ("255.255.255.255", AddressClass::Broadcast),
            ("203.0.113.7", AddressClass::HostOwn),
            ("::ffff:203.0.113.7", AddressClass::HostOwn),
            ("2001:db8::7", AddressClass::HostOwn),
        ];
        for (a, class) in cases {
            let v = judge(&r, &name("x.amazonaws.com"), 443, ip(a), OWN);
            assert_eq!(class_refusal(v), Some(class), "{a}");
        }
        // fec0:: is not link-local (fe80::/10 ends at febf).
        assert!(allowed(&r, "x.amazonaws.com", 443, "fec0::1", OWN));
        assert!(!allowed(&r, "amazonaws.com", 443, "52.216.1.1", OWN));
    }

    #[test]
    fn cidr_never_reaches_special_addresses_unless_it_lies_within_them() {
        let r = rules(&["0.0.0.0/0:80", "[::/0]:80"]);
        assert!(allowed(&r, "1.1.1.1", 80, "1.1.1.1", OWN));
        assert!(allowed(&r, "10.9.9.9", 80, "10.9.9.9", OWN));
        assert!(allowed(&r, "2606:4700::1111", 80, "2606:4700::1111", OWN));
        for a in [
            "127.0.0.1",
            "169.254.169.254",
            "fe80::1",
            "::1",
            "0.0.0.0",
            "224.1.1.1",
            "203.0.113.7",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!allowed(&r, a, 80, a, OWN), "{a}");
        }
        let r = rules(&[
            "127.0.0.0/8:80",
            "169.254.169.254/32:80",
            "203.0.113.7/32:80",
        ]);
        assert!(allowed(&r, "127.0.0.2", 80, "127.0.0.2", OWN));
        assert!(allowed(&r, "::ffff:127.0.0.2", 80, "::ffff:127.0.0.2", OWN));
        assert!(allowed(&r, "169.254.169.254", 80, "169.254.169.254", OWN));
        assert!(!allowed(&r, "169.254.169.253", 80, "169.254.169.253", OWN));
        assert!(allowed(&r, "203.0.113.7", 80, "203.0.113.7", OWN));
        // A block that holds the host's address among others does not name it.
        let r = rules(&["203.0.113.0/24:80"]);
        assert!(allowed(&r, "203.0.113.8", 80, "203.0.113.8", OWN));
        assert!(!allowed(&r, "203.0.113.7", 80, "203.0.113.7", OWN));
        // 10.0.0.0/8 holds no special address: private ranges are allowed as listed.
        let r = rules(&["10.0.0.0/8:5432"]);
        assert!(allowed(&r, "10.1.2.3", 5432, "10.1.2.3", OWN));
        assert!(!allowed(&r, "10.1.2.3", 5433, "10.1.2.3", OWN));
        assert!(!allowed(&r, "11.1.2.3", 5432, "11.1.2.3", OWN));
        // A block wider than loopback does not name loopback.
        let r = rules(&["64.0.0.0/2:80"]);
        assert!(allowed(&r, "100.64.0.1", 80, "100.64.0.1", OWN));
        assert!(!allowed(&r, "127.0.0.1", 80, "127.0.0.1", OWN));
    }

    #[test]
    fn exact_ip_rules_name_special_addresses() {
        let r = rules(&[
            "127.0.0.1:8080",
            "[::1]:8080",
            "169.254.169.254:80",
            "[::ffff:10.1.2.3]:80",
        ]);
        assert!(allowed(&r, "127.0.0.1", 8080, "127.0.0.1", OWN));
        assert!(allowed(
            &r,
            "::ffff:127.0.0.1",
            8080,
            "::ffff:127.0.0.1",
            OWN
        ));
        assert!(allowed(&r, "::1", 8080, "::1", OWN));
        assert!(!allowed(&r, "127.0.0.2", 8080, "127.0.0.2", OWN));
        assert!(allowed(&r, "169.254.169.254", 80, "169.254.169.254", OWN));
        assert!(allowed(&r, "10.1.2.3", 80, "10.1.2.3", OWN));
        // An IP rule names the address, whatever name reached it.
        assert!(allowed(&r, "anything.test", 8080, "127.0.0.1", OWN));
    }

    #[test]
    fn ipv6_blocks() {
        let r = rules(&["[fd00::/8]:443"]);
        assert!(allowed(&r, "fd12::1", 443, "fd12::1", OWN));
        assert!(!allowed(&r, "fe80::1", 443, "fe80::1", OWN));
        assert!(!allowed(&r, "10.0.0.1", 443, "10.0.0.1", OWN));
        let r = rules(&["[fe80::/10]:443"]);
        assert!(allowed(&r, "fe80::1", 443, "fe80::1", OWN));
    }

    #[test]
    fn names_match_whatever_their_case_dot_or_script() {
        let r = rules(&["Bücher.Example:443", "*.EXAMPLE.org.:443"]);
        for n in [
            "bücher.example",
            "BÜCHER.EXAMPLE.",
            "xn--bcher-kva.example",
            "XN--BCHER-KVA.example",
        ] {
            assert!(allowed(&r, n, 443, "192.0.2.1", OWN), "{n}");
        }
        assert!(allowed(&r, "A.Example.Org.", 443, "192.0.2.1", OWN));
        assert!(allowed(&r, "ünï.example.org", 443, "192.0.2.1", OWN));
        assert!(!allowed(&r, "bucher.example", 443, "192.0.2.1", OWN));
    }

    #[test]
    fn port_ranges() {
        let r = rules(&["web.test:8000-8100"]);
        assert!(allowed(&r, "web.test", 8000, "192.0.2.1", OWN));
        assert!(allowed(&r, "web.test", 8050, "192.0.2.1", OWN));
        assert!(allowed(&r, "web.test", 8100, "192.0.2.1", OWN));
        assert_eq!(
            judge(&r, &name("web.test"), 8101, ip("192.0.2.1"), OWN),
            Verdict::Refuse(Refusal::PortNotAllowed)
        );
        assert!(!allowed(&r, "web.test", 7999, "192.0.2.1", OWN));
    }

    #[test]
    fn rebinding_each_answer_is_judged_on_its_own() {
        let r = rules(&["*.rebind.test:80"]);
        let host = name("a.rebind.test");
        let first = judge_all(&r, &host, 80, &[ip("192.0.2.10")], OWN);
        let second = judge_all(&r, &host, 80, &[ip("127.0.0.1"), ip("192.0.2.11")], OWN);
        let third = judge_all(&r, &host, 80, &[ip("::ffff:169.254.169.254")], OWN);
        assert!(first[0].1.is_allowed());
        assert_eq!(second[0].0, ip("127.0.0.1"));
        assert_eq!(
            class_refusal(second[0].1.clone()),
            Some(AddressClass::Loopback)
        );
        assert!(second[1].1.is_allowed());
        assert_eq!(third[0].0, ip("169.254.169.254"));
        assert_eq!(
            class_refusal(third[0].1.clone()),
            Some(AddressClass::LinkLocal)
        );
    }

    #[test]
    fn first_allowing_rule_wins_and_refusals_say_the_most() {
        let r = rules(&["*.x.test:443", "a.x.test:80", "127.0.0.1:443"]);
        assert_eq!(
            judge(&r, &name("a.x.test"), 443, ip("127.0.0.1"), OWN),
            Verdict::Allow {
                rule: "127.0.0.1:443".into()
            }
        );
        assert_eq!(
            class_refusal(judge(&r, &name("a.x.test"), 443, ip("127.0.0.2"), OWN)),
            Some(AddressClass::Loopback)
        );
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
            any::<u32>().prop_map(|a| IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped())),
            // Special ranges, more often than chance would pick them.
            any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | (a & 0xff_ffff)))),
            any::<u16>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(0xa9fe_0000 | u32::from(a)))),
            any::<u64>()
                .prop_map(|a| IpAddr::V6(Ipv6Addr::from((0xfe80u128 << 112) | u128::from(a)))),
            Just(IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254))),
            Just(OWN[0]),
            Just(OWN[1]),
        ]
    }

    proptest! {
        /// Wildcard and CIDR rules, however broad, never reach a special address; a special
        /// address is reached only through a rule that names it (a name, an exact IP, or a
        /// block within its range).
        #[test]
        fn broad_rules_never_reach_special_addresses(addr in any_ip(), port in 1u16..) {
            let r = rules(&["*.example.com:1-65535", "0.0.0.0/0:1-65535", "[::/0]:1-65535",
                            "10.0.0.0/8:1-65535", "[fe00::/7]:1-65535"]);
            for host in [name("a.example.com"), Host::Ip(canonical(addr))] {
                let v = judge(&r, &host, port, addr, OWN);
                prop_assert_eq!(v.is_allowed(), AddressClass::of(addr, OWN).is_none(), "{} {:?}", addr, v);
            }
        }

        /// A mapped IPv4 address is judged exactly as its IPv4 address.
        #[test]
        fn mapped_ipv4_judged_as_ipv4(a in any::<u32>(), port in 1u16..) {
            let r = rules(&["*.example.com:443", "10.0.0.0/8:1-1000", "127.0.0.1:80",
                            "169.254.0.0/16:443", "192.168.1.1:22"]);
            let v4 = IpAddr::V4(Ipv4Addr::from(a));
            let v6 = IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped());
            for host in [name("a.example.com"), Host::Ip(v4)] {
                prop_assert_eq!(judge(&r, &host, port, v4, OWN), judge(&r, &host, port, v6, OWN));
            }
        }

        /// A name rule allows any address on its ports and nothing on others.
        #[test]
        fn name_rule_ports(addr in any_ip(), port in 1u16..) {
            let r = rules(&["db.test:5000-5999"]);
            let v = judge(&r, &name("DB.test."), port, addr, OWN);
            prop_assert_eq!(v.is_allowed(), (5000..=5999).contains(&port));
        }

        /// Rebinding: judging one answer never depends on another answer of the same name.
        #[test]
        fn answers_judged_independently(addrs in proptest::collection::vec(any_ip(), 1..6), port in 1u16..) {
            let r = rules(&["*.example.com:1-65535", "127.0.0.1:80"]);
            let host = name("a.example.com");
            let all = judge_all(&r, &host, port, &addrs, OWN);
            for (i, a) in addrs.iter().enumerate() {
                prop_assert_eq!(&all[i].1, &judge(&r, &host, port, *a, OWN));
                prop_assert_eq!(all[i].0, canonical(*a));
            }
        }

        /// Arbitrary rule text parses or errors naming itself, never panics.
        #[test]
        fn arbitrary_rules_never_panic(s in "\\PC{0,40}") {
            if let Err(e) = s.parse::<super::super::Rule>() {
                prop_assert_eq!(e.rule, s);
            }
        }
    }
}
