//! llmsoup's gRPC contract: the `llmsoup.v1.Router` service and its messages.
//!
//! With the `grpc` feature the tonic client and server are generated too; without it (the wasm
//! filter) only the prost messages are.

#![allow(clippy::doc_lazy_continuation)]

/// `llmsoup.v1` messages (and the Router service with `grpc`).
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/llmsoup.v1.rs"));
}

pub mod auth;
pub mod usage;

/// gRPC service name, as the wasm filter dispatches it.
pub const ROUTER_SERVICE: &str = "llmsoup.v1.Router";
