//! The claims this worker process is working on right now, whose leases it renews.
//!
//! Renewing by owner alone would also keep alive a claim the process let go of (a batch that
//! failed between its claim and its sends): that delivery would stay `sending` for as long as
//! the process lives, and its redelivered job would find it held. So a batch registers the
//! keys it holds and drops them when it is done with them, however it ends, and only those
//! are renewed; a claim let go lapses within one lease and the next holder takes it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The keys held by batches in progress.
#[derive(Debug, Clone, Default)]
pub(crate) struct Held(Arc<Mutex<HashSet<String>>>);

/// Keys a batch holds; they are let go when this is dropped.
#[derive(Debug)]
pub(crate) struct Holding {
    held: Held,
    keys: Vec<String>,
}

impl Held {
    pub(crate) fn hold(&self, keys: Vec<String>) -> Holding {
        self.0
            .lock()
            .expect("held keys")
            .extend(keys.iter().cloned());
        Holding {
            held: self.clone(),
            keys,
        }
    }

    /// Every key held now, to renew.
    pub(crate) fn keys(&self) -> Vec<String> {
        self.0.lock().expect("held keys").iter().cloned().collect()
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        let mut held = self.held.0.lock().expect("held keys");
        for key in &self.keys {
            held.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_held_until_their_batch_lets_go() {
        let held = Held::default();
        let first = held.hold(vec!["a".into(), "b".into()]);
        let second = held.hold(vec!["c".into()]);
        let mut keys = held.keys();
        keys.sort();
        assert_eq!(keys, ["a", "b", "c"]);
        drop(first);
        assert_eq!(held.keys(), ["c"]);
        drop(second);
        assert!(held.keys().is_empty());
    }
}
