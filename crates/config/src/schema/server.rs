//! Where the sidecar listens and how Envoy reaches it: `server:`, `gateway:`.

use super::*;

/// Sidecar listen addresses.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC address serving Envoy's ExternalProcessor, llmsoup's Router and the rate limit
    /// services: `host:port`, or `unix:/absolute/path` for a Unix domain socket when Envoy runs on
    /// the same host or in the same pod (no TCP stack on either side of the hop and no port open
    /// to anyone else; the socket is created with mode 0660, a stale socket file left by a
    /// sidecar that died is replaced, one a live process answers on is never taken over).
    #[serde(default = "default_grpc_listen")]
    pub grpc_listen: String,
    /// Admin HTTP address (`/health`, `/ready`, `/metrics`); `null` turns it off.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: Option<String>,
    /// Shared secret the gRPC port requires (`authorization: Bearer <token>` metadata) on the
    /// ext_proc and Router services. `llmsoup envoy-config` renders it into Envoy's ext_proc
    /// `initial_metadata` and the wasm filter's config, so the rendered bootstrap is a secret
    /// too. Use `${ENV}` substitution to keep it out of the file. Unset: no gRPC auth (a
    /// warning at start when the port listens beyond loopback). Empty counts as unset, so a
    /// shared config can say `"${LLMSOUP_GRPC_TOKEN:-}"`.
    #[serde(default, deserialize_with = "empty_as_none", skip_serializing_if = "Option::is_none")]
    pub grpc_token: Option<String>,
    /// Reload when the config file changes (checked every second: its modification time, size
    /// and inode, so an atomic replace and a Kubernetes ConfigMap update count), as SIGHUP does.
    /// A file caught half-written is refused like any bad file and loaded once it is whole.
    #[serde(default)]
    pub watch_config: bool,
    /// Threads of the sidecar's async runtime (gRPC, admin, Redis, the cheap signals). Model
    /// inference has threads of its own (`embedding.threads`), so few are needed; every extra one
    /// costs wake-ups between threads on each message (on a 2-core AMD EPYC one thread instead of
    /// two cut the sidecar's context switches per ext_proc request 4x and its CPU ~10%). Left out:
    /// a quarter of the CPUs, at least one. Read at start; a reload does not change it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<usize>,
}

fn empty_as_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

fn default_admin_listen() -> Option<String> {
    Some("127.0.0.1:9190".into())
}

fn default_grpc_listen() -> String {
    "127.0.0.1:50051".into()
}

/// Where a gRPC endpoint of the sidecar is, as `server.grpc_listen` and
/// `gateway.sidecar_address` spell it: TCP `host:port`, or `unix:/absolute/path` (gRPC's naming;
/// `unix:///absolute/path` too) for a Unix domain socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcAddress {
    /// A TCP address, `host:port` as written (the renderer and the sidecar parse what they need).
    Tcp(String),
    /// The path of a Unix domain socket: absolute, since the sidecar and Envoy resolve it from
    /// different working directories, and short enough for `sun_path`.
    Unix(std::path::PathBuf),
}

impl GrpcAddress {
    /// The prefix that names a Unix domain socket.
    pub const UNIX_PREFIX: &str = "unix:";
    /// The longest socket path the kernel takes (`sun_path` is 108 bytes with its NUL).
    pub const MAX_SOCKET_PATH: usize = 107;

    /// Parses `host:port` or `unix:/path`; the error says what is wrong (the caller names the key).
    pub fn parse(s: &str) -> Result<Self, String> {
        let Some(path) = s.strip_prefix(Self::UNIX_PREFIX) else {
            return Ok(GrpcAddress::Tcp(s.to_string()));
        };
        // `unix:///path` is gRPC's URI spelling of the same thing.
        let path = path.strip_prefix("//").unwrap_or(path);
        if !path.starts_with('/') || path.len() < 2 || path.ends_with('/') {
            return Err(format!(
                "`{s}`: a Unix socket needs an absolute file path (`unix:/run/llmsoup/grpc.sock`)"
            ));
        }
        if path.len() > Self::MAX_SOCKET_PATH {
            return Err(format!(
                "`{s}`: a Unix socket path may have at most {} bytes (this one has {})",
                Self::MAX_SOCKET_PATH,
                path.len()
            ));
        }
        Ok(GrpcAddress::Unix(path.into()))
    }
}

