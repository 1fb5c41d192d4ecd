//! Budgets and rate limits: what Envoy's `ratelimit` filter (rendered by `envoy-config`) and the
//! sidecar's rate limit service agree on. The tenant comes from the authenticated client token
//! only: the auth step (the sidecar in ext_proc mode, the wasm filter) sets [`TENANT_HEADER`]
//! after removing every client-sent `x-llmsoup-*` header, and the model routes remove it before
//! the provider.

/// Request header carrying the authenticated client token's name (the tenant).
pub const TENANT_HEADER: &str = "x-llmsoup-tenant";
/// Rate limit domain of llmsoup's descriptors.
pub const DOMAIN: &str = "llmsoup";
/// Descriptor entry key: the tenant.
pub const TENANT_KEY: &str = "llmsoup_tenant";
/// Descriptor entry key: the model.
pub const MODEL_KEY: &str = "llmsoup_model";
/// Response header on a refusal: `scope:name:limit`, or [`UNAVAILABLE`].
pub const BUDGET_HEADER: &str = "x-llmsoup-budget";
/// [`BUDGET_HEADER`] value when the budget store is unreachable and a limit fails closed (the
/// rate limit service answers with a gRPC error; Envoy's `status_on_error` and the rendered
/// local-reply mapper make it `budgets.unavailable_status` with a JSON body).
pub const UNAVAILABLE: &str = "unavailable";
