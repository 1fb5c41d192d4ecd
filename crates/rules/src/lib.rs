//! The rule evaluation both llmsoup processes run: the sidecar's engine (`llmsoup-router`) and,
//! for configs it can decide alone, the wasm filter. One implementation, so the two cannot
//! disagree: keyword matching ([`keyword`]), rule trees and the winning decision ([`decision`]).
//!
//! This crate builds for `wasm32-unknown-unknown` and knows nothing of the configuration schema:
//! callers build its types from theirs (the router from `llmsoup-config`, the filter from its
//! plugin configuration).

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod decision;
pub mod keyword;
pub mod plan;
pub mod request;

use std::sync::Arc;

/// One matched rule of one signal, with its confidence. `K` is the caller's signal kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Match<K> {
    /// Signal kind.
    pub kind: K,
    /// Rule name.
    pub name: Arc<str>,
    /// Confidence in 0..=1.
    pub confidence: f64,
}
