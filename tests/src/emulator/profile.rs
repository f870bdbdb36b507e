//! The named link profiles, the one place that says what `lte` or `satcom` means for the
//! tests, the benchmarks and the demo.
//!
//! "Down" is core to edge (`c2e`), "up" is edge to core (`e2c`). A profile's round trip
//! is split evenly: each direction delays by half of it. Loss is the same both ways.
//!
//! Queue sizes follow one rule ([`queue_for`]): about one second of data at the
//! direction's rate, like a modem's buffer, but never less than four full-size
//! datagrams, so that a slow link still holds a few QUIC packets (on `hf` the floor
//! wins: 6,000 bytes is five seconds at 9.6 kbit/s, which is what such radios do).

use std::fmt;
use std::num::NonZeroU64;
use std::time::Duration;

/// What one direction of a link does to the datagrams that cross it.
#[derive(Debug, Clone, PartialEq)]
pub struct OneWay {
    /// Bits per second of UDP payload (IP and UDP headers are not counted); `None` means
    /// no limit. A datagram of `n` bytes occupies the link for `n * 8 / rate` seconds.
    pub rate_bps: Option<NonZeroU64>,
    /// Bytes of UDP payload that may wait for the link, including the datagram being
    /// sent; a datagram that does not fit is dropped (tail drop). Without a rate limit it
    /// caps the bytes held in the delay line instead.
    pub queue_bytes: u64,
    /// The one-way propagation delay, added after the datagram has been sent at the rate.
    pub delay: Duration,
    /// Extra delay, uniform in `0..=jitter`, per datagram. It never reorders datagrams:
    /// a datagram is never released before the one ahead of it.
    pub jitter: Duration,
    /// Probability, from 0 to 1, that a datagram is lost after it has used its time on
    /// the link (radio loss costs airtime).
    pub loss: f64,
}

impl OneWay {
    /// No limit, no delay, no loss.
    pub const UNLIMITED: OneWay = OneWay {
        rate_bps: None,
        queue_bytes: LAN_QUEUE_BYTES,
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        loss: 0.0,
    };

    /// A direction with the given rate (bits per second, 0 for no limit), one-way delay
    /// and loss, its queue sized by [`queue_for`] and no jitter.
    pub const fn new(rate_bps: u64, delay: Duration, loss: f64) -> OneWay {
        OneWay {
            rate_bps: NonZeroU64::new(rate_bps),
            queue_bytes: queue_for(rate_bps),
            delay,
            jitter: Duration::ZERO,
            loss,
        }
    }
}

/// The largest UDP payload the queue-size rule assumes for one packet (an Ethernet MTU
/// minus IP and UDP headers, rounded up; QUIC sends at most this much per datagram here).
pub const FULL_DATAGRAM: u64 = 1_500;

/// Without a rate limit, the bytes a direction may hold (those in its delay line): enough
/// for a QUIC burst at loopback speed while the relay thread is descheduled for a few ms.
const LAN_QUEUE_BYTES: u64 = 4 << 20;

/// The queue for a direction of `rate_bps` (0 for no limit): one second of data at the
/// rate, at least four full-size datagrams.
pub const fn queue_for(rate_bps: u64) -> u64 {
    if rate_bps == 0 {
        return LAN_QUEUE_BYTES;
    }
    let one_second = rate_bps / 8;
    let floor = 4 * FULL_DATAGRAM;
    if one_second > floor {
        one_second
    } else {
        floor
    }
}

/// A link: what each direction does, under a name for logs and reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The profile's name, as [`Profile::named`] takes it (or a free name for a custom one).
    pub name: String,
    /// Edge to core ("up").
    pub e2c: OneWay,
    /// Core to edge ("down").
    pub c2e: OneWay,
}

impl Profile {
    /// The named profiles, in order of increasing misery.
    pub const NAMES: [&'static str; 5] = ["lan", "lte", "satcom", "tactical", "hf"];

    /// The profile called `name` (one of [`Profile::NAMES`]).
    pub fn named(name: &str) -> Result<Profile, UnknownProfile> {
        // (down rate c2e, up rate e2c, round trip in ms, loss)
        let (down, up, rtt_ms, loss) = match name {
            "lan" => return Ok(Profile::lan()),
            "lte" => (20_000_000, 5_000_000, 60, 0.005),
            "satcom" => (2_000_000, 256_000, 600, 0.01),
            "tactical" => (64_000, 64_000, 1_200, 0.05),
            "hf" => (9_600, 9_600, 2_500, 0.10),
            _ => return Err(UnknownProfile(name.to_owned())),
        };
        let one_way = Duration::from_millis(rtt_ms) / 2;
        Ok(Profile {
            name: name.to_owned(),
            e2c: OneWay::new(up, one_way, loss),
            c2e: OneWay::new(down, one_way, loss),
        })
    }

    /// `lan`: no limit, no delay, no loss; the emulator only counts.
    pub fn lan() -> Profile {
        Profile::symmetric("lan", OneWay::UNLIMITED)
    }

    /// A custom profile that does the same both ways.
    pub fn symmetric(name: &str, one_way: OneWay) -> Profile {
        Profile {
            name: name.to_owned(),
            e2c: one_way.clone(),
            c2e: one_way,
        }
    }

    /// The round trip without queueing or serialization: both one-way delays.
    pub fn round_trip(&self) -> Duration {
        self.e2c.delay + self.c2e.delay
    }
}

impl std::str::FromStr for Profile {
    type Err = UnknownProfile;

    fn from_str(name: &str) -> Result<Profile, UnknownProfile> {
        Profile::named(name)
    }
}

/// A profile name that is not one of [`Profile::NAMES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownProfile(pub String);

impl fmt::Display for UnknownProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown link profile {:?} (known: {})",
            self.0,
            Profile::NAMES.join(", ")
        )
    }
}

impl std::error::Error for UnknownProfile {}
