//! The downloader's address classifier: which IP addresses a feed item may not make HQ
//! connect to (loopback, private, link-local, ...), and the operator's exceptions.
//!
//! A feed document is not trusted (DESIGN.md, "The mission pipeline"): an item naming
//! `http://169.254.169.254/` or `http://127.0.0.1:8080/api/...` would have HQ fetch from
//! inside its own network. [`check`] refuses every address that is not public unicast,
//! unless the operator's allow-list (`pipeline.download_allow`) holds it. IPv6 forms that
//! carry an IPv4 address (IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64 and 6to4)
//! are judged by the IPv4 address they carry, which is where the packets end up.
//!
//! Pure functions; no IO. The downloader calls [`check`] on every address a name resolves
//! to, before it connects, at every redirect (`download.rs`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use protocol::ip_range::IpRange;

/// Why an address is refused: what kind of address it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `0.0.0.0/8` ("this network"; connecting to `0.0.0.0` reaches this host), `::`.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `169.254.0.0/16` (where clouds serve instance metadata), `fe80::/10`.
    LinkLocal,
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`, `fc00::/7`, `fec0::/10`, and the
    /// local-use NAT64 prefix `64:ff9b:1::/48`.
    Private,
    /// `100.64.0.0/10`, shared by carrier-grade NATs (and by some clusters' pods).
    Shared,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// Not for hosts on the internet: `192.0.0.0/24`, the documentation ranges
    /// (`192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`),
    /// benchmarking (`198.18.0.0/15`), `240.0.0.0/4`, discard-only `100::/64`.
    Reserved,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Unspecified => "an unspecified",
            Class::Loopback => "a loopback",
            Class::LinkLocal => "a link-local",
            Class::Private => "a private",
            Class::Shared => "a shared (carrier-grade NAT)",
            Class::Multicast => "a multicast",
            Class::Broadcast => "the broadcast",
            Class::Reserved => "a reserved",
        }
    }
}

/// How an IPv6 address carries an IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedding {
    /// `::ffff:a.b.c.d`: the IPv4 address itself, through a dual-stack socket.
    Mapped,
    /// `::a.b.c.d` (deprecated, still accepted by some stacks).
    Compatible,
    /// `::ffff:0:a.b.c.d` (SIIT).
    Translated,
    /// `64:ff9b::a.b.c.d`: a NAT64 gateway forwards to the IPv4 address.
    Nat64,
    /// `2002:aabb:ccdd::/48`: 6to4, tunnelled to the IPv4 address `aa.bb.cc.dd`.
    SixToFour,
}

impl Embedding {
    fn name(self) -> &'static str {
        match self {
            Embedding::Mapped => "IPv4-mapped",
            Embedding::Compatible => "IPv4-compatible",
            Embedding::Translated => "IPv4-translated",
            Embedding::Nat64 => "NAT64",
            Embedding::SixToFour => "6to4",
        }
    }
}

/// A refused address: which, of what class, and the IPv4 address it carries if that is
/// what was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The address as resolved.
    pub addr: IpAddr,
    /// What kind of address it is (or the IPv4 address it carries).
    pub class: Class,
    /// The IPv4 address inside an IPv6 one, when it decided.
    pub carries: Option<(Embedding, Ipv4Addr)>,
}

impl Refusal {
    /// What the address is: `a loopback address`, `a private address (the IPv4-mapped
    /// form of 10.0.0.1)`.
    pub fn kind(&self) -> String {
        match self.carries {
            Some((embedding, v4)) => format!(
                "{} address (the {} form of {v4})",
                self.class.name(),
                embedding.name()
            ),
            None => format!("{} address", self.class.name()),
        }
    }
}

impl fmt::Display for Refusal {
    /// `127.0.0.1 is a loopback address`, `::ffff:10.0.0.1 is a private address (the
    /// IPv4-mapped form of 10.0.0.1)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is {}", self.addr, self.kind())
    }
}

/// The IPv4 address an IPv6 address carries, and how; `None` for `::` and `::1`, which
/// are IPv6's own.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<(Embedding, Ipv4Addr)> {
    let bits = u128::from(ip);
    let low = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    let segments = ip.segments();
    if bits >> 32 == 0xffff {
        Some((Embedding::Mapped, low))
    } else if bits >> 32 == 0 && bits > 1 {
        Some((Embedding::Compatible, low))
    } else if bits >> 32 == 0xffff_0000 {
        Some((Embedding::Translated, low))
    } else if bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000 {
        Some((Embedding::Nat64, low))
    } else if segments[0] == 0x2002 {
        let v4 = (u32::from(segments[1]) << 16) | u32::from(segments[2]);
        Some((Embedding::SixToFour, Ipv4Addr::from(v4)))
    } else {
        None
    }
}

/// The class of an address the downloader refuses; `None` for a public unicast address.
pub fn classify(ip: IpAddr) -> Option<Refusal> {
    let refusal = |class, carries| Refusal {
        addr: ip,
        class,
        carries,
    };
    match ip {
        IpAddr::V4(v4) => classify_v4(v4).map(|class| refusal(class, None)),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some((embedding, v4)) => {
                classify_v4(v4).map(|class| refusal(class, Some((embedding, v4))))
            }
            None => classify_v6(v6).map(|class| refusal(class, None)),
        },
    }
}

