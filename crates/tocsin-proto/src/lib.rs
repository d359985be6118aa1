//! The `tocsin.v1` gRPC contract: code generated from `proto/tocsin/v1` by protox and
//! tonic-prost-build, the encoded descriptor set for server reflection, and conversions
//! between these wire types and the domain types of `tocsin-core`.
//!
//! Wire types never travel further than the service edge: handlers convert on the way in
//! (validating as they go) and on the way out.

#![allow(unreachable_pub, missing_debug_implementations, clippy::all)]

pub mod v1 {
    tonic::include_proto!("tocsin.v1");
}

mod components;
mod convert;
pub mod deliveries;
pub mod subscribers;

pub use components::impacts;
pub use convert::{
    event_kind_in, incident_id, kind_in, severity_in, status_in, timestamp, to_offset_datetime,
};

/// The encoded `FileDescriptorSet` of `tocsin.v1`, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tocsin_descriptor.bin"));
