//! What a server received: an append-only list behind a mutex (cheap enough for a few thousand
//! items a second), a summary that counts duplicates, and waits for tests.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

/// An item a server records.
pub trait Record: Clone + Serialize + Send + Sync + 'static {
    /// The key that makes two records the same message (a Message-ID, a webhook-id); `None`
    /// makes the record unique.
    fn dedupe_key(&self) -> Option<String>;
    /// Whether the server told the sender it took the message (or took it and lost the reply,
    /// as with the `drop` fault). Refused requests are kept but not counted.
    fn accepted(&self) -> bool;
}

/// Counts over the accepted records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
pub struct Summary {
    /// Accepted records.
    pub received: usize,
    /// Distinct messages among them.
    pub unique: usize,
    /// `received - unique`: the same message accepted more than once.
    pub duplicates: usize,
    /// Records of requests the server refused (a fault, a bad signature).
    pub rejected: usize,
}

/// The records of one server.
#[derive(Debug)]
pub struct Inbox<T> {
    items: Mutex<Vec<T>>,
    // Bumped on every change so waiters re-check their condition.
    version: watch::Sender<u64>,
}

impl<T: Record> Default for Inbox<T> {
    fn default() -> Self {
        Self {
            items: Mutex::new(Vec::new()),
            version: watch::channel(0).0,
        }
    }
}

impl<T: Record> Inbox<T> {
    pub(crate) fn push(&self, item: T) {
        self.items.lock().unwrap().push(item);
        self.version.send_modify(|v| *v += 1);
    }

    /// Every record, oldest first.
    pub fn all(&self) -> Vec<T> {
        self.items.lock().unwrap().clone()
    }

    /// At most `limit` records from `offset` (the control API pages with these).
    pub fn page(&self, offset: usize, limit: usize) -> Vec<T> {
        let items = self.items.lock().unwrap();
        items.iter().skip(offset).take(limit).cloned().collect()
    }

    /// The accepted records, oldest first.
    pub fn accepted(&self) -> Vec<T> {
        self.items
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.accepted())
            .cloned()
            .collect()
    }

    /// Forgets every record.
    pub fn clear(&self) {
        self.items.lock().unwrap().clear();
        self.version.send_modify(|v| *v += 1);
    }

    pub fn summary(&self) -> Summary {
        let items = self.items.lock().unwrap();
        let mut keys = HashSet::new();
        let mut summary = Summary::default();
        for item in items.iter() {
            if !item.accepted() {
                summary.rejected += 1;
                continue;
            }
            summary.received += 1;
            match item.dedupe_key() {
                Some(key) => {
                    if keys.insert(key) {
                        summary.unique += 1;
                    }
                }
                None => summary.unique += 1,
            }
        }
        summary.duplicates = summary.received - summary.unique;
        summary
    }

    /// Waits until `condition` holds over all records (checked at once and after every
    /// change); false if `timeout` passed first.
    pub async fn wait_until(&self, timeout: Duration, condition: impl Fn(&[T]) -> bool) -> bool {
        let mut changes = self.version.subscribe();
        let wait = async {
            loop {
                if condition(&self.items.lock().unwrap()) {
                    return;
                }
                if changes.changed().await.is_err() {
                    // The sender lives in `self`, so this cannot happen; avoid a busy loop anyway.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// Waits until at least `count` records are accepted.
    pub async fn wait_for_accepted(&self, count: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |items| {
            items.iter().filter(|r| r.accepted()).count() >= count
        })
        .await
    }

    /// Waits until at least `count` records exist, accepted or not.
    pub async fn wait_for_records(&self, count: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |items| items.len() >= count).await
    }
}
