//! How fast the core sends a mirror's chunks: [`Pace`], a delay-based controller that
//! keeps little mirror data queued anywhere on the path.
//!
//! A mirror is a bulk transfer sharing one QUIC connection with entries and control.
//! QUIC stream priorities only order what leaves the sender; once mirror bytes sit in
//! a modem's queue (a second or more of it on a radio or satellite terminal), an entry
//! sent after them waits behind them. The connection's congestion controller fills that
//! queue (it reacts to loss, and tolerates a queue on purpose, see `tls/congestion.rs`);
//! so the mirror, below it, holds itself to what the path carries with a small queue:
//!
//! - **Window.** `window` is the mirror bytes the core aims to have on their way in one
//!   round trip. Chunk bytes are paced at `window / smoothed round trip`, so a growing
//!   queue (a longer round trip) slows them at once; and the mirror bytes written but not
//!   yet reported read by the edge ([`Pace::in_flight`]) stay under [`Pace::cap`], twice
//!   the window and a little (room for a lost packet's retransmission, which holds back
//!   what follows it).
//! - **Rounds.** A round ends when the edge reports (`Received`) every byte written
//!   before it began: about one round trip. At its end, with the connection's smoothed
//!   and smallest round trip, the queue is `smoothed - smallest`:
//!   The target queue is [`target_queue`]: four smallest round trips, from 1 ms to
//!   [`TARGET_QUEUE`] (50 ms).
//!   - slow start (from [`INITIAL_WINDOW`]): the window doubles each round while the
//!     queue stays under half the target, and chunks are paced at twice its rate (QUIC's
//!     own window grows only while it is the limit);
//!   - then, as FAST TCP does, the window moves half way to `window × (smallest + target)
//!     / (smallest + queue)`: it grows while the queue is under the target and shrinks
//!     above it, so the queue settles near the target whatever the link's rate;
//!   - a round that did not use half its window (the edge asked for less) does not grow
//!     it.
//! - **Loss.** A loss while a queue shows (above a quarter of the smallest round trip, at
//!   least half a millisecond: a full buffer somewhere, not radio noise) cuts the window
//!   by 30 % at once, once a round, and ends slow start.
//! - **Reports.** The edge reports the bytes it has read every [`Pace::report_every`]
//!   bytes (an eighth of the window, told with `Pace` frames) and whenever its stream
//!   goes quiet, so the core's view of what is in flight lags by little.
//!
//! IO: none; the caller passes the clock and the connection's round trips.

use std::time::{Duration, Instant};

/// The longest queueing delay the mirror aims at (on long paths; see [`target_queue`]):
/// entries sent behind it wait about this long.
pub const TARGET_QUEUE: Duration = Duration::from_millis(50);

/// The window a run starts with.
pub const INITIAL_WINDOW: u64 = 64 << 10;

/// The smallest window: a few packets, whatever the queue.
pub const MIN_WINDOW: u64 = 12 << 10;

/// The largest window (bounds the memory a run holds in the transport).
pub const MAX_WINDOW: u64 = 16 << 20;

/// Smallest and largest report interval the core asks for.
pub const MIN_REPORT: u64 = 4 << 10;
/// See [`MIN_REPORT`].
pub const MAX_REPORT: u64 = 256 << 10;

/// The core's pacing of one mirror stream; see the module doc.
#[derive(Debug, Clone)]
pub struct Pace {
    window: u64,
    slow_start: bool,
    /// Stream bytes written, and read by the edge (its last report).
    sent: u64,
    received: u64,
    /// The current round ends once `received` reaches this.
    round_end: u64,
    /// Most bytes in flight during the round.
    round_peak: u64,
    /// The connection's lost packets at the last report.
    lost_seen: u64,
    /// Losses reported before the edge has read this far belong to the last cut.
    recovered_at: u64,
    /// Whether a loss cut the window in this round.
    cut: bool,
    /// The pacing clock: when the next byte may go.
    next_send: Option<Instant>,
}

/// A report from the edge that cannot be true.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaceError {
    /// It says fewer bytes than an earlier report.
    #[error("the edge reported {now} bytes read after reporting {before}")]
    Backwards {
        /// The earlier report.
        before: u64,
        /// This one.
        now: u64,
    },
    /// It says more bytes than were written.
    #[error("the edge reported {reported} bytes read of the {sent} written")]
    Ahead {
        /// Reported.
        reported: u64,
        /// Written.
        sent: u64,
    },
}

/// What the connection says about its path, for [`Pace::on_received`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathNow {
    /// The smoothed round trip.
    pub smoothed: Duration,
    /// The smallest round trip seen.
    pub min: Duration,
    /// Packets lost so far on the connection.
    pub lost_packets: u64,
}

impl Default for Pace {
    fn default() -> Self {
        Pace::new()
    }
}

impl Pace {
    /// A run's pacing before anything was sent.
    pub fn new() -> Pace {
        Pace {
            window: INITIAL_WINDOW,
            slow_start: true,
            sent: 0,
            received: 0,
            round_end: 0,
            round_peak: 0,
            lost_seen: 0,
            recovered_at: 0,
            cut: false,
            next_send: None,
        }
    }

