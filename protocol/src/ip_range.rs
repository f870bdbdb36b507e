//! IP address ranges as a config names them: one address (`10.0.0.7`, `fd00::1`) or a CIDR
//! range (`10.0.0.0/8`, `fd00::/8`), IPv4 or IPv6. Parsing, printing and membership; no IO.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IPv4 or IPv6 network: the addresses whose first `prefix` bits are `addr`'s. One
/// address is the range of its full length (`/32`, `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRange {
    addr: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// The range of exactly one address.
    pub fn single(addr: IpAddr) -> IpRange {
        IpRange {
            addr,
            prefix: bits(addr),
        }
    }

    /// The range `addr/prefix`; `None` if the prefix is longer than the address or `addr`
    /// has bits set past it (`10.1.0.0/8`).
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpRange> {
        let range = IpRange { addr, prefix };
        (prefix <= bits(addr) && range.network() == addr).then_some(range)
    }

    /// The first address of the range.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// How many leading bits every address of the range shares with [`IpRange::addr`].
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in the range. An IPv4 range holds no IPv6 address and the other way
    /// round (an IPv4-mapped IPv6 address is the caller's to unwrap).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask_v4(self.prefix);
                u32::from(ip) & mask == u32::from(net) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask_v6(self.prefix);
                u128::from(ip) & mask == u128::from(net) & mask
            }
            _ => false,
        }
    }

    /// `addr` with the bits past the prefix cleared.
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask_v4(self.prefix)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask_v6(self.prefix)).into()),
        }
    }
}

fn bits(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

impl fmt::Display for IpRange {
    /// `10.0.0.0/8`, `fd00::/8`; one address alone (`127.0.0.1`, `::1`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == bits(self.addr) {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

impl FromStr for IpRange {
    type Err = String;

    /// `10.0.0.7`, `10.0.0.0/8`, `::1`, `fd00::/8`. The reason of an error says what is
    /// wrong and, for a range with bits set past its prefix, which range was meant.
    fn from_str(text: &str) -> Result<IpRange, String> {
        let what = || {
            format!(
                "{text:?} is not an IP address or a CIDR range (such as \"10.0.0.7\", \
                 \"10.0.0.0/8\", \"::1\" or \"fd00::/8\")"
            )
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| what())?;
        let Some(prefix) = prefix else {
            return Ok(IpRange::single(addr));
        };
        let max = bits(addr);
        let prefix = prefix
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max && prefix.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                format!(
                    "{text:?}: the prefix length of an IPv{v} range is 0 to {max}",
                    v = if max == 32 { 4 } else { 6 }
                )
            })?;
        IpRange::new(addr, prefix).ok_or_else(|| {
            let meant = IpRange { addr, prefix }.network();
            format!(
                "{text:?} has bits set past its /{prefix} prefix: the range is \
                 \"{meant}/{prefix}\", or write one address without a prefix"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &str) -> IpRange {
        text.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn addresses_and_ranges_parse_and_print_back() {
        for (text, shown) in [
            ("127.0.0.1", "127.0.0.1"),
            ("127.0.0.1/32", "127.0.0.1"),
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("::1", "::1"),
            ("::1/128", "::1"),
            ("fd00::/8", "fd00::/8"),
            ("FD00:0::/16", "fd00::/16"),
            ("::/0", "::/0"),
            ("::ffff:10.0.0.1", "::ffff:10.0.0.1"),
        ] {
            let parsed = range(text);
            assert_eq!(parsed.to_string(), shown, "{text}");
            assert_eq!(range(shown), parsed, "{text}");
        }
        assert_eq!(range("10.0.0.0/8").prefix(), 8);
        assert_eq!(range("10.0.0.0/8").addr(), ip("10.0.0.0"));
    }

    #[test]
    fn bad_ranges_are_refused_with_the_reason() {
        for (text, reason) in [
            ("", "not an IP address or a CIDR range"),
            ("localhost", "not an IP address or a CIDR range"),
            ("10.0.0", "not an IP address or a CIDR range"),
            ("[::1]", "not an IP address or a CIDR range"),
            ("10.0.0.1:80", "not an IP address or a CIDR range"),
            (" 10.0.0.1", "not an IP address or a CIDR range"),
            ("10.0.0.0/33", "prefix length of an IPv4 range is 0 to 32"),
            ("10.0.0.0/", "prefix length of an IPv4 range is 0 to 32"),
            ("10.0.0.0/+8", "prefix length of an IPv4 range is 0 to 32"),
            ("10.0.0.0/8/8", "prefix length of an IPv4 range is 0 to 32"),
            ("fd00::/129", "prefix length of an IPv6 range is 0 to 128"),
            ("10.1.2.3/8", "the range is \"10.0.0.0/8\""),
            ("fd00::1/8", "the range is \"fd00::/8\""),
        ] {
            let err = text.parse::<IpRange>().unwrap_err();
            assert!(err.contains(reason), "{text:?}: {err}");
        }
        assert_eq!(IpRange::new(ip("10.1.0.0"), 8), None);
        assert_eq!(IpRange::new(ip("10.0.0.0"), 33), None);
    }

    #[test]
    fn membership_follows_the_prefix_and_the_family() {
        let net = range("172.16.0.0/12");
        assert!(net.contains(ip("172.16.0.0")));
        assert!(net.contains(ip("172.31.255.255")));
        assert!(!net.contains(ip("172.32.0.0")));
        assert!(!net.contains(ip("172.15.255.255")));
        assert!(!net.contains(ip("::ffff:172.16.0.1")), "another family");
        let one = range("127.0.0.1");
        assert!(one.contains(ip("127.0.0.1")));
        assert!(!one.contains(ip("127.0.0.2")));
        assert!(range("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!range("0.0.0.0/0").contains(ip("::1")));
        let v6 = range("fe80::/10");
        assert!(v6.contains(ip("fe80::1")));
        assert!(v6.contains(ip("febf:ffff::1")));
        assert!(!v6.contains(ip("fec0::1")));
        assert!(range("::/0").contains(ip("2001:db8::1")));
        assert!(range("::1").contains(ip("::1")));
        assert!(!range("::1").contains(ip("::2")));
    }
}
