//! Integration tests for the webhook channel: signatures checked by an independent
//! implementation, the sender against real HTTP servers on loopback, and the worker end to
//! end against PostgreSQL, NATS, the resolver and the local webhook receiver, with the ops
//! server's readiness and metrics.

mod guard;
mod ops;
mod restart;
mod sender;
mod server;
mod shutdown;
mod signatures;
mod worker;
