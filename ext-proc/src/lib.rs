//! llmsoup: semantic LLM routing for Envoy.
//!
//! The sidecar evaluates signals on each request, combines them in decisions, picks a model
//! and tells Envoy where to send the request. See `ARCHITECTURE.md` for the module map.

pub mod accounting;
pub mod config;
pub mod decision;
pub mod decision_log;
pub mod engine;
pub mod envoy;
pub mod feed;
pub mod metrics;
pub mod mock_upstream;
pub mod models;
pub mod plugins;
pub mod protocol;
pub mod selection;
pub mod server;
pub mod signals;
