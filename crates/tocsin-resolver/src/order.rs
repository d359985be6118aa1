//! Per-incident order inside one resolver replica.
//!
//! An incident's events must be fanned out one after the other, while different incidents
//! go in parallel. A replica that pulls several events of one incident (a burst of updates)
//! queues the later ones here, behind the one running, instead of giving each a concurrency
//! slot to wait in: slots held by events that wait for other work could all be taken while
//! the work they wait for has none. The queue is in arrival order, which is the stream's
//! order, which is the log's order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tocsin_bus::Work;
use tocsin_core::{IncidentId, RecordedEvent};

/// An event pulled and decoded, waiting for its turn.
pub(crate) type Pulled = (Work, RecordedEvent);

/// The incidents with a fan-out running in this replica, and the events queued behind it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Chains(Arc<Mutex<HashMap<IncidentId, VecDeque<Pulled>>>>);

impl Chains {
    /// Queues `pulled` behind its incident's running chain, or gives it back when no chain
    /// runs for that incident (the caller starts one, which [`Chains::next`] then feeds).
    pub(crate) fn join(&self, pulled: Pulled) -> Option<Pulled> {
        let mut chains = self.0.lock().expect("chains");
        match chains.get_mut(&pulled.1.incident_id) {
            Some(queue) => {
                queue.push_back(pulled);
                None
            }
            None => {
                chains.insert(pulled.1.incident_id, VecDeque::new());
                Some(pulled)
            }
        }
    }

    /// The next queued event of `incident`, or `None`, which ends its chain: a later event
    /// starts a new one.
    pub(crate) fn next(&self, incident: IncidentId) -> Option<Pulled> {
        let mut chains = self.0.lock().expect("chains");
        let next = chains.get_mut(&incident).and_then(VecDeque::pop_front);
        if next.is_none() {
            chains.remove(&incident);
        }
        next
    }

    /// The messages queued behind `incident`'s running event, to keep them in hand.
    pub(crate) fn queued(&self, incident: IncidentId) -> Vec<Work> {
        let chains = self.0.lock().expect("chains");
        chains
            .get(&incident)
            .map(|queue| queue.iter().map(|(work, _)| work.clone()).collect())
            .unwrap_or_default()
    }

    /// Takes every queued event, ending every chain: for handing them back at shutdown.
    pub(crate) fn drain(&self) -> Vec<Work> {
        let mut chains = self.0.lock().expect("chains");
        chains
            .drain()
            .flat_map(|(_, queue)| queue.into_iter().map(|(work, _)| work))
            .collect()
    }
}
