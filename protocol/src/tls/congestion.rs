//! The link's congestion controller: CUBIC that does not take radio loss for congestion.
//!
//! Loss-based controllers (CUBIC, NewReno) halve their window, or nearly, at every loss.
//! On a radio or satellite link most losses are noise, not a full queue: at 1 % loss and a
//! 600 ms round trip, quinn's CUBIC moves 0.25 of a 2 Mbit/s link, NewReno 0.11. quinn's
//! BBR ignores loss but, as quinn paces from the window rather than from BBR's model, it
//! keeps the modem's queue full and overflowing (40 % of its packets tail-dropped on
//! `satcom`), so everything else in that direction waits a full queue behind.
//!
//! [`Tolerant`] passes CUBIC a loss only when the round trip shows a queue: the smoothed
//! round trip is above the smallest seen by a quarter of it (at least [`MIN_QUEUE`]).
//! A loss with no queue behind it is noise and is ignored; a loss with a queue behind it
//! is congestion, and CUBIC backs off as usual. Persistent congestion (an outage) and ECN
//! marks always count. The window then grows until the queue holds about a quarter of a
//! round trip, where the next loss, noise or not, counts: the link stays full with a
//! bounded queue.
//!
//! The price: on a path shared with other traffic, it yields to it only once a queue has
//! built up; the links it is for (a radio, a satellite terminal) carry this node's
//! traffic alone.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics, CubicConfig};

/// The smallest queueing delay that makes a loss count, for links whose round trip is
/// so short that a quarter of it is below the noise of the measurement (ack delays).
pub(super) const MIN_QUEUE: Duration = Duration::from_millis(30);

/// Builds [`Tolerant`] controllers around quinn's CUBIC with its default settings.
#[derive(Debug, Default)]
pub(super) struct TolerantCubic {
    cubic: Arc<CubicConfig>,
}

impl ControllerFactory for TolerantCubic {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(Tolerant {
            inner: self.cubic.clone().build(now, current_mtu),
            smoothed: Duration::ZERO,
            min: Duration::ZERO,
        })
    }
}

/// A controller that hands every event to `inner`, except losses without a queue.
struct Tolerant {
    inner: Box<dyn Controller>,
    /// The smoothed round trip at the last acknowledgement.
    smoothed: Duration,
    /// The smallest round trip seen on the path.
    min: Duration,
}

/// Whether a loss of `lost_bytes` (0: an ECN mark) is congestion, given the smoothed and
/// the smallest round trip.
pub(super) fn congested(
    smoothed: Duration,
    min: Duration,
    persistent: bool,
    lost_bytes: u64,
) -> bool {
    if persistent || lost_bytes == 0 || min.is_zero() {
        return true;
    }
    smoothed.saturating_sub(min) >= (min / 4).max(MIN_QUEUE)
}

impl Controller for Tolerant {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &quinn_proto::RttEstimator,
    ) {
        self.smoothed = rtt.get();
        self.min = rtt.min();
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        if congested(
            self.smoothed,
            self.min,
            is_persistent_congestion,
            lost_bytes,
        ) {
            self.inner
                .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
        }
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.inner.window()
    }

    fn metrics(&self) -> ControllerMetrics {
        self.inner.metrics()
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(Tolerant {
            inner: self.inner.clone_box(),
            smoothed: self.smoothed,
            min: self.min,
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_loss_counts_only_with_a_queue_behind_it() {
        // (smoothed, min, persistent, lost bytes) -> congestion
        let cases = [
            // satcom: 600 ms; a quarter is 150 ms of queue.
            ((ms(620), ms(600), false, 1200), false),
            ((ms(749), ms(600), false, 1200), false),
            ((ms(750), ms(600), false, 1200), true),
            ((ms(1600), ms(600), false, 1200), true),
            // loopback: the floor of 30 ms applies.
            ((ms(20), ms(1), false, 1200), false),
            ((ms(31), ms(1), false, 1200), true),
            // an outage, an ECN mark, no sample yet: always.
            ((ms(600), ms(600), true, 1200), true),
            ((ms(600), ms(600), false, 0), true),
            ((Duration::ZERO, Duration::ZERO, false, 1200), true),
        ];
        for ((smoothed, min, persistent, lost), expect) in cases {
            assert_eq!(
                congested(smoothed, min, persistent, lost),
                expect,
                "smoothed {smoothed:?}, min {min:?}, persistent {persistent}, lost {lost}"
            );
        }
    }
}
