//! Tocsin's email channel: turns a [`tocsin_core::Notice`] into an email a customer can read
//! at a glance, and hands it to an SMTP relay.
//!
//! - [`templates`]: subject, plain-text and HTML templates per event kind, compiled in and
//!   overridable from a directory.
//! - [`message`]: the MIME message, its deterministic `Message-ID`, threading and the
//!   headers for automated mail and one-click unsubscribe.
//! - [`smtp`]: a pooled SMTP sender and the mapping of SMTP failures onto
//!   [`tocsin_core::SendOutcome`], with the email policy for unknown outcomes.
//! - [`courier`]: [`EmailCourier`], the email channel for the delivery runtime's worker, and
//!   its policies.
//! - [`error`]: the crate's error type.
//!
//! The worker loop that drives these lives in the delivery runtime (`tocsin-delivery`); this
//! crate's library does not touch the bus or the store. The `tocsin-email` binary wires the
//! courier to a worker, configured from the environment.

#![forbid(unsafe_code)]

pub mod courier;
pub mod error;
pub mod message;
pub mod smtp;
pub mod templates;

pub use courier::{EmailCourier, EmailSettings};
pub use error::Error;
pub use message::{Compose, build, message_id};
pub use smtp::{SmtpConfig, SmtpSender, TlsMode, classify};
pub use templates::{Rendered, Templates};
