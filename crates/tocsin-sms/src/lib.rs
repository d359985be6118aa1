//! Tocsin's SMS channel: turns a [`tocsin_core::Notice`] into a short text that fits a segment
//! budget, sends it through Twilio's Messages API, and records Twilio's delivery callbacks.
//! The `tocsin-sms` binary runs the worker and the callback server together ([`run`]).
//!
//! - [`courier`]: the channel's [`tocsin_delivery::Courier`] and its policies (never resend
//!   an unknown outcome; supersede stale texts).
//! - [`callbacks`]: the HTTP endpoint for Twilio's status callbacks, which settles deliveries
//!   in the ledger.
//! - [`config`]: the binary's settings from the environment.
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
pub mod callbacks;
pub mod config;
pub mod courier;
pub mod error;
pub mod inbound;
pub mod segments;
pub mod status;
pub mod templates;
pub mod twilio;

pub use callback::{StatusCallback, signature, verify_signature};
pub use callbacks::Callbacks;
pub use courier::SmsCourier;
pub use error::Error;
pub use segments::{Encoding, Fitted, fit};
pub use status::{MessageStatus, Progress};
pub use templates::Templates;
pub use twilio::{Sender, TwilioClient, TwilioConfig};

use anyhow::Context;
use tocsin_delivery::Worker;
use tocsin_runtime::Shutdown;
use tokio::net::TcpListener;

/// Runs the SMS worker and the status-callback server on `listener` until `shutdown`.
/// If either stops with an error, the other is stopped too and the error returned.
pub async fn run(
    worker: Worker<SmsCourier>,
    callbacks: Callbacks,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let sending = {
        let shutdown = shutdown.clone();
        async move {
            let result = worker
                .run(shutdown.clone())
                .await
                .context("running the SMS worker");
            shutdown.trigger();
            result
        }
    };
    let serving = {
        let shutdown = shutdown.clone();
        async move {
            let result = callbacks::serve(listener, callbacks, shutdown.clone())
                .await
                .context("serving status callbacks");
            shutdown.trigger();
            result
        }
    };
    let (sent, served) = tokio::join!(sending, serving);
    sent.and(served)
}
