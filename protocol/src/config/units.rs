//! Units: sizes (`"512KiB"`, `"10GB"`, bytes) and durations (`"500ms"`, `"7d"`), read
//! and written.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// A size or duration as written: an integer or a string, parsed when checked (by
/// [`positive_size`], [`positive_duration`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scalar {
    /// An integer: bytes (a duration needs a unit).
    Int(i64),
    /// A string with a unit: `"64MiB"`, `"10s"`.
    Text(String),
}

/// A size in bytes, 0 included.
pub(super) fn size_or_zero(value: &Scalar) -> Result<u64, String> {
    match value {
        Scalar::Int(n) => {
            u64::try_from(*n).map_err(|_| format!("invalid size {n}: must not be negative"))
        }
        Scalar::Text(text) if text.trim() == "0" => Ok(0),
        Scalar::Text(text) => parse_size(text),
    }
}

/// A size more than 0, in bytes.
pub fn positive_size(value: &Scalar) -> Result<u64, String> {
    let bytes = match value {
        Scalar::Int(n) => {
            u64::try_from(*n).map_err(|_| format!("invalid size {n}: must not be negative"))?
        }
        Scalar::Text(text) => parse_size(text)?,
    };
    if bytes == 0 {
        return Err("must be more than 0".to_owned());
    }
    Ok(bytes)
}

/// A duration more than 0.
pub fn positive_duration(value: &Scalar) -> Result<Duration, String> {
    let duration = match value {
        Scalar::Int(n) => {
            return Err(format!(
                "invalid duration {n}: add a unit, as in \"{n}s\" (ns, us, ms, s, m, h, d)"
            ));
        }
        Scalar::Text(text) => parse_duration(text)?,
    };
    if duration.is_zero() {
        return Err("must be more than 0".to_owned());
    }
    Ok(duration)
}

/// Size units, largest first; [`format_size`] picks the first that divides exactly.
const SIZE_UNITS: [(&str, u64); 8] = [
    ("TiB", 1 << 40),
    ("TB", 1_000_000_000_000),
    ("GiB", 1 << 30),
    ("GB", 1_000_000_000),
    ("MiB", 1 << 20),
    ("MB", 1_000_000),
    ("KiB", 1 << 10),
    ("KB", 1_000),
];

/// Parses `"512MiB"`, `"10 GB"`, `"4096"` or `"4096B"` into bytes (units ignore case).
pub(super) fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number(text.trim());
    let invalid = |why: &str| format!("invalid size {text:?}: {why}");
    if number.is_empty() {
        return Err(invalid(
            "expected a whole number and a unit, as in \"512MiB\"",
        ));
    }
    if unit.starts_with(['.', ',']) {
        return Err(invalid(
            "use a whole number with a smaller unit, as in \"1536MiB\"",
        ));
    }
    let multiplier = match unit {
        "" => 1,
        u if u.eq_ignore_ascii_case("b") => 1,
        u => SIZE_UNITS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(u))
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                invalid(&format!(
                    "unknown unit {u:?} (use B, KB, KiB, MB, MiB, GB, GiB, TB or TiB)"
                ))
            })?,
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| invalid("too large"))
}

