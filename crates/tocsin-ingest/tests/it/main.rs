//! Ingest integration tests.