impl fmt::Display for GrpcAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrpcAddress::Tcp(a) => f.write_str(a),
            GrpcAddress::Unix(p) => write!(f, "{}{}", Self::UNIX_PREFIX, p.display()),
        }
    }
}

impl ServerConfig {
    /// `grpc_listen`, parsed; the error names the key.
    pub fn grpc_address(&self) -> Result<GrpcAddress, ConfigError> {
        GrpcAddress::parse(&self.grpc_listen).map_err(|m| ConfigError::invalid("server.grpc_listen", m))
    }

    /// The async runtime's thread count for a machine with `cpus` CPUs: `worker_threads`, else a
    /// quarter of the CPUs (at least one), so a 2-core pod runs one and a 16-core node four.
    pub fn worker_threads_for(&self, cpus: usize) -> usize {
        self.worker_threads.unwrap_or(cpus / 4).max(1)
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.grpc_address()?;
        if self.worker_threads == Some(0) {
            return Err(ConfigError::invalid(
                "server.worker_threads",
                "must be at least 1 (leave it out for a quarter of the CPUs)",
            ));
        }
        Ok(())
    }
}

impl GatewayConfig {
    /// Where Envoy reaches the sidecar: `sidecar_address`, else `server.grpc_listen`; the error
    /// names the key it came from.
    pub fn sidecar(&self, server: &ServerConfig) -> Result<GrpcAddress, ConfigError> {
        match &self.sidecar_address {
            Some(a) => GrpcAddress::parse(a).map_err(|m| ConfigError::invalid("gateway.sidecar_address", m)),
            None => server.grpc_address(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            grpc_listen: default_grpc_listen(),
            admin_listen: default_admin_listen(),
            grpc_token: None,
            watch_config: false,
            worker_threads: None,
        }
    }
}

/// Which Envoy filter talks to the sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttachMode {
    /// Envoy's own `envoy.filters.http.ext_proc` filter.
    #[default]
    ExtProc,
    /// llmsoup's proxy-wasm filter calling the Router service.
    Wasm,
}

/// What Envoy does when the sidecar is unreachable or too slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Keep serving: route to the default model.
    #[default]
    Open,
    /// Refuse with 503.
    Closed,
}

/// Envoy bootstrap rendering settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Envoy listener for client traffic (`host:port`).
    #[serde(default = "default_gateway_listen")]
    pub listen: String,
    /// Envoy admin interface (`host:port`); keep it on localhost.
    #[serde(default = "default_gateway_admin")]
    pub admin: String,
    /// Attach mode.
    #[serde(default)]
    pub mode: AttachMode,
    /// Behaviour when the sidecar fails.
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// Largest request body Envoy buffers, in bytes; larger requests get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// How long Envoy waits for the sidecar per message, in milliseconds.
    #[serde(default = "default_sidecar_timeout_ms")]
    pub sidecar_timeout_ms: u64,
    /// Envoy's gRPC health check of the sidecar (`grpc.health.v1.Health`): while it fails, both
    /// attach modes take the fail-open (or fail-closed) path at once instead of waiting
    /// `sidecar_timeout_ms` per request.
    #[serde(default)]
    pub sidecar_health_check: SidecarHealthCheck,
    /// Address Envoy uses to reach the sidecar, `ip:port` or `unix:/absolute/path` (defaults to
    /// `server.grpc_listen`). A `unix:` address makes the sidecar cluster a `pipe`: Envoy must
    /// see the socket at that path and may write to it (the sidecar's user or group).
    #[serde(default)]
    pub sidecar_address: Option<String>,
    /// CA bundle Envoy uses to verify HTTPS providers.
    #[serde(default = "default_ca_bundle")]
    pub ca_bundle: String,
    /// Path of the compiled wasm filter (wasm mode).
    #[serde(default)]
    pub wasm_path: Option<String>,
    /// Directory of the xDS resource files that make a reload reach Envoy (`envoy-config
    /// --xds-dir` and `serve --xds-dir` override it). Set: `envoy-config` renders a bootstrap whose
    /// routes (RDS), provider clusters (CDS), credentials (SDS) and model/token-holding filter
    /// configs (ECDS) come from files here, and `serve` rewrites them atomically after every
    /// reload; Envoy applies them without draining connections. Unset: everything is inline in the
    /// bootstrap, and a reload that changes models, providers or tokens needs a new bootstrap and
    /// an Envoy restart (`serve` warns, `/ready` says so). Envoy and the sidecar must see the
    /// directory at this same path (a shared volume).
    #[serde(default)]
    pub xds_dir: Option<String>,
    /// Read response bodies for token usage, cost and time per output token. `false` keeps every
    /// response body away from the sidecar (ext_proc) and unread (wasm): requests, status, time to
    /// first byte and duration are still recorded; tokens, cost and savings are not.
    #[serde(default = "yes")]
    pub response_accounting: bool,
    /// ext_proc mode: read responses for accounting in a second ext_proc filter in observability
    /// mode, which Envoy never waits for, instead of on the routing stream, where each streamed
    /// chunk waits for the sidecar's answer. Costs a second gRPC stream per request.
    #[serde(default)]
    pub async_response_accounting: bool,
    /// wasm mode: whether the filter may route a request itself, without the Route call, when
    /// the whole config can be decided from the request body alone (keyword rules, one model
    /// per decision, no plugins, no fallback chains, OpenAI providers; anything else is always
    /// routed by the sidecar). `off`: every request asks the sidecar.
    #[serde(default)]
    pub local_routing: LocalRouting,
}

