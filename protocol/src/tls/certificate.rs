//! What the link reads of a certificate besides its name: its serial number, the hash of
//! its public key, and when it expires. The core revokes an edge's certificates by these
//! (`crate::edges`), and every node exports its own certificate's expiry.
//!
//! A few lines of DER (X.509's `TBSCertificate`, RFC 5280 section 4.1) instead of a
//! parser crate: the certificate has already been verified by webpki when this runs on a
//! peer's, or was checked when loaded when it is the node's own. No IO, no clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;

/// What a certificate says of itself, beyond the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The serial number, as lowercase hex of its DER integer bytes (as `openssl x509
    /// -serial` prints it, in lowercase).
    pub serial: String,
    /// SHA-256 of the DER SubjectPublicKeyInfo, lowercase hex: the key, whatever
    /// certificate carries it (`openssl x509 -pubkey -noout | openssl pkey -pubin
    /// -outform der | sha256sum`).
    pub key_sha256: String,
    /// The start of its validity.
    pub not_before: SystemTime,
    /// The end of its validity.
    pub not_after: SystemTime,
}

impl CertificateInfo {
    /// Reads a DER certificate; an error says which part does not read.
    pub fn read(der: &CertificateDer<'_>) -> Result<CertificateInfo, String> {
        let (cert, _) = value(der.as_ref(), SEQUENCE).ok_or("not a DER certificate")?;
        let (tbs, _) = value(cert, SEQUENCE).ok_or("no TBSCertificate")?;
        // [0] EXPLICIT version, absent in version 1 certificates.
        let rest = match value(tbs, VERSION) {
            Some((_, rest)) => rest,
            None => tbs,
        };
        let (serial, rest) = value(rest, INTEGER).ok_or("no serial number")?;
        let (_signature, rest) = value(rest, SEQUENCE).ok_or("no signature algorithm")?;
        let (_issuer, rest) = value(rest, SEQUENCE).ok_or("no issuer")?;
        let (validity, rest) = value(rest, SEQUENCE).ok_or("no validity")?;
        let (_subject, rest) = value(rest, SEQUENCE).ok_or("no subject")?;
        let key = whole(rest, SEQUENCE).ok_or("no subject public key")?;
        let (tag, not_before, validity) = any_value_tagged(validity).ok_or("no notBefore")?;
        let not_before = time(tag, not_before).ok_or("unreadable notBefore")?;
        let (tag, not_after, _) = any_value_tagged(validity).ok_or("no notAfter")?;
        let not_after = time(tag, not_after).ok_or("unreadable notAfter")?;
        let digest = ring::digest::digest(&ring::digest::SHA256, key);
        Ok(CertificateInfo {
            serial: hex(serial),
            key_sha256: hex(digest.as_ref()),
            not_before,
            not_after,
        })
    }

    /// Whether it is due for renewal at `now`: less than [`RENEW_WITHIN`] of its
    /// lifetime left.
    pub fn renewal_due(&self, now: SystemTime) -> bool {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.expires_in(now) < lifetime / RENEW_WITHIN
    }

    /// Time left before it expires (zero once expired), seen from `now`.
    pub fn expires_in(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or_default()
    }
}

/// A certificate is renewed over the link once less than 1/8 of its lifetime is left:
/// ~7 months for the 5-year certificates of `core-node certs` and enrollment, so that an
/// edge away for months still renews in time; 11 days for cert-manager's 90-day
/// certificates, after cert-manager's own renewal (15 days before) has had its turn.
pub const RENEW_WITHIN: u32 = 8;

const INTEGER: u8 = 0x02;
const SEQUENCE: u8 = 0x30;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// One DER value of tag `tag` at the start of `input`: `(contents, rest)`.
fn value(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, contents, rest) = any_value_tagged(input)?;
    (found == tag).then_some((contents, rest))
}

/// The whole encoding (tag, length and contents) of a value of tag `tag`.
fn whole(input: &[u8], tag: u8) -> Option<&[u8]> {
    let (found, contents, rest) = any_value_tagged(input)?;
    let _ = contents;
    let end = input.len() - rest.len();
    (found == tag).then(|| &input[..end])
}

/// `(tag, contents, rest)` of the value at the start of `input` (definite lengths of at
/// most four bytes, as DER certificates have).
fn any_value_tagged(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let len = bytes
            .iter()
            .fold(0usize, |len, b| (len << 8) | usize::from(*b));
        (len, rest)
    };
    (rest.len() >= len).then(|| {
        let (contents, rest) = rest.split_at(len);
        (tag, contents, rest)
    })
}

/// An X.509 time: UTCTime `YYMMDDHHMMSSZ` (years 1950-2049) or GeneralizedTime
/// `YYYYMMDDHHMMSSZ`.
fn time(tag: u8, text: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(text).ok()?;
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| digits.get(range)?.parse::<u64>().ok();
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy = number(0..2)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        (GENERALIZED_TIME, 14) => (number(0..4)?, 4),
        _ => return None,
    };
    let field = |i: usize| number(rest + 2 * i..rest + 2 * i + 2);
    let (month, day, hour, minute, second) =
        (field(0)?, field(1)?, field(2)?, field(3)?, field(4)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = crate::calendar::days_from_civil(year, month, day)?;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

/// `bytes` as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_the_calendar_says() {
        let at = |tag, text: &str| {
            time(tag, text.as_bytes()).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs())
        };
        assert_eq!(at(UTC_TIME, "700101000000Z"), Some(0));
        assert_eq!(at(UTC_TIME, "000301000000Z"), Some(951_868_800));
        assert_eq!(at(GENERALIZED_TIME, "20380119031408Z"), Some(2_147_483_648));
        assert_eq!(at(UTC_TIME, "491231235959Z"), Some(2_524_607_999));
        assert_eq!(at(UTC_TIME, "0001010000Z"), None);
        assert_eq!(at(UTC_TIME, "701301000000Z"), None);
        assert_eq!(at(GENERALIZED_TIME, "700101000000Z"), None);
        assert_eq!(at(UTC_TIME, "70010100000+Z"), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &[][..],
            &[0x30],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0x00],
        ] {
            assert!(CertificateInfo::read(&CertificateDer::from(bytes.to_vec())).is_err());
        }
    }

    #[test]
    fn a_certificate_is_due_for_renewal_in_the_last_eighth_of_its_life() {
        let day = Duration::from_secs(86_400);
        let start = UNIX_EPOCH + 1000 * day;
        let info = CertificateInfo {
            serial: String::new(),
            key_sha256: String::new(),
            not_before: start,
            not_after: start + 80 * day,
        };
        assert!(!info.renewal_due(start));
        assert!(!info.renewal_due(start + 69 * day));
        assert!(info.renewal_due(start + 71 * day));
        assert!(info.renewal_due(start + 90 * day), "expired: still due");
    }
}
