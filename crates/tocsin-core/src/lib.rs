//! Tocsin's domain core: incident events, their validation, and the fold that turns an
//! incident's event log into its current state; subscribers' preferences, and the fan-out
//! that decides who hears about an event, on which channel, and when.
//!
//! Nothing here does I/O. The store persists what this crate decides, the bus carries it,
//! and the services translate wire types into these types at their edges.
//!
//! - [`ids`]: typed identifiers for incidents, events and subscribers.
//! - [`change`]: what a publisher asks to record, and its validation.
//! - [`component`]: the component catalogue, and how hard an incident hits each component.
//! - [`incident`]: incident state, the transition rules and the fold.
//! - [`event`]: an event as recorded in the log.
//! - [`idempotency`]: request fingerprints for publisher idempotency keys.
//! - [`channel`]: the ways a subscriber can be reached.
//! - [`preferences`]: what a subscriber wants to hear about, and their quiet hours.
//! - [`subscriber`]: a subscriber and their contact points, kept apart as personal data.
//! - [`fanout`]: the deliveries one event causes for one subscriber, and their keys.
//! - [`delivery`]: a delivery as the ledger records it, and where it stands.
//! - [`fallback`]: telling a subscriber on another channel that one of theirs stopped working.
//! - [`links`]: signed, expiring links that let a reader unsubscribe or manage preferences.
//! - [`account`]: messages about a subscription itself (sign-up confirmations).
//! - [`contact`]: the rules an email address or phone number must meet.
//! - [`lane`]: which queue a delivery waits in, so small or critical work never queues behind
//!   a big fan-out.
//! - [`outcome`]: what one attempt to hand a message to a provider came to.
//! - [`retry`]: the retry schedule: backoff with jitter, provider floors, limits.
//! - [`notice`]: the customer-facing facts of one event for one recipient, which channels render.
//! - [`maintenance`]: the events Tocsin records by itself for a scheduled maintenance.
//! - [`status`]: what a public status page says: components' states and the overall word.
//! - [`webhook_secret`]: the `whsec_` form of a webhook signing secret.
//! - [`network`]: which addresses a webhook may reach, and the checks on a webhook URL.

pub mod account;
pub mod change;
pub mod channel;
pub mod component;
pub mod contact;
pub mod delivery;
pub mod error;
pub mod event;
pub mod fallback;
pub mod fanout;
pub mod idempotency;
pub mod ids;
pub mod incident;
pub mod lane;
pub mod links;
pub mod maintenance;
pub mod network;
pub mod notice;
pub mod outcome;
pub mod preferences;
pub mod retry;
pub mod status;
pub mod subscriber;
pub mod webhook_secret;

pub use change::{Change, EventKind, IncidentStatus, MaintenanceWindow, PublishRequest, Severity};
pub use channel::Channel;
pub use component::{Component, Impact};
pub use delivery::{Delivery, DeliveryState};
pub use error::DomainError;
pub use event::RecordedEvent;
pub use fanout::{DeliveryKey, Planned, Timing, plan};
pub use ids::{EventId, IncidentId, SubscriberId};
pub use incident::{Incident, IncidentKind};
pub use lane::Lane;
pub use notice::Notice;
pub use outcome::SendOutcome;
pub use preferences::{ComponentFilter, Preferences, QuietHours, default_kinds};
pub use retry::{Retry, RetryPolicy};
pub use subscriber::{Contacts, Subscriber};