/// `gateway.local_routing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LocalRouting {
    /// The filter routes locally when the config allows it.
    #[default]
    Auto,
    /// Every request makes the Route call.
    Off,
}

fn default_gateway_listen() -> String {
    "0.0.0.0:8080".into()
}
fn default_gateway_admin() -> String {
    "127.0.0.1:9901".into()
}
fn default_max_body_bytes() -> u64 {
    8 * 1024 * 1024
}
fn default_sidecar_timeout_ms() -> u64 {
    5_000
}

/// The sidecar circuit breaker: Envoy's active health check of the sidecar cluster. A hung
/// sidecar is marked unhealthy after `unhealthy_threshold` checks fail (each waits `timeout_ms`),
/// so at most about `unhealthy_threshold × (interval_ms + timeout_ms)` of traffic waits the full
/// `sidecar_timeout_ms`; one passing check brings it back.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SidecarHealthCheck {
    /// Off = no health check: every request to a hung sidecar waits `sidecar_timeout_ms`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Time between checks, in milliseconds.
    #[serde(default = "default_hc_interval_ms")]
    pub interval_ms: u64,
    /// How long one check waits for the answer, in milliseconds.
    #[serde(default = "default_hc_timeout_ms")]
    pub timeout_ms: u64,
    /// Failed checks in a row that mark the sidecar unhealthy.
    #[serde(default = "default_hc_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Passing checks in a row that mark it healthy again.
    #[serde(default = "default_hc_healthy_threshold")]
    pub healthy_threshold: u32,
}

fn default_hc_interval_ms() -> u64 {
    1_000
}
fn default_hc_timeout_ms() -> u64 {
    500
}
fn default_hc_unhealthy_threshold() -> u32 {
    3
}
fn default_hc_healthy_threshold() -> u32 {
    1
}

impl Default for SidecarHealthCheck {
    fn default() -> Self {
        SidecarHealthCheck {
            enabled: true,
            interval_ms: default_hc_interval_ms(),
            timeout_ms: default_hc_timeout_ms(),
            unhealthy_threshold: default_hc_unhealthy_threshold(),
            healthy_threshold: default_hc_healthy_threshold(),
        }
    }
}
fn default_ca_bundle() -> String {
    "/etc/ssl/certs/ca-certificates.crt".into()
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: default_gateway_listen(),
            admin: default_gateway_admin(),
            mode: AttachMode::default(),
            failure_mode: FailureMode::default(),
            max_body_bytes: default_max_body_bytes(),
            sidecar_timeout_ms: default_sidecar_timeout_ms(),
            sidecar_health_check: SidecarHealthCheck::default(),
            sidecar_address: None,
            ca_bundle: default_ca_bundle(),
            wasm_path: None,
            xds_dir: None,
            response_accounting: true,
            async_response_accounting: false,
            local_routing: LocalRouting::Auto,
        }
    }
}
