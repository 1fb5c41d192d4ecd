//! llmsoup's wire contract: everything the sidecar and the proxy-wasm filter must agree on, in
//! one crate that builds for `wasm32-unknown-unknown` (no tokio, no tonic unless the `grpc`
//! feature asks for the service).
//!
//! - [`v1`]: the `llmsoup.v1.Router` messages (and, with `grpc`, the tonic client and server);
//! - [`headers`]: the `x-llmsoup-*` header names, the reserved prefix and the dynamic-metadata
//!   namespace, and which client headers are stripped;
//! - [`error`]: the OpenAI (and Anthropic) error bodies every client sees;
//! - [`auth`]: client tokens, their hashes and the 401 texts;
//! - [`budget`]: the tenant header and the rate limit descriptors Envoy and the sidecar share;
//! - [`paths`]: the HTTP paths llmsoup routes and answers;
//! - [`outcome`]: what routing a request produced (forward with mutations, or a local reply);
//! - [`usage`]: the response tracker both modes feed, which produces the `UsageReport`;
//! - [`fail_open`]: the body rewrite used when the sidecar cannot answer;
//! - [`fallback`]: the headers of fallback chains (the chain, the attempts, the model span);
//! - [`plugin_config`]: the wasm filter's configuration, written by `envoy-config` and read by
//!   the filter, and [`upstream`], the gRPC descriptor the filter dispatches to.

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![allow(clippy::doc_lazy_continuation)]

/// `llmsoup.v1` messages (and the Router service with `grpc`).
#[allow(missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/llmsoup.v1.rs"));
}

pub mod auth;
pub mod budget;
pub mod error;
pub mod fail_open;
pub mod fallback;
pub mod headers;
pub mod outcome;
pub mod paths;
pub mod plugin_config;
pub mod upstream;
pub mod usage;

pub use error::ApiError;

/// gRPC service name, as the wasm filter dispatches it.
pub const ROUTER_SERVICE: &str = "llmsoup.v1.Router";
