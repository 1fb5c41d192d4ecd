//! llmsoup's proxy-wasm filter. Inside Envoy it authenticates the client, buffers the request
//! body, makes one `llmsoup.v1.Router/Route` gRPC call to the sidecar, applies the returned
//! header/body mutations, clears the route cache and resumes — or replies locally. On the
//! response it adds the `x-llmsoup-*` headers and reports usage to the sidecar off the request
//! path.
//!
//! Host calls live behind [`host::Host`] so the whole flow in [`filter`] is unit-tested natively;
//! `wasm` binds it to proxy-wasm and never lets a host error panic (a panic kills the VM).
//!
//! Everything the filter shares with the sidecar (messages, header names, error bodies, auth, the
//! response tracker, the fail-open rewrite, its own plugin config) comes from `llmsoup-contract`,
//! its only llmsoup dependency.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod filter;
pub mod host;
pub mod local;
#[cfg(target_arch = "wasm32")]
mod wasm;
