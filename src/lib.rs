//! wagate: the gate every internal service calls before it messages a
//! WhatsApp customer. See SPEC.md for the behaviour contract.

pub mod cloud;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod migrate;
pub mod net;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;

/// Generated protobuf and tonic code for `wagate.v1`.
pub mod pb {
    tonic::include_proto!("wagate.v1");

    /// Encoded descriptors of the API and its imports, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("wagate_descriptor");
}
