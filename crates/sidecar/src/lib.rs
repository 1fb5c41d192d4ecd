//! The llmsoup sidecar: the gRPC services Envoy calls (ext_proc, and the Router service the wasm
//! filter calls), the admin endpoint, and what it observes of traffic.
//!
//! It owns the process's state: one [`observe::Observer`] (metrics, accounting, the decision feed
//! and log, the backends routing reads, the budget counters' store) and the live routing engine, both created at
//! [`server::serve`] and passed to every service. Routing itself is `llmsoup-router`'s; the wire
//! contract is `llmsoup-contract`'s. See `ARCHITECTURE.md` for the crate map.
//!
//! Without the default `router` feature the binary only renders Envoy bootstraps and checks
//! configs (`envoy-config`, `config`, `hash-token`, `mock-upstream`): it links neither the router
//! nor Candle.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "router")]
pub mod budget;
#[cfg(feature = "router")]
pub mod cache;
#[cfg(feature = "router")]
pub mod calibrate;
#[cfg(feature = "router")]
pub mod eval;
#[cfg(feature = "router")]
pub mod observe;
#[cfg(feature = "router")]
pub mod replay;
#[cfg(feature = "router")]
pub mod server;
pub mod source;
