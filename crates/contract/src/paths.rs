//! The HTTP paths llmsoup answers: the engine's gate and Envoy's route table (rendered by the
//! envoy crate) must agree on them.

/// The endpoints llmsoup routes (POST only). Envoy's route table answers other methods on them
/// with the same 405 when the sidecar is not asked (`llmsoup_envoy::render`).
pub const ROUTED_PATHS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/messages",
    "/v1/embeddings",
    "/v1/responses",
];

/// The model list, answered by the engine from the configuration (GET only).
pub const MODELS_PATH: &str = "/v1/models";

/// One model (`GET /v1/models/{id}`, the OpenAI SDK's `models.retrieve`), answered by the engine.
pub const MODEL_PATH_PREFIX: &str = "/v1/models/";