    /// The window now.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Bytes written and not yet reported read.
    pub fn in_flight(&self) -> u64 {
        self.sent - self.received
    }

    /// The most bytes in flight allowed.
    pub fn cap(&self) -> u64 {
        2 * self.window + 2 * self.report_every()
    }

    /// How many bytes may be written now (0: wait for a report).
    pub fn allowed(&self) -> u64 {
        self.cap().saturating_sub(self.in_flight())
    }

    /// The report interval the edge should use for this window.
    pub fn report_every(&self) -> u64 {
        (self.window / 8).clamp(MIN_REPORT, MAX_REPORT)
    }

    /// How long to wait, from `now`, before the next chunk bytes may be written.
    pub fn delay(&self, now: Instant) -> Duration {
        self.next_send
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    /// Records `n` bytes written at `now` (chunk bytes when `paced`, anything else
    /// without touching the pacing clock), with the connection's smoothed round trip.
    pub fn on_sent(&mut self, now: Instant, n: u64, smoothed: Duration, paced: bool) {
        self.sent += n;
        self.round_peak = self.round_peak.max(self.in_flight());
        if !paced {
            return;
        }
        let rtt = smoothed.max(Duration::from_millis(1));
        // In slow start, twice the window's rate: the transport's own window grows only
        // while it is the limit.
        let gain = if self.slow_start { 2.0 } else { 1.0 };
        let rate = gain * self.window as f64 / rtt.as_secs_f64();
        // Credit does not pile up while idle: at most a few milliseconds' worth.
        let floor = now.checked_sub(Duration::from_millis(2)).unwrap_or(now);
        let start = self.next_send.map_or(now, |t| t.max(floor));
        self.next_send = Some(start + Duration::from_secs_f64(n as f64 / rate));
    }

    /// Takes the edge's report that it has read `total` bytes of the stream, and ends the
    /// round if it covers it. A report that goes back or past what was written is an
    /// error.
    pub fn on_received(&mut self, total: u64, path: PathNow) -> Result<(), PaceError> {
        if total < self.received {
            return Err(PaceError::Backwards {
                before: self.received,
                now: total,
            });
        }
        if total > self.sent {
            return Err(PaceError::Ahead {
                reported: total,
                sent: self.sent,
            });
        }
        self.received = total;
        let queue = path.smoothed.saturating_sub(path.min);
        // A loss behind a queue: at once; losses of what was in flight then are the same
        // event.
        if path.lost_packets > self.lost_seen {
            if total >= self.recovered_at && queue >= (path.min / 4).max(Duration::from_micros(500))
            {
                self.cut = true;
                self.slow_start = false;
                self.window = ((self.window as f64 * 0.7) as u64).max(MIN_WINDOW);
                self.recovered_at = self.sent;
            }
            self.lost_seen = path.lost_packets;
        }
        if total >= self.round_end {
            self.end_round(path, queue);
        }
        Ok(())
    }

    fn end_round(&mut self, path: PathNow, queue: Duration) {
        let target = target_queue(path.min);
        // A round that did not fill half its window says nothing about a larger one.
        let limited = self.round_peak < self.window / 2;
        let mut window = self.window as f64;
        if self.cut {
            // The window was cut in this round: it holds until the next.
        } else if self.slow_start && queue < target / 2 {
            if !limited {
                window *= 2.0;
            }
        } else {
            self.slow_start = false;
            let min = path.min.max(Duration::from_micros(50)).as_secs_f64();
            let factor =
                ((min + target.as_secs_f64()) / (min + queue.as_secs_f64())).clamp(0.25, 2.0);
            if factor < 1.0 || !limited {
                window *= (1.0 + factor) / 2.0;
            }
        }
        self.window = (window as u64).clamp(MIN_WINDOW, MAX_WINDOW);
        self.round_end = self.sent.max(self.received + 1);
        self.round_peak = self.in_flight();
        self.cut = false;
    }
}

/// The queue the mirror aims at on a path whose smallest round trip is `min`: four times
/// that, from a millisecond to [`TARGET_QUEUE`]. On a short path a queue of even a few
/// milliseconds means a buffer filling somewhere (a socket's, on a loaded host): packets
/// dropped there cost bytes on the link.
pub fn target_queue(min: Duration) -> Duration {
    (min * 4).clamp(Duration::from_millis(1), TARGET_QUEUE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(smoothed_ms: u64, min_ms: u64, lost: u64) -> PathNow {
        PathNow {
            smoothed: Duration::from_millis(smoothed_ms),
            min: Duration::from_millis(min_ms),
            lost_packets: lost,
        }
    }

    /// Sends a full window and has the edge report all of it, with `p`.
    fn round(pace: &mut Pace, p: PathNow) {
        let now = Instant::now();
        let n = pace.window();
        pace.on_sent(now, n, p.smoothed, true);
        let total = pace.sent;
        pace.on_received(total, p).unwrap();
    }

    #[test]
    fn slow_start_doubles_then_settles_near_the_target_queue() {
        let mut pace = Pace::new();
        // First report ends the empty round 0.
        round(&mut pace, path(600, 600, 0));
        let w = pace.window();
        round(&mut pace, path(600, 600, 0));
        assert_eq!(pace.window(), 2 * w);
        // A queue of the target: slow start ends and the window holds.
        round(&mut pace, path(650, 600, 0));
        let held = pace.window();
        round(&mut pace, path(650, 600, 0));
        assert_eq!(pace.window(), held);
        // A long queue shrinks it, down to the minimum at most.
        for _ in 0..50 {
            round(&mut pace, path(1600, 600, 0));
        }
        assert_eq!(pace.window(), MIN_WINDOW);
        // An empty queue grows it again, slower than slow start.
        let before = pace.window();
        round(&mut pace, path(600, 600, 0));
        assert!(pace.window() > before && pace.window() < 2 * before);
    }

    #[test]
    fn loss_counts_only_with_a_queue() {
        let mut pace = Pace::new();
        round(&mut pace, path(600, 600, 0));
        round(&mut pace, path(600, 600, 0));
        let w = pace.window();
        // Radio noise: a loss, no queue: slow start goes on.
        round(&mut pace, path(600, 600, 5));
        assert_eq!(pace.window(), 2 * w);
        // A loss with a queue (a full buffer on a fast path): the window is cut.
        let w = pace.window();
        round(&mut pace, path(3, 1, 6));
        assert_eq!(pace.window(), (w as f64 * 0.7) as u64);
    }

    #[test]
    fn an_edge_that_asks_for_little_does_not_grow_the_window() {
        let mut pace = Pace::new();
        let p = path(100, 100, 0);
        pace.on_received(0, p).unwrap();
        for _ in 0..5 {
            let now = Instant::now();
            pace.on_sent(now, 1000, p.smoothed, true);
            let total = pace.sent;
            pace.on_received(total, p).unwrap();
        }
        assert_eq!(pace.window(), INITIAL_WINDOW);
    }

    #[test]
    fn pacing_spreads_a_window_over_a_round_trip() {
        let mut pace = Pace::new();
        let now = Instant::now();
        let rtt = Duration::from_millis(400);
        pace.on_sent(now, INITIAL_WINDOW / 2, rtt, true);
        // Slow start: twice the window's rate.
        let d = pace.delay(now);
        assert!(
            d > Duration::from_millis(95) && d <= Duration::from_millis(101),
            "{d:?}"
        );
        // Bytes that are not chunks (a manifest) are counted in flight, not paced.
        pace.on_sent(now, 1 << 20, rtt, false);
        assert_eq!(pace.delay(now), d);
        assert_eq!(pace.in_flight(), (1 << 20) + INITIAL_WINDOW / 2);
        assert_eq!(pace.allowed(), 0);
    }

    #[test]
    fn impossible_reports_are_refused() {
        let mut pace = Pace::new();
        let p = path(10, 10, 0);
        pace.on_sent(Instant::now(), 5000, p.smoothed, true);
        assert_eq!(
            pace.on_received(6000, p),
            Err(PaceError::Ahead {
                reported: 6000,
                sent: 5000
            })
        );
        pace.on_received(4000, p).unwrap();
        assert_eq!(
            pace.on_received(3000, p),
            Err(PaceError::Backwards {
                before: 4000,
                now: 3000
            })
        );
        assert_eq!(pace.in_flight(), 1000);
    }

    #[test]
    fn short_paths_aim_at_a_short_queue_and_cut_at_once_on_loss() {
        assert_eq!(
            target_queue(Duration::from_micros(100)),
            Duration::from_millis(1)
        );
        assert_eq!(
            target_queue(Duration::from_millis(5)),
            Duration::from_millis(20)
        );
        assert_eq!(target_queue(Duration::from_millis(600)), TARGET_QUEUE);
        // Loopback: slow start ends at half a millisecond of queue.
        let mut pace = Pace::new();
        round(&mut pace, path(0, 0, 0));
        let w = pace.window();
        let lan = |srtt_us: u64, lost: u64| PathNow {
            smoothed: Duration::from_micros(srtt_us),
            min: Duration::from_micros(100),
            lost_packets: lost,
        };
        round(&mut pace, lan(700, 0));
        assert!(pace.window() < 2 * w, "{} after {w}", pace.window());
        // A loss with a queue cuts the window before the round ends, once for what was
        // in flight then.
        let w = pace.window();
        let now = Instant::now();
        pace.on_sent(now, 4 * w, Duration::from_micros(900), true);
        pace.on_received(pace.sent - 3 * w, lan(900, 3)).unwrap();
        assert_eq!(pace.window(), (w as f64 * 0.7) as u64);
        pace.on_received(pace.sent - 2 * w, lan(900, 9)).unwrap();
        assert_eq!(pace.window(), (w as f64 * 0.7) as u64);
    }
}
