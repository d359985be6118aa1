//! The component catalogue as the ingest checks publishes against it: a copy held for a few
//! seconds, so a publish costs no extra query, refreshed at once after this replica changes
//! the catalogue.
//!
//! Another replica's change is seen within [`CATALOGUE_TTL`]: a component added there may be
//! refused here as unknown for that long (the publisher's retry succeeds), and a rename shows
//! in events published after it is seen.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tocsin_core::Change;
use tocsin_core::component::{Component, check_known};
use tocsin_store::{Store, StoreError};

/// How long a copy of the catalogue is trusted.
pub const CATALOGUE_TTL: Duration = Duration::from_secs(5);

type Entries = Arc<BTreeMap<String, Component>>;

/// The catalogue, cached. Cheap to clone; clones share the copy.
#[derive(Debug, Clone)]
pub struct Catalogue {
    store: Store,
    copy: Arc<Mutex<Option<(Instant, Entries)>>>,
}

impl Catalogue {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            copy: Arc::new(Mutex::new(None)),
        }
    }

    /// The catalogue by id, at most [`CATALOGUE_TTL`] old.
    pub async fn entries(&self) -> Result<Entries, StoreError> {
        {
            let copy = self.copy.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((read_at, entries)) = copy.as_ref()
                && read_at.elapsed() < CATALOGUE_TTL
            {
                return Ok(entries.clone());
            }
        }
        let read_at = Instant::now();
        let entries: Entries = Arc::new(
            self.store
                .components()
                .await?
                .into_iter()
                .map(|c| (c.id.clone(), c))
                .collect(),
        );
        *self.copy.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((read_at, entries.clone()));
        Ok(entries)
    }

    /// Forgets the copy; called after this replica changed the catalogue.
    pub fn invalidate(&self) {
        *self.copy.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Checks the components `change` names against the catalogue (when one is kept) and
    /// copies in their display names.
    pub async fn name(&self, change: &mut Change) -> Result<(), StoreError> {
        if change.components.is_empty() && change.impacts.is_empty() {
            return Ok(());
        }
        let entries = self.entries().await?;
        check_known(&change.components, &entries, "components")?;
        check_known(change.impacts.keys(), &entries, "impacts")?;
        change.component_names = change
            .components
            .iter()
            .chain(change.impacts.keys())
            .filter_map(|id| entries.get(id).map(|c| (id.clone(), c.name.clone())))
            .collect();
        Ok(())
    }
}
