//! Compiles `proto/tocsin/v1` with protox (pure Rust), so no `protoc` is needed anywhere.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        proto_root.join("tocsin/v1/incidents.proto"),
        proto_root.join("tocsin/v1/subscribers.proto"),
        proto_root.join("tocsin/v1/operations.proto"),
        proto_root.join("tocsin/v1/components.proto"),
    ];
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let descriptors = protox::compile(&files, [&proto_root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("tocsin_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
