//! The wasm filter's plugin configuration: one typed struct that `llmsoup envoy-config --mode
//! wasm` serialises into the bootstrap and the filter parses back, so writer and reader cannot
//! drift apart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What to do when the sidecar cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Route to the default model (or keep a concrete configured model).
    #[default]
    Open,
    /// Reply 503.
    Closed,
}

/// The filter's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Envoy cluster (HTTP/2) of the sidecar.
    pub sidecar_cluster: String,
    /// Route call timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Sidecar failure behaviour.
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// Largest request body accepted (413 above).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Accepted client tokens as hex SHA-256; empty = no auth.
    #[serde(default)]
    pub token_sha256: Vec<String>,
    /// Token names, parallel to `token_sha256` (reported as the client identity).
    #[serde(default)]
    pub token_names: Vec<String>,
    /// Enabled models: name → provider model id (for fail-open rewrites).
    #[serde(default)]
    pub models: BTreeMap<String, String>,
    /// Model used on fail-open.
    pub default_model: String,
    /// Extra request header Envoy routes on (`compat.selected_model_header`): stripped from
    /// clients and set on fail-open, like `x-llmsoup-model`.
    #[serde(default)]
    pub route_header: Option<String>,
    /// Read response bodies for token usage; `false` reports status and timings only.
    #[serde(default = "yes")]
    pub response_accounting: bool,
    /// The sidecar's gRPC secret (`server.grpc_token`), sent as `authorization: Bearer` metadata
    /// on every Route and Report call.
    #[serde(default)]
    pub grpc_token: Option<String>,
    /// The local routing plan, a `v1::LocalPlan` protobuf in hex ([`encode_plan`]); absent:
    /// every request makes the Route call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_plan: Option<String>,
}

/// `Config.local_plan`'s text for a plan.
pub fn encode_plan(plan: &crate::v1::LocalPlan) -> String {
    hex::encode(prost::Message::encode_to_vec(plan))
}

/// The plan in `Config.local_plan`.
pub fn decode_plan(text: &str) -> Result<crate::v1::LocalPlan, String> {
    let bytes = hex::decode(text).map_err(|e| format!("local_plan: {e}"))?;
    <crate::v1::LocalPlan as prost::Message>::decode(bytes.as_slice()).map_err(|e| format!("local_plan: {e}"))
}

fn yes() -> bool {
    true
}

fn default_timeout_ms() -> u64 {
    5_000
}

fn default_max_body() -> usize {
    8 * 1024 * 1024
}

/// A parsed, ready-to-use configuration.
#[derive(Debug, Clone)]
pub struct Plugin {
    /// The raw settings.
    pub config: Config,
    /// Decoded token hashes.
    pub tokens: Vec<[u8; 32]>,
    /// The serialized `GrpcService` every sidecar call goes to (cluster + token metadata).
    pub upstream: Vec<u8>,
    /// The decoded local routing plan.
    pub plan: Option<crate::v1::LocalPlan>,
}

impl Plugin {
    /// Parses and checks the JSON configuration.
    pub fn parse(json: &[u8]) -> Result<Plugin, String> {
        let config: Config = serde_json::from_slice(json).map_err(|e| format!("invalid llmsoup filter config: {e}"))?;
        let mut tokens = Vec::with_capacity(config.token_sha256.len());
        for (i, h) in config.token_sha256.iter().enumerate() {
            let mut out = [0u8; 32];
            hex::decode_to_slice(h, &mut out).map_err(|e| format!("token_sha256[{i}]: {e}"))?;
            tokens.push(out);
        }
        if !config.models.contains_key(&config.default_model) {
            return Err(format!("default_model `{}` is not in models", config.default_model));
        }
        let upstream = crate::upstream::grpc_service(&config.sidecar_cluster, config.grpc_token.as_deref());
        // The proxy-wasm API takes the descriptor as a string: a length varint ≥ 128 would not be
        // UTF-8 (llmsoup's config caps `grpc_token` at 64 characters for this reason).
        if std::str::from_utf8(&upstream).is_err() {
            return Err("sidecar_cluster or grpc_token too long for a gRPC descriptor".into());
        }
        let plan = config.local_plan.as_deref().map(decode_plan).transpose()?;
        Ok(Plugin {
            config,
            tokens,
            upstream,
            plan,
        })
    }
}
