//! Loopback test doubles of the providers Tocsin delivers through: an SMTP server, a
//! Twilio-compatible Messages API and a Standard Webhooks receiver. Each is a real network
//! server speaking the real protocol, so the channels are exercised with their production
//! clients (lettre, reqwest), and each can be told to fail on demand so retries, permanent
//! failures and unknown outcomes can be tested. They record what they received for tests,
//! `cargo xtask demo` and the benchmark, in process or over an HTTP control API.
//!
//! Layout:
//! - [`fault`]: the fault plan shared by the three servers (per target or default, for the next
//!   N requests or forever).
//! - [`inbox`]: the received items of one server, their summary and the wait helpers.
//! - `control`: the HTTP control API (`/_control/...`) each server serves.
//! - [`smtp`]: a hand-written SMTP server on a tokio listener ([`SmtpServer`]).
//! - [`twilio`]: the Messages API with signed status callbacks ([`TwilioServer`]).
//! - [`webhook`]: the Standard Webhooks receiver with its own verifier ([`WebhookReceiver`]).
//!
//! Every server binds `127.0.0.1:0` unless told otherwise and stops when its handle is dropped
//! or [`shutdown`](SmtpServer::shutdown) is awaited.
//!
//! Control API (on the Twilio and webhook ports, and on the SMTP server's control port):
//! - `GET /_control/messages[?offset=&limit=]`: the records as a JSON list.
//! - `DELETE /_control/messages`: forget them.
//! - `GET /_control/summary`: `{"received","unique","duplicates","rejected"}` over accepted
//!   records; uniqueness is by `Message-ID`, `webhook-id`, or for SMS the `delivery` query
//!   parameter of the `StatusCallback` URL (else `To`, `Body` and `StatusCallback`).
//! - `GET`/`POST`/`DELETE /_control/faults`: read, extend (one [`FaultRule`] or a list, as flat
//!   JSON: `{"target":"+15551230001","times":1,"kind":"status","status":429,"retry_after_secs":2}`)
//!   or clear the fault plan.
//! - Webhooks only: `GET`/`POST /_control/endpoints` (`[{"name":…,"secret":"whsec_…"}]`).
//! - Twilio only: `GET /_control/callbacks`, the status callbacks sent and their answers.
//!
//! The Twilio double also serves the Messages list (`GET …/Messages.json?To=&PageSize=&Page=`,
//! newest first, only messages it created), which the SMS worker asks when an attempt's
//! answer was lost.

mod control;
mod error;
pub mod fault;
pub mod inbox;
mod server;
pub mod smtp;
pub mod twilio;
pub mod webhook;

pub use error::Error;
pub use fault::{Fault, FaultRule, Faults, SmtpStage};
pub use inbox::{Inbox, Summary};
pub use smtp::{ReceivedMail, SmtpConfig, SmtpServer};
pub use twilio::{ReceivedSms, TwilioConfig, TwilioServer};
pub use webhook::{ReceivedWebhook, WebhookReceiver, WebhookReceiverConfig};

/// Milliseconds since the Unix epoch, the timestamp every record carries.
pub(crate) fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