/// Whether the downloader may connect to `ip`: a public address, or one the operator's
/// `allow` list holds (the address itself, or the IPv4 address it carries).
pub fn check(ip: IpAddr, allow: &[IpRange]) -> Result<(), Refusal> {
    let carried = match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map(|(_, v4)| IpAddr::V4(v4)),
        IpAddr::V4(_) => None,
    };
    let allowed = allow
        .iter()
        .any(|range| range.contains(ip) || carried.is_some_and(|v4| range.contains(v4)));
    match classify(ip) {
        Some(refusal) if !allowed => Err(refusal),
        _ => Ok(()),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Class> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => Class::Unspecified,
        (127, _, _) => Class::Loopback,
        (169, 254, _) => Class::LinkLocal,
        (10, _, _) | (192, 168, _) => Class::Private,
        (172, 16..=31, _) => Class::Private,
        (100, 64..=127, _) => Class::Shared,
        (224..=239, _, _) => Class::Multicast,
        _ if ip == Ipv4Addr::BROADCAST => Class::Broadcast,
        (240..=255, _, _) => Class::Reserved,
        (192, 0, 0 | 2) | (198, 51, 100) | (203, 0, 113) | (198, 18..=19, _) => Class::Reserved,
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<Class> {
    let s = ip.segments();
    Some(match s[0] {
        _ if ip.is_unspecified() => Class::Unspecified,
        _ if ip.is_loopback() => Class::Loopback,
        0xfe80..=0xfebf => Class::LinkLocal,
        0xfec0..=0xfeff | 0xfc00..=0xfdff => Class::Private,
        0xff00..=0xffff => Class::Multicast,
        0x0064 if s[1] == 0xff9b && s[2] == 1 => Class::Private,
        0x0100 if s[1..4] == [0, 0, 0] => Class::Reserved,
        0x2001 if s[1] == 0x0db8 => Class::Reserved,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn class(text: &str) -> Option<Class> {
        classify(ip(text)).map(|r| r.class)
    }

    #[test]
    fn public_addresses_pass() {
        for text in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.255.255",
            "192.167.0.1",
            "192.0.1.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "fbff::1",
        ] {
            assert_eq!(classify(ip(text)), None, "{text}");
            assert_eq!(check(ip(text), &[]), Ok(()), "{text}");
        }
    }

    #[test]
    fn each_class_is_refused() {
        for (text, expected) in [
            ("0.0.0.0", Class::Unspecified),
            ("0.1.2.3", Class::Unspecified),
            ("::", Class::Unspecified),
            ("127.0.0.1", Class::Loopback),
            ("127.255.255.254", Class::Loopback),
            ("::1", Class::Loopback),
            ("169.254.169.254", Class::LinkLocal),
            ("169.254.0.0", Class::LinkLocal),
            ("fe80::1", Class::LinkLocal),
            ("febf:ffff::1", Class::LinkLocal),
            ("10.0.0.1", Class::Private),
            ("10.255.255.255", Class::Private),
            ("172.16.0.1", Class::Private),
            ("172.31.255.255", Class::Private),
            ("192.168.1.1", Class::Private),
            ("fc00::1", Class::Private),
            ("fd12:3456::1", Class::Private),
            ("fec0::1", Class::Private),
            ("64:ff9b:1::a00:1", Class::Private),
            ("100.64.0.1", Class::Shared),
            ("100.127.255.255", Class::Shared),
            ("224.0.0.1", Class::Multicast),
            ("239.255.255.250", Class::Multicast),
            ("ff02::1", Class::Multicast),
            ("ff05::1:3", Class::Multicast),
            ("255.255.255.255", Class::Broadcast),
            ("240.0.0.1", Class::Reserved),
            ("192.0.0.8", Class::Reserved),
            ("192.0.2.1", Class::Reserved),
            ("198.18.0.1", Class::Reserved),
            ("198.51.100.7", Class::Reserved),
            ("203.0.113.9", Class::Reserved),
            ("100::1", Class::Reserved),
            ("2001:db8::1", Class::Reserved),
        ] {
            assert_eq!(class(text), Some(expected), "{text}");
            let refusal = check(ip(text), &[]).unwrap_err();
            assert_eq!(refusal.class, expected, "{text}");
            assert_eq!(refusal.carries, None, "{text}");
        }
    }

    #[test]
    fn ipv6_forms_of_an_ipv4_address_are_judged_by_it() {
        for (text, expected, embedding, v4) in [
            (
                "::ffff:127.0.0.1",
                Class::Loopback,
                Embedding::Mapped,
                "127.0.0.1",
            ),
            (
                "::ffff:7f00:1",
                Class::Loopback,
                Embedding::Mapped,
                "127.0.0.1",
            ),
            (
                "::ffff:169.254.169.254",
                Class::LinkLocal,
                Embedding::Mapped,
                "169.254.169.254",
            ),
            (
                "::ffff:10.1.2.3",
                Class::Private,
                Embedding::Mapped,
                "10.1.2.3",
            ),
            (
                "::ffff:0.0.0.0",
                Class::Unspecified,
                Embedding::Mapped,
                "0.0.0.0",
            ),
            (
                "::127.0.0.1",
                Class::Loopback,
                Embedding::Compatible,
                "127.0.0.1",
            ),
            (
                "::192.168.0.1",
                Class::Private,
                Embedding::Compatible,
                "192.168.0.1",
            ),
            (
                "::ffff:0:10.0.0.1",
                Class::Private,
                Embedding::Translated,
                "10.0.0.1",
            ),
            (
                "64:ff9b::127.0.0.1",
                Class::Loopback,
                Embedding::Nat64,
                "127.0.0.1",
            ),
            (
                "64:ff9b::a9fe:a9fe",
                Class::LinkLocal,
                Embedding::Nat64,
                "169.254.169.254",
            ),
            (
                "64:ff9b::224.0.0.1",
                Class::Multicast,
                Embedding::Nat64,
                "224.0.0.1",
            ),
            (
                "2002:a00:1::1",
                Class::Private,
                Embedding::SixToFour,
                "10.0.0.1",
            ),
            (
                "2002:7f00:1::",
                Class::Loopback,
                Embedding::SixToFour,
                "127.0.0.1",
            ),
        ] {
            let refusal = check(ip(text), &[]).unwrap_err();
            let v4: Ipv4Addr = v4.parse().unwrap();
            assert_eq!(refusal.class, expected, "{text}");
            assert_eq!(refusal.carries, Some((embedding, v4)), "{text}");
        }
        assert_eq!(
            embedded_v4("::ffff:1.2.3.4".parse().unwrap()),
            Some((Embedding::Mapped, Ipv4Addr::new(1, 2, 3, 4)))
        );
        // IPv6's own unspecified and loopback addresses carry nothing.
        assert_eq!(embedded_v4(Ipv6Addr::UNSPECIFIED), None);
        assert_eq!(embedded_v4(Ipv6Addr::LOCALHOST), None);
        assert_eq!(embedded_v4("2001:db8::1".parse().unwrap()), None);
    }

    #[test]
    fn refusals_say_what_the_address_is() {
        assert_eq!(
            check(ip("127.0.0.1"), &[]).unwrap_err().to_string(),
            "127.0.0.1 is a loopback address"
        );
        assert_eq!(
            check(ip("169.254.169.254"), &[]).unwrap_err().to_string(),
            "169.254.169.254 is a link-local address"
        );
        assert_eq!(
            check(ip("::ffff:10.0.0.1"), &[]).unwrap_err().to_string(),
            "::ffff:10.0.0.1 is a private address (the IPv4-mapped form of 10.0.0.1)"
        );
        assert_eq!(
            check(ip("64:ff9b::7f00:1"), &[]).unwrap_err().to_string(),
            "64:ff9b::7f00:1 is a loopback address (the NAT64 form of 127.0.0.1)"
        );
        assert_eq!(
            check(ip("100.64.0.1"), &[]).unwrap_err().to_string(),
            "100.64.0.1 is a shared (carrier-grade NAT) address"
        );
        assert_eq!(
            check(ip("255.255.255.255"), &[]).unwrap_err().to_string(),
            "255.255.255.255 is the broadcast address"
        );
    }

    #[test]
    fn the_allow_list_lets_addresses_and_ranges_through() {
        let allow: Vec<IpRange> = ["127.0.0.1", "10.0.0.0/8", "fd00::/8", "169.254.169.254"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect();
        for text in [
            "127.0.0.1",
            "10.0.0.1",
            "10.255.255.255",
            "fd00::1",
            "fdff:ffff::1",
            "169.254.169.254",
            // The IPv4 address it carries is allowed, so is the IPv6 form.
            "::ffff:127.0.0.1",
            "::ffff:10.9.8.7",
            "64:ff9b::a00:1",
            // Public addresses need no allowing.
            "8.8.8.8",
        ] {
            assert_eq!(check(ip(text), &allow), Ok(()), "{text}");
        }
        for (text, expected) in [
            ("127.0.0.2", Class::Loopback),
            ("::1", Class::Loopback),
            ("::ffff:127.0.0.2", Class::Loopback),
            ("192.168.0.1", Class::Private),
            ("fc00::1", Class::Private),
            ("169.254.169.253", Class::LinkLocal),
        ] {
            assert_eq!(
                check(ip(text), &allow).map_err(|r| r.class),
                Err(expected),
                "{text}"
            );
        }
        // An allowed IPv6 range does not open the IPv4 address it could be read as.
        let v6_only: Vec<IpRange> = vec!["::ffff:0:0/96".parse().unwrap()];
        assert_eq!(check(ip("::ffff:10.0.0.1"), &v6_only), Ok(()));
        assert!(check(ip("10.0.0.1"), &v6_only).is_err());
        // Everything, for a lab that wants it.
        let all: Vec<IpRange> = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
        for text in ["127.0.0.1", "::1", "ff02::1", "255.255.255.255"] {
            assert_eq!(check(ip(text), &all), Ok(()), "{text}");
        }
    }
}
