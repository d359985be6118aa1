//! Integration tests for the webhook channel: signatures checked by an independent
//! implementation, and the sender against real HTTP servers on loopback.

mod guard;
mod sender;
mod server;
mod signatures;
