//! Tocsin's webhook channel: the body customers receive, its Standard Webhooks signature,
//! and a sender that cannot be turned against our own network.
//!
//! A webhook URL is chosen by a customer, so every send is guarded against server-side
//! request forgery: the URL is checked under a [`tocsin_core::network::UrlPolicy`], names
//! are resolved by a resolver that drops private and reserved addresses, and redirects and
//! proxies are never followed. Every answer becomes a [`tocsin_core::SendOutcome`]; an
//! attempt whose answer never came is `Unknown`, and the webhook policy for it is to resend
//! with the same `webhook-id`, which receivers deduplicate on.
//!
//! - [`signature`]: endpoint secrets, signing, and the three `webhook-*` headers.
//! - [`payload`]: the versioned JSON body, documented in `PAYLOAD.md`.
//! - [`client`]: the SSRF-safe sender and its configuration.
//! - [`courier`]: the channel for the delivery worker (`tocsin-delivery`): the body, the
//!   headers and the send for one delivery, and the webhook policy (resend unknowns, never
//!   supersede). The `tocsin-webhook` binary runs it.
//! - [`resolver`]: the DNS resolver that refuses forbidden addresses at connect time.
//! - [`response`]: what an endpoint's HTTP answer means, including `Retry-After`.
//! - [`error`]: the mistakes a caller can fix before anything is sent.

pub mod client;
pub mod courier;
pub mod error;
pub mod payload;
pub mod resolver;
pub mod response;
pub mod signature;

pub use client::{ClientConfig, WebhookClient};
pub use courier::WebhookCourier;
pub use error::Error;
pub use payload::{PayloadInput, SCHEMA_VERSION, WebhookPayload};
pub use resolver::{GuardedResolver, Refused};
pub use signature::{WebhookSecret, sign, signature_headers};