/// Parses `"500ms"`, `"10s"`, `"30m"`, `"12h"` or `"7d"` (also `ns` and `us`).
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = split_number(text.trim());
    let invalid = |why: &str| format!("invalid duration {text:?}: {why}");
    if number.is_empty() {
        return Err(invalid("expected a whole number and a unit, as in \"10s\""));
    }
    if unit.starts_with(['.', ',']) {
        return Err(invalid(
            "use a whole number with a smaller unit, as in \"1500ms\"",
        ));
    }
    let n: u64 = number.parse().map_err(|_| invalid("too large"))?;
    let secs = |unit: u64| {
        n.checked_mul(unit)
            .map(Duration::from_secs)
            .ok_or_else(|| invalid("too large"))
    };
    match unit {
        "" => Err(invalid(&format!(
            "add a unit, as in \"{n}s\" (ns, us, ms, s, m, h, d)"
        ))),
        "ns" => Ok(Duration::from_nanos(n)),
        "us" => Ok(Duration::from_micros(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(60 * 60),
        "d" => secs(24 * 60 * 60),
        u => Err(invalid(&format!(
            "unknown unit {u:?} (use ns, us, ms, s, m, h or d)"
        ))),
    }
}

/// `"10 GiB"` -> `("10", "GiB")`.
fn split_number(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    (number, unit.trim_start())
}

/// A size as TOML: a string with the largest exact unit, else an integer of bytes.
pub fn size_value(bytes: u64) -> toml::Value {
    match SIZE_UNITS.iter().find(|(_, m)| bytes.is_multiple_of(*m)) {
        Some((unit, m)) if bytes > 0 => toml::Value::String(format!("{}{unit}", bytes / m)),
        // Past i64 (TOML's integers), the digits alone as a string still parse as bytes.
        _ => i64::try_from(bytes).map_or_else(
            |_| toml::Value::String(bytes.to_string()),
            toml::Value::Integer,
        ),
    }
}

/// A duration with the largest unit that divides it exactly: `"7d"`, `"90s"`, `"1500ms"`.
pub fn format_duration(duration: Duration) -> String {
    const UNITS: [(&str, u128); 7] = [
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];
    let nanos = duration.as_nanos();
    let (unit, per) = UNITS
        .iter()
        .find(|(_, per)| nanos.is_multiple_of(*per))
        .copied()
        .unwrap_or(("ns", 1));
    format!("{}{unit}", nanos / per)
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string with a unit")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(n))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Scalar, E> {
                i64::try_from(n)
                    .map(Scalar::Int)
                    .map_err(|_| E::custom("integer too large"))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(text.to_owned()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{check_error, load};
    use crate::role::Role;

    #[test]
    fn bad_sizes_and_durations() {
        let store =
            |key: &str, value: &str| load(Role::Core, &format!("[store]\n{key} = {value}\n"), &[]);
        check_error(
            store("max_entry_bytes", "\"12XB\""),
            &["store.max_entry_bytes", "unknown unit \"XB\""],
        );
        check_error(
            store("max_entry_bytes", "\"MiB\""),
            &["store.max_entry_bytes", "expected a whole number"],
        );
        check_error(
            store("max_entry_bytes", "\"1.5MiB\""),
            &["store.max_entry_bytes", "use a whole number"],
        );
        check_error(
            store("max_entry_bytes", "0"),
            &["store.max_entry_bytes: must be more than 0"],
        );
        check_error(
            store("cache_bytes", "-1"),
            &["store.cache_bytes", "must not be negative"],
        );
        check_error(
            store("disk_budget", "\"99999999999TiB\""),
            &["store.disk_budget", "too large"],
        );
        check_error(
            store("disk_budget", "true"),
            &["line 2", "expected an integer or a string"],
        );
        check_error(
            store("retention_interval", "10"),
            &["store.retention_interval", "add a unit, as in \"10s\""],
        );
        check_error(
            store("retention_interval", "\"10\""),
            &["store.retention_interval", "add a unit"],
        );
        check_error(
            store("retention_interval", "\"10y\""),
            &["store.retention_interval", "unknown unit \"y\""],
        );
        check_error(
            store("retention_interval", "\"0s\""),
            &["store.retention_interval: must be more than 0"],
        );
        let topic = |extra: &str| {
            load(
                Role::Core,
                &format!("[[topics]]\nname = \"A\"\nscope = \"all\"\n{extra}\n"),
                &[],
            )
        };
        check_error(
            topic("max_age = \"1w\""),
            &[
                "config file /etc/tether/node.toml: topics[0].max_age",
                "unknown unit \"w\"",
            ],
        );
        check_error(
            topic("max_bytes = 0"),
            &["topics[0].max_bytes: must be more than 0"],
        );
        check_error(
            topic("max_entries = 0"),
            &["topics[0].max_entries: must be more than 0"],
        );

        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("10mb"), Ok(10_000_000));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(size_value(1 << 20).to_string(), "\"1MiB\"");
        assert_eq!(size_value(10_000_000).to_string(), "\"10MB\"");
        assert_eq!(size_value(1001).to_string(), "1001");
    }
}
