//! The core's admission of handshakes: how many run at once, and how many may wait.
//!
//! After a core restarts, its whole fleet dials within seconds. Each handshake costs the
//! core signatures and certificate checks; run all at once, they share the CPU so thinly
//! that each takes long enough for the edges to give up and dial again, a storm of
//! failed handshakes. Admission runs [`MAX_HANDSHAKES`] at once and keeps the rest
//! waiting in arrival order (QUIC holds their packets meanwhile), so every handshake
//! gets the CPU it needs and finishes well inside the edge's dial timeout; past
//! [`MAX_WAITING`] a dial is refused at once, and the edge backs off and comes again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Handshakes a core runs at once: enough for both cores of a small machine to stay
/// busy, few enough that each is quick.
pub const MAX_HANDSHAKES: usize = 32;

/// Dials that may wait for their handshake; more are refused (a fleet of thousands
/// fits, a flood does not make the core hold without bound).
pub const MAX_WAITING: usize = 4_096;

/// Turns for handshakes, in arrival order.
#[derive(Debug)]
pub struct Admission {
    running: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// A handshake's turn: the next waiting one starts when it is dropped.
#[derive(Debug)]
pub struct Turn(#[allow(dead_code)] OwnedSemaphorePermit);

impl Admission {
    /// `running` handshakes at once, `waiting` more in line.
    pub fn new(running: usize, waiting: usize) -> Admission {
        Admission {
            running: Arc::new(Semaphore::new(running.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting: waiting,
        }
    }

    /// Waits for a turn; `None` at once when [`Admission::new`]'s `waiting` dials wait
    /// already.
    pub async fn turn(&self) -> Option<Turn> {
        if let Ok(permit) = self.running.clone().try_acquire_owned() {
            return Some(Turn(permit));
        }
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        // Leaves the line however the wait ends (a turn, or the dial dropped).
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _waiting = Waiting(&self.waiting);
        if before >= self.max_waiting {
            return None;
        }
        self.running.clone().acquire_owned().await.ok().map(Turn)
    }

    /// Dials waiting for a turn now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

impl Default for Admission {
    fn default() -> Self {
        Admission::new(MAX_HANDSHAKES, MAX_WAITING)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn handshakes_take_turns_in_order_and_a_full_line_is_refused() {
        let admission = Arc::new(Admission::new(2, 2));
        let a = admission.turn().await.expect("a turn at once");
        let b = admission.turn().await.expect("a turn at once");
        // Two more wait, in order; the fifth is refused.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut waiters = Vec::new();
        for n in 0..2 {
            let (line, tx) = (admission.clone(), tx.clone());
            waiters.push(tokio::spawn(async move {
                let turn = line.turn().await;
                tx.send((n, turn.is_some())).unwrap();
                turn
            }));
            // Each is in line before the next comes.
            while admission.waiting() < n + 1 {
                tokio::task::yield_now().await;
            }
        }
        assert!(admission.turn().await.is_none(), "the line is full");
        assert_eq!(admission.waiting(), 2, "the refused dial is not in line");
        assert!(rx.try_recv().is_err(), "nobody has a turn yet");
        drop(a);
        assert_eq!(
            rx.recv().await,
            Some((0, true)),
            "the first in line goes first"
        );
        drop(b);
        assert_eq!(rx.recv().await, Some((1, true)));
        assert_eq!(admission.waiting(), 0);
        for w in waiters {
            drop(w.await.unwrap());
        }
        // A waiter that gives up leaves the line.
        let held: Vec<Turn> = vec![
            admission.turn().await.unwrap(),
            admission.turn().await.unwrap(),
        ];
        let gave_up = tokio::time::timeout(std::time::Duration::from_millis(1), admission.turn());
        assert!(gave_up.await.is_err());
        assert_eq!(admission.waiting(), 0);
        drop(held);
    }
}
