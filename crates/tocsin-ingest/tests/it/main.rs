//! Integration tests of the ingest service: the real gRPC server in-process on
//! `127.0.0.1:0`, a fresh PostgreSQL database per test (`#[sqlx::test]`), and real NATS
//! JetStream with a unique stream and subject prefix per test.

mod alertmanager;
mod api;
mod app;
mod clock;
mod components;
mod errors;
mod ops;
mod reflection;
mod relay;
mod subscribers;
