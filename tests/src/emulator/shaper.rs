//! One direction of the link as a model without IO: datagrams are offered with the time
//! they arrived, the model decides each one's fate and release time, and the relay's
//! release thread takes those that are due.
//!
//! The release time is computed once, on arrival, from a virtual clock, so the rate does
//! not drift with the threads' scheduling: a datagram starts to "serialize" when the link
//! has finished the one before it (`busy_until`), occupies the link for `len * 8 / rate`,
//! then travels for the delay plus its jitter, never overtaking the one ahead of it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::profile::OneWay;
use super::{Direction, QUIC_MIN_MTU, Tally};
use crate::Rng;

/// Slack on top of what a rate-limited direction can legitimately hold (its queue plus
/// its delay line at full rate), for the release thread's lag; beyond that, datagrams are
/// dropped as overflow, so memory stays bounded whatever the sender does.
const HELD_SLACK: u64 = 64 << 10;

/// Why a datagram taken from the delay line is not delivered.
#[derive(Debug, Clone, Copy)]
pub(super) enum Undelivered {
    /// The link is down at its release time.
    Outage,
    /// There is nowhere to send it (no edge address seen yet).
    Error,
}

/// The state of one direction: its settings, serialization clock, delay line and counts.
#[derive(Debug)]
pub(super) struct Shaper {
    shape: OneWay,
    /// When the link has finished serializing everything it accepted.
    busy_until: Option<Instant>,
    /// The release time of the last datagram accepted: no later one is released earlier.
    last_release: Option<Instant>,
    /// Accepted datagrams in release order (release times never decrease).
    held: VecDeque<(Instant, Vec<u8>)>,
    held_bytes: u64,
    loss_rng: Rng,
    jitter_rng: Rng,
    counts: Direction,
}

impl Shaper {
    /// A direction shaped by `shape`, its random draws from `seed`.
    pub(super) fn new(shape: OneWay, seed: u64) -> Shaper {
        Shaper {
            shape,
            busy_until: None,
            last_release: None,
            held: VecDeque::new(),
            held_bytes: 0,
            // Two streams, so that turning jitter on does not change which datagrams are lost.
            loss_rng: Rng::new(seed),
            jitter_rng: Rng::new(seed ^ 0x6A09_E667_F3BC_C908),
            counts: Direction::default(),
        }
    }

    /// New settings for datagrams offered from now on; those already accepted keep
    /// their release times.
    pub(super) fn set_shape(&mut self, shape: OneWay) {
        self.shape = shape;
    }

    /// A datagram arrived at `now`; `down` says whether the link is down.
    pub(super) fn offer(&mut self, now: Instant, data: Vec<u8>, down: bool) {
        let len = data.len() as u64;
        self.counts.offered.add(len);
        if down {
            self.counts.dropped_outage.add(len);
            return;
        }
        let start = self.busy_until.map_or(now, |busy| busy.max(now));
        let held_limit = match self.shape.rate_bps {
            Some(rate) => {
                // What waits for the link: the rest of the datagram being sent and those
                // queued behind it, in bytes at the rate.
                let backlog = bytes_at(start.saturating_duration_since(now), rate.get());
                if backlog + len > self.shape.queue_bytes {
                    self.counts.dropped_queue.add(len);
                    return;
                }
                let line = bytes_at(self.shape.delay + self.shape.jitter, rate.get());
                self.shape.queue_bytes + line + HELD_SLACK
            }
            None => self.shape.queue_bytes,
        };
        if self.held_bytes + len > held_limit {
            self.counts.dropped_queue.add(len);
            return;
        }
        let sent = match self.shape.rate_bps {
            Some(rate) => start + serialization(len, rate.get()),
            None => now,
        };
        self.busy_until = Some(sent);
        // Lost on the air: it used its time on the link, it does not arrive.
        if self.shape.loss > 0.0 && unit(self.loss_rng.next_u64()) < self.shape.loss {
            self.counts.dropped_loss.add(len);
            return;
        }
        let jitter = match u64::try_from(self.shape.jitter.as_nanos()) {
            Ok(0) => Duration::ZERO,
            Ok(max) => Duration::from_nanos(self.jitter_rng.range(0, max)),
            Err(_) => self.shape.jitter,
        };
        let mut release = sent + self.shape.delay + jitter;
        if let Some(last) = self.last_release {
            release = release.max(last);
        }
        self.last_release = Some(release);
        self.held.push_back((release, data));
        self.held_bytes += len;
    }

    /// When the next datagram is due, if one is held.
    pub(super) fn next_release(&self) -> Option<Instant> {
        self.held.front().map(|(at, _)| *at)
    }

    /// Moves the datagrams due at `now` into `out`, counted as delivered; or, if `lost`
    /// says why they cannot be, drops them with that reason instead.
    pub(super) fn take_due(
        &mut self,
        now: Instant,
        lost: Option<Undelivered>,
        out: &mut Vec<Vec<u8>>,
    ) {
        while let Some((at, _)) = self.held.front() {
            if *at > now {
                break;
            }
            let Some((_, data)) = self.held.pop_front() else {
                break;
            };
            let len = data.len() as u64;
            self.held_bytes -= len;
            match lost {
                None => {
                    self.counts.delivered.add(len);
                    if len > QUIC_MIN_MTU {
                        self.counts.delivered_large.add(len);
                    }
                    out.push(data);
                }
                Some(Undelivered::Outage) => self.counts.dropped_outage.add(len),
                Some(Undelivered::Error) => self.counts.dropped_error.add(len),
            }
        }
    }

    /// A datagram counted as delivered could not be sent after all.
    pub(super) fn unsend(&mut self, len: usize) {
        let len = len as u64;
        self.counts.delivered.packets -= 1;
        self.counts.delivered.bytes -= len;
        if len > QUIC_MIN_MTU {
            self.counts.delivered_large.packets -= 1;
            self.counts.delivered_large.bytes -= len;
        }
        self.counts.dropped_error.add(len);
    }

    /// The counts so far, with what is held now.
    pub(super) fn counts(&self) -> Direction {
        Direction {
            held: Tally {
                packets: self.held.len() as u64,
                bytes: self.held_bytes,
            },
            ..self.counts
        }
    }
}

/// The bytes sent in `time` at `rate` bits per second (rounded down).
fn bytes_at(time: Duration, rate: u64) -> u64 {
    let bytes = time.as_nanos() * u128::from(rate) / 8_000_000_000;
    u64::try_from(bytes).unwrap_or(u64::MAX)
}

/// The time `len` bytes occupy a link of `rate` bits per second (to the nearest ns).
fn serialization(len: u64, rate: u64) -> Duration {
    let rate = u128::from(rate);
    let nanos = (u128::from(len) * 8_000_000_000 + rate / 2) / rate;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// A random number as a fraction in `[0, 1)`.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}
