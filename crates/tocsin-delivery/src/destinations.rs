//! A bound on sends per destination (a webhook endpoint), so that one customer's slow server
//! cannot take the capacity every other customer's messages need.
//!
//! Messages to one subscriber already go one at a time (their order). This bounds the
//! subscribers who share one destination: at most `limit` of their sends in flight at once,
//! and as many more waiting in the process for a turn. A delivery that finds its destination
//! fuller than that is put off (parked for [`DEFERRAL`], its attempt given back) rather than
//! held, so the jobs in hand, too, stay free for other destinations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a delivery put off for a full destination waits, parked, before its next try.
pub(crate) const DEFERRAL: Duration = Duration::from_secs(1);

/// One destination's turns.
#[derive(Debug)]
struct Gate {
    sending: Arc<Semaphore>,
    /// Deliveries sending to it or waiting for a turn in this process.
    entered: usize,
}

/// The destinations this process is sending to, each with its own bound.
#[derive(Debug)]
pub(crate) struct Destinations {
    limit: usize,
    gates: Mutex<HashMap<String, Gate>>,
}

/// A delivery's place at its destination: waiting for a turn, or holding one. Leaving (on
/// drop) frees it, and forgets the destination once nobody is at it.
#[derive(Debug)]
pub(crate) struct Entered {
    destinations: Arc<Destinations>,
    destination: String,
    sending: Arc<Semaphore>,
    turn: Option<OwnedSemaphorePermit>,
}

impl Destinations {
    /// At most `limit` sends in flight per destination, and `limit` more waiting.
    pub(crate) fn new(limit: usize) -> Arc<Destinations> {
        Arc::new(Destinations {
            limit: limit.max(1),
            gates: Mutex::default(),
        })
    }

    /// A place at `destination`, or `None` when it already has its fill of sends in flight
    /// and waiting: the delivery is to be put off.
    pub(crate) fn enter(self: &Arc<Self>, destination: &str) -> Option<Entered> {
        let mut gates = self.lock();
        let gate = gates.entry(destination.to_owned()).or_insert_with(|| Gate {
            sending: Arc::new(Semaphore::new(self.limit)),
            entered: 0,
        });
        if gate.entered >= self.limit * 2 {
            return None;
        }
        gate.entered += 1;
        Some(Entered {
            destinations: self.clone(),
            destination: destination.to_owned(),
            sending: gate.sending.clone(),
            turn: None,
        })
    }

    /// The gates. A panic elsewhere while holding the lock leaves only counts behind, still
    /// usable: a delivery must never panic over them.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Gate>> {
        self.gates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Destinations with anyone at them (sending or waiting).
    #[cfg(test)]
    fn in_use(&self) -> usize {
        self.lock().len()
    }
}

impl Entered {
    /// Waits for a turn to send.
    pub(crate) async fn turn(&mut self) {
        if self.turn.is_none() {
            // A gate's semaphore is never closed, so this wait only ends with a turn.
            if let Ok(permit) = self.sending.clone().acquire_owned().await {
                self.turn = Some(permit);
            }
        }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.turn.take();
        let mut gates = self.destinations.lock();
        if let Some(gate) = gates.get_mut(&self.destination) {
            gate.entered -= 1;
            if gate.entered == 0 {
                gates.remove(&self.destination);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_destination_takes_limit_sends_and_as_many_waiting_then_puts_off_the_rest() {
        let destinations = Destinations::new(2);
        let mut first = destinations.enter("https://slow.example/hook").unwrap();
        let mut second = destinations.enter("https://slow.example/hook").unwrap();
        first.turn().await;
        second.turn().await;
        let mut third = destinations.enter("https://slow.example/hook").unwrap();
        let _fourth = destinations.enter("https://slow.example/hook").unwrap();
        assert!(
            destinations.enter("https://slow.example/hook").is_none(),
            "two sending and two waiting: the fifth is put off"
        );
        let mut other = destinations
            .enter("https://fast.example/hook")
            .expect("another destination is not held up");
        tokio::time::timeout(Duration::from_secs(1), other.turn())
            .await
            .expect("another destination's turn comes at once");

        let waiting = tokio::time::timeout(Duration::from_millis(50), third.turn()).await;
        assert!(
            waiting.is_err(),
            "no third send in flight at one destination"
        );
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), third.turn())
            .await
            .expect("a turn frees when a send ends");
        assert!(
            destinations.enter("https://slow.example/hook").is_some(),
            "room to wait again"
        );
    }

    #[tokio::test]
    async fn a_destination_nobody_is_at_is_forgotten() {
        let destinations = Destinations::new(4);
        let mut entered = destinations.enter("https://a.example/").unwrap();
        entered.turn().await;
        assert_eq!(destinations.in_use(), 1);
        drop(entered);
        assert_eq!(
            destinations.in_use(),
            0,
            "no gate kept for an idle endpoint"
        );
    }
}
