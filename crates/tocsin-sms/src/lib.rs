//! Tocsin's SMS channel: turns a [`tocsin_core::Notice`] into a short text that fits a segment
//! budget, sends it through Twilio's Messages API, and verifies Twilio's delivery callbacks.
//!
//! - [`segments`]: GSM-7 and UCS-2 segment arithmetic, and cutting a text to a budget.
//! - [`templates`]: one short template per event kind, compiled in and overridable.
//! - [`twilio`]: a small client for `POST /2010-04-01/Accounts/{sid}/Messages.json` whose
//!   answers map onto [`tocsin_core::SendOutcome`], with the SMS policy for unknown outcomes.
//! - [`callback`]: `X-Twilio-Signature` verification and status-callback parsing.
//! - [`status`]: Twilio's message statuses and which of them are final.
//! - [`error`]: the crate's error type.
//!
//! The `twilio-async` crate was considered and rejected: its base URL is hard-wired to
//! `api.twilio.com` (so it cannot be pointed at a local test server), it has not been
//! maintained since 2021, and it supports neither `MessagingServiceSid` nor
//! `StatusCallback`, both of which this channel needs.

#![forbid(unsafe_code)]

pub mod callback;
pub mod error;
pub mod segments;
pub mod status;
pub mod templates;
pub mod twilio;

pub use callback::{StatusCallback, signature, verify_signature};
pub use error::Error;
pub use segments::{Encoding, Fitted, fit};
pub use status::{MessageStatus, Progress};
pub use templates::Templates;
pub use twilio::{Sender, TwilioClient, TwilioConfig};
