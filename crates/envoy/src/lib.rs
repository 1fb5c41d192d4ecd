//! `llmsoup envoy-config`: renders a complete Envoy bootstrap from an llmsoup config.
//!
//! Envoy owns the data path: one route per model (matched on `x-llmsoup-model`) to one cluster
//! per provider, TLS with SNI for HTTPS providers, credentials injected from a secret Envoy reads
//! from the environment or a file (never inlined). A request without the routing header matches no
//! provider route: it gets a JSON 404/405/503 from the route table. Envoy's own local replies are
//! mapped to OpenAI-style JSON, and paths are normalised before routing.
//!
//! Uses only the config (what to render) and the contract (header names, paths, error bodies, the
//! wasm plugin config type), so `config check` and `envoy-config` need nothing of the router.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use llmsoup_config::{ANTHROPIC_VERSION, AttachMode, Config, FailureMode, GrpcAddress, ProviderApi, ProviderConfig};
use llmsoup_contract::ApiError;
use llmsoup_contract::auth::{self, AuthError};
use llmsoup_contract::budget::TENANT_HEADER;
use llmsoup_contract::fail_open::FailOpenError;
pub use llmsoup_contract::headers::METADATA_NAMESPACE;
use llmsoup_contract::headers::MODEL_HEADER;
use llmsoup_contract::outcome::Reply;
use llmsoup_contract::paths::{MODELS_PATH, ROUTED_PATHS};
use llmsoup_contract::plugin_config;

/// Name of the cluster that reaches the sidecar.
pub const SIDECAR_CLUSTER: &str = "llmsoup_sidecar";

/// Name of the ext_proc filter (observability mode) that reads responses for accounting when
/// `gateway.async_response_accounting` is set.
pub const ACCOUNTING_FILTER: &str = "llmsoup.response_accounting";

const FAIL_OPEN_LUA: &str = include_str!("fail_open.lua");
const CLIENT_AUTH_LUA: &str = include_str!("client_auth.lua");

/// Name of the routing ext_proc filter in ext_proc mode.
pub const EXT_PROC_FILTER: &str = "envoy.filters.http.ext_proc";

/// Name of the Lua filter that checks client tokens in ext_proc mode, before the ext_proc filter.
pub const CLIENT_AUTH_FILTER: &str = "llmsoup.client_auth";

/// Client credential headers every provider route removes when `auth.tokens` is set: the
/// client's llmsoup token must never reach a provider, whether the sidecar routed the request
/// or fail-open did. Route-level removal happens when the router builds the upstream request,
/// before the cluster's upstream filters run, so the credential injector still adds the
/// provider's key afterwards.
const CLIENT_CREDENTIAL_HEADERS: [&str; 2] = ["authorization", "x-api-key"];

/// Rendering options that are not part of the llmsoup config.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Overrides `gateway.mode`.
    pub mode: Option<AttachMode>,
    /// Overrides `gateway.wasm_path`.
    pub wasm_path: Option<String>,
}

fn cluster_name(provider: &str) -> String {
    format!("provider_{provider}")
}

fn socket_address(addr: &str, key: &str) -> anyhow::Result<Value> {
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("{key}: `{addr}` is not host:port"))?;
    let port: u16 = port.parse().with_context(|| format!("{key}: bad port in `{addr}`"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(json!({"socket_address": {"address": host, "port_value": port}}))
}

/// The sidecar cluster's endpoint address: an IP and port, or a Unix domain socket (`pipe`).
/// Everything that calls the sidecar names the cluster, never the address — the ext_proc
/// filters' gRPC service, the wasm filter's `dispatch_grpc_call`, the rate limit service and
/// the cluster's own health check — so one address switches them all.
fn sidecar_endpoint(address: &GrpcAddress, key: &str) -> anyhow::Result<Value> {
    Ok(match address {
        GrpcAddress::Tcp(a) => {
            let a: SocketAddr = a
                .parse()
                .with_context(|| format!("{key} `{a}` must be ip:port or unix:/absolute/path"))?;
            json!({"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}})
        }
        GrpcAddress::Unix(path) => json!({"pipe": {"path": path}}),
    })
}

fn duration(ms: u64) -> String {
    format!("{}.{:03}s", ms / 1000, ms % 1000)
}

/// A Lua string literal.
fn lua_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\{b:03}");
            }
        }
    }
    out.push('"');
    out
}

/// Client headers removed before anything else runs: ours, and the compat routing header.
fn strip_mutations(config: &Config) -> Value {
    let mut m = vec![json!({"remove_on_match": {"key_matcher": {"safe_regex": {"regex": "x-llmsoup-.*"}}}})];
    if let Some(h) = &config.compat.selected_model_header {
        m.push(json!({"remove_on_match": {"key_matcher": {"exact": h.to_ascii_lowercase()}}}));
    }
    Value::Array(m)
}

fn fail_open_script(config: &Config) -> String {
    let mut models = String::from("{");
    for m in config.models.iter().filter(|m| m.enabled) {
        let _ = write!(
            models,
            "[{}] = {}, ",
            lua_string(&m.name),
            lua_string(m.provider_model_id())
        );
    }
    models.push('}');
    // The 400s it answers are the sidecar's bodies byte for byte: rendered from the contract.
    let mut refusals = String::from("{");
    for e in FailOpenError::ALL {
        let _ = write!(
            refusals,
            "{} = {}, ",
            e.code(),
            lua_string(&String::from_utf8_lossy(&e.body()))
        );
    }
    refusals.push('}');
    FAIL_OPEN_LUA
        .replace("__REFUSALS__", &refusals)
        .replace("__MODELS__", &models)
        .replace("__DEFAULT__", &lua_string(&config.default_model().name))
        .replace("__ROUTE_HEADER__", &lua_string(&route_header(config)))
}

/// Request header the client-auth Lua step sets to its verdict (`missing`, `wrong`) on a refusal;
/// the `client_auth_*` routes match on it.
const AUTH_VERDICT_HEADER: &str = "x-llmsoup-auth";

/// Lua that lets every request through: the client-auth step while `auth.tokens` is empty (only
/// rendered for [`xds`], where the step stays in the chain so tokens can be added by a reload).
const NO_CLIENT_AUTH_LUA: &str =
    "-- llmsoup client auth: `auth.tokens` is empty, every request passes.\nfunction envoy_on_request(handle)\nend\n";

/// The client-auth Lua step: only the token hashes.
fn client_auth_script(config: &Config) -> String {
    if config.auth.tokens.is_empty() {
        return NO_CLIENT_AUTH_LUA.to_string();
    }
    let hashes: Vec<String> = config
        .auth
        .tokens
        .iter()
        .map(|t| lua_string(&t.sha256.to_ascii_lowercase()))
        .collect();
    CLIENT_AUTH_LUA
        .replace("__HASHES__", &format!("{{{}}}", hashes.join(", ")))
        .replace("__AUTH_HEADER__", &lua_string(AUTH_VERDICT_HEADER))
}

/// The routes that answer the client-auth step's refusals: the sidecar's own 401 (the same
/// Rust text, so a refused client gets the same bytes with the sidecar up or down), with every
/// filter that could call the sidecar or rewrite the request switched off for them.
fn client_auth_routes(config: &Config) -> Vec<Value> {
    [(AuthError::Missing, "missing"), (AuthError::Wrong, "wrong")]
        .into_iter()
        .map(|(e, verdict)| {
            let reply = Reply::from(ApiError::from(e));
            let mut off = serde_json::Map::new();
            off.insert(
                EXT_PROC_FILTER.into(),
                json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute", "disabled": true}),
            );
            if config.gateway.response_accounting && config.gateway.async_response_accounting {
                off.insert(
                    ACCOUNTING_FILTER.into(),
                    json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute", "disabled": true}),
                );
            }
            if config.gateway.failure_mode == FailureMode::Open {
                off.insert(
                    "envoy.filters.http.lua".into(),
                    json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute", "disabled": true}),
                );
            }
            json!({
                "name": format!("client_auth_{verdict}"),
                "match": {"prefix": "/", "headers": [{"name": AUTH_VERDICT_HEADER, "string_match": {"exact": verdict}}]},
                "direct_response": {"status": 401, "body": {"inline_string": String::from_utf8_lossy(&reply.body)}},
                "response_headers_to_add": [{
                    "header": {"key": "content-type", "value": "application/json"},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }],
                "typed_per_filter_config": off,
            })
        })
        .collect()
}

/// gRPC `initial_metadata` carrying `server.grpc_token`, for every `grpc_service` that reaches
/// the sidecar.
fn grpc_metadata(config: &Config) -> Option<Value> {
    let token = config.server.grpc_token.as_deref()?;
    Some(json!([{
        "key": auth::GRPC_TOKEN_METADATA,
        "value": auth::grpc_metadata_value(token),
    }]))
}

/// The wasm filter's configuration, as the filter will parse it.
fn wasm_plugin_config(config: &Config) -> anyhow::Result<Value> {
    let g = &config.gateway;
    let typed = plugin_config::Config {
        sidecar_cluster: SIDECAR_CLUSTER.to_string(),
        timeout_ms: g.sidecar_timeout_ms,
        failure_mode: match g.failure_mode {
            FailureMode::Open => plugin_config::FailureMode::Open,
            FailureMode::Closed => plugin_config::FailureMode::Closed,
        },
        max_body_bytes: usize::try_from(g.max_body_bytes).context("gateway.max_body_bytes is too large")?,
        token_sha256: config
            .auth
            .tokens
            .iter()
            .map(|t| t.sha256.to_ascii_lowercase())
            .collect(),
        token_names: config.auth.tokens.iter().map(|t| t.name.clone()).collect(),
        models: config
            .models
            .iter()
            .filter(|m| m.enabled)
            .map(|m| (m.name.clone(), m.provider_model_id().to_string()))
            .collect(),
        default_model: config.default_model().name.clone(),
        route_header: config
            .compat
            .selected_model_header
            .as_ref()
            .map(|h| h.to_ascii_lowercase()),
        response_accounting: g.response_accounting,
        grpc_token: config.server.grpc_token.clone(),
        local_plan: local_plan::local_plan(config)
            .ok()
            .map(|p| plugin_config::encode_plan(&p)),
    };
    serde_json::to_value(&typed).context("serialising the wasm plugin config")
}

fn error_type(status: u16) -> &'static str {
    if status >= 500 {
        "server_error"
    } else {
        "invalid_request_error"
    }
}

/// An error body as JSON (`json_format` of a local-reply mapper).
fn error_value(e: &ApiError) -> Value {
    serde_json::from_slice(&e.to_json()).expect("error bodies are JSON")
}

/// An error the route table answers itself, with the type every llmsoup error of that status has.
fn api_error(status: u16, message: &str, code: &'static str) -> ApiError {
    ApiError {
        status,
        message: message.into(),
        kind: error_type(status),
        param: None,
        code: Some(code),
    }
}

/// A route's `direct_response`: the error body clients get everywhere else (`ApiError`). Its
/// route adds `content-type: application/json` (see [`json_content_type`]).
fn json_error(e: &ApiError) -> Value {
    json!({
        "status": e.status,
        "body": {"inline_string": String::from_utf8_lossy(&e.to_json())},
    })
}

/// `^(/v1/chat/completions|...)$`: the endpoints llmsoup routes.
fn routed_paths_regex() -> String {
    let alternatives: Vec<String> = ROUTED_PATHS.iter().map(|p| regex::escape(p)).collect();
    format!("^({})$", alternatives.join("|"))
}

/// Direct responses are JSON: say so, which also tells the local reply mappers to leave them be.
fn json_content_type(routes: &mut [Value]) {
    for r in routes.iter_mut().filter(|r| r.get("direct_response").is_some()) {
        let mut add = r["response_headers_to_add"].as_array().cloned().unwrap_or_default();
        add.push(json!({"header": {"key": "content-type", "value": "application/json"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}));
        r["response_headers_to_add"] = Value::Array(add);
    }
}

/// Local replies that Envoy itself generates (413 over `max_body_bytes`, 431 for huge headers,
/// 503 when the ext_proc sidecar fails closed or times out, upstream resets, timeouts, codec
/// errors) get an OpenAI-style JSON body with their status. Replies that already carry a JSON body (the
/// sidecar's, the wasm filter's, the fail-open step's, our direct responses) are left untouched:
/// every mapper only matches a reply whose content-type is not JSON.
fn local_reply_config(config: &Config) -> Value {
    const NOT_JSON: &str =
        "!('content-type' in response.headers && response.headers['content-type'].startsWith('application/json'))";
    // CEL (Envoy's access log filter extension): evaluated on the reply's status and headers.
    let cel = |condition: &str| {
        json!({"extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                "expression": format!("{NOT_JSON} && ({condition})"),
            }
        }})
    };
    let mapper = |condition: &str, e: ApiError| {
        json!({
            "filter": cel(condition),
            "body_format_override": {"json_format": error_value(&e)},
        })
    };
    // The sidecar failed the request (fail-closed only: fail-open continues without it): a gRPC
    // error answers `status_on_error` (503), but a sidecar that does not answer within
    // `message_timeout` (hung, SIGSTOPped) makes ext_proc answer 504 with the details
    // `ext_proc_error_per-message_timeout_exceeded`. Both are "the router is unavailable", the same
    // 503 the wasm filter and the health-checked path answer, so the status is overridden here.
    // Genuine upstream timeouts have other details (`upstream_response_timeout`) and keep their 504.
    let mut sidecar_failed = mapper(
        "response.code_details.startsWith('ext_proc_error')",
        ApiError::router_unavailable(),
    );
    sidecar_failed["status_code"] = json!(ApiError::router_unavailable().status);
    let mut mappers = budget::local_reply_mappers(config);
    mappers.extend([
        mapper("response.code == 413", ApiError::too_large()),
        mapper(
            "response.code == 431",
            api_error(431, "Request headers are too large.", "request_header_fields_too_large"),
        ),
        sidecar_failed,
        mapper(
            "response.code == 504",
            api_error(504, "The model provider did not answer in time.", "upstream_timeout"),
        ),
        // Outlier detection took every host of the route's cluster out (providers[].outlier_detection).
        mapper(
            "response.code == 503 && response.code_details == 'no_healthy_upstream'",
            api_error(
                503,
                "The model provider failed repeatedly and is out of rotation for a while; try again shortly.",
                "no_healthy_upstream",
            ),
        ),
        // A circuit breaker is open (providers[].circuit_breakers).
        mapper(
            "response.code == 503 && response.code_details.contains('overflow')",
            api_error(
                503,
                "Too many requests are in flight to the model provider; try again shortly.",
                "upstream_overflow",
            ),
        ),
        mapper(
            "response.code == 502 || response.code == 503",
            api_error(
                503,
                "The model provider is unavailable or reset the connection.",
                "upstream_unavailable",
            ),
        ),
        mapper(
            "response.code >= 500",
            api_error(
                500,
                "The gateway failed to handle the request (%RESPONSE_CODE_DETAILS%).",
                "gateway_error",
            ),
        ),
        mapper(
            "response.code >= 400",
            api_error(
                400,
                "The gateway rejected the request (%RESPONSE_CODE_DETAILS%).",
                "invalid_request",
            ),
        ),
    ]);
    json!({"mappers": mappers})
}

/// The `credential_injector` filter that adds provider `p`'s key (an Envoy secret) to a request:
/// one home for its shape, used on provider clusters and, behind a matcher, per fallback attempt.
pub(crate) fn credential_injector(p: &ProviderConfig, c: &llmsoup_config::CredentialsConfig) -> Value {
    let (header, prefix) = p.credential_header(c);
    json!({
        "name": "envoy.filters.http.credential_injector",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector",
            "overwrite": true,
            "credential": {
                "name": "envoy.http.injected_credentials.generic",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.http.injected_credentials.generic.v3.Generic",
                    "credential": {"name": secret_name(&p.name)},
                    "header": header,
                    "header_value_prefix": prefix,
                }
            }
        }
    })
}

fn provider_cluster(p: &ProviderConfig) -> anyhow::Result<Value> {
    let ep = p
        .endpoint()
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("provider `{}`", p.name))?;
    let is_ip = ep.host.parse::<IpAddr>().is_ok();
    let name = cluster_name(&p.name);
    let mut upstream_filters = Vec::new();
    if let Some(c) = &p.credentials {
        upstream_filters.push(credential_injector(p, c));
        upstream_filters.push(json!({
            "name": "envoy.filters.http.upstream_codec",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}
        }));
    }
    let mut protocol = if ep.tls {
        json!({"auto_config": {"http_protocol_options": {}, "http2_protocol_options": {}}})
    } else {
        json!({"explicit_http_config": {"http_protocol_options": {}}})
    };
    protocol["@type"] = json!("type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions");
    if !upstream_filters.is_empty() {
        protocol["http_filters"] = Value::Array(upstream_filters);
    }
    let mut cluster = json!({
        "name": name,
        "type": if is_ip { "STATIC" } else { "LOGICAL_DNS" },
        "connect_timeout": duration(p.connect_timeout_ms),
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": protocol,
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": ep.host, "port_value": ep.port}},
                "hostname": ep.host,
            }}]}],
        },
    });
    if !is_ip {
        cluster["dns_lookup_family"] = json!("V4_PREFERRED");
    }
    health::apply(p, &mut cluster);
    if ep.tls {
        let host = &ep.host;
        // The certificate must name the host of `base_url`: a DNS name (also sent as SNI), or an
        // IP address (an IP SAN; SNI cannot carry an address, RFC 6066).
        let san_type = if is_ip { "IP_ADDRESS" } else { "DNS" };
        cluster["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": {
                    "alpn_protocols": ["h2", "http/1.1"],
                    "validation_context": {
                        "trusted_ca": {"filename": "__CA_BUNDLE__"},
                        "match_typed_subject_alt_names": [{"san_type": san_type, "matcher": {"exact": host}}],
                    }
                }
            }
        });
        if !is_ip {
            cluster["transport_socket"]["typed_config"]["sni"] = json!(host);
        }
    }
    Ok(cluster)
}

fn secret_name(provider: &str) -> String {
    format!("provider_{provider}_credential")
}

/// Renders the Envoy bootstrap as YAML, every resource inline (`static_resources`): a change to
/// models, providers or tokens needs a new bootstrap and an Envoy restart. See [`xds`] for the
/// rendering whose resources follow a reload.
pub fn render(config: &Config, opts: &RenderOptions) -> anyhow::Result<String> {
    let bootstrap = bootstrap(config, opts, false)?;
    to_yaml(&bootstrap, &config.gateway.ca_bundle)
}

/// YAML with the rendering's header, the CA bundle filled in.
fn to_yaml(value: &Value, ca_bundle: &str) -> anyhow::Result<String> {
    let yaml = serde_yaml::to_string(value).context("rendering YAML")?;
    let header = "# Envoy bootstrap rendered by `llmsoup envoy-config`; edit the llmsoup config instead.\n";
    Ok(format!("{header}{}", yaml.replace("__CA_BUNDLE__", ca_bundle)))
}

/// The whole bootstrap with every resource inline. `dynamic`: rendered to be split into xDS
/// resources ([`xds`]), so the filters whose configuration a reload may change are always
/// there (the client-auth step passes everything while `auth.tokens` is empty), and a token added
/// later needs no new filter chain.
fn bootstrap(config: &Config, opts: &RenderOptions, dynamic: bool) -> anyhow::Result<Value> {
    let g = &config.gateway;
    let mode = opts.mode.unwrap_or(g.mode);
    let sidecar_key = match g.sidecar_address {
        Some(_) => "gateway.sidecar_address",
        None => "server.grpc_listen",
    };
    let sidecar = sidecar_endpoint(&g.sidecar(&config.server)?, sidecar_key)?;

    let mut routes = Vec::new();
    for m in config.models.iter().filter(|m| m.enabled) {
        let p = config
            .provider(&m.provider)
            .with_context(|| format!("model `{}`: unknown provider", m.name))?;
        let mut route = model_route(&format!("model_{}", m.name), p, &m.name, &route_header(config))?;
        if budget::route_may_be_limited(config, &m.name) {
            route["route"]["rate_limits"] = budget::route_rate_limits(&m.name);
        }
        routes.push(route);
    }
    // Fallback chains first: a chained request carries the model header too.
    let (chain_routes, chain_clusters) = fallback::render(config, &route_header(config))?;
    routes.splice(0..0, chain_routes);
    // A request without the routing header matches no provider route: the sidecar (or a
    // fail-open step) routed every request it let through, and everything else is answered here.
    // POSTs reach these only when nothing routed them (the sidecar is down and no fail-open step
    // took them); the sidecar answers `GET /v1/models`, so it is unavailable when one lands here.
    routes.push(json!({
        "name": "method_not_allowed",
        "match": {
            "safe_regex": {"regex": routed_paths_regex()},
            "headers": [{"name": ":method", "string_match": {"exact": "POST"}, "invert_match": true}],
        },
        "direct_response": json_error(&ApiError::method_not_allowed("POST")),
        "response_headers_to_add": [{"header": {"key": "allow", "value": "POST"}}],
    }));
    routes.push(json!({
        "name": "router_unavailable",
        "match": {"prefix": "/v1/", "headers": [{"name": ":method", "string_match": {"exact": "POST"}}]},
        "direct_response": json_error(&ApiError::router_unavailable()),
    }));
    routes.push(json!({
        "name": "models_unavailable",
        "match": {"path": MODELS_PATH, "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]},
        "direct_response": json_error(&ApiError::router_unavailable()),
    }));
    routes.push(json!({
        "name": "not_found",
        "match": {"prefix": "/"},
        "direct_response": json_error(&ApiError::not_found()),
    }));

    if !config.auth.tokens.is_empty() {
        for route in routes.iter_mut().filter(|r| r.get("route").is_some()) {
            if let Some(Value::Array(remove)) = route.get_mut("request_headers_to_remove") {
                remove.extend(CLIENT_CREDENTIAL_HEADERS.map(Value::from));
            }
        }
    }
    json_content_type(&mut routes);
    if !config.auth.tokens.is_empty() && mode == AttachMode::ExtProc {
        // First, so a refused request matches nothing else; they carry their own content-type.
        routes.splice(0..0, client_auth_routes(config));
    }

    let mut filters = vec![json!({
        // Clients may not pick routes or forge llmsoup's headers, even when the sidecar is down.
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": strip_mutations(config)}
        }
    })];
    match mode {
        AttachMode::ExtProc => {
            let async_accounting = g.response_accounting && g.async_response_accounting;
            let inline_accounting = g.response_accounting && !g.async_response_accounting;
            let mut ext_proc = json!({
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
                "grpc_service": {
                    "envoy_grpc": {"cluster_name": SIDECAR_CLUSTER},
                    "timeout": duration(g.sidecar_timeout_ms),
                },
                "processing_mode": {
                    "request_header_mode": "SEND",
                    "request_body_mode": "BUFFERED",
                    // Sent only by requests that have trailers: one with trailers and no body
                    // gets no body message, and must still be decided (never passed unrouted).
                    "request_trailer_mode": "SEND",
                    // Response headers carry the x-llmsoup-* summary. The body only for inline
                    // accounting: BUFFERED for JSON, switched to STREAMED for SSE by the sidecar
                    // (each chunk then waits for its answer).
                    "response_header_mode": "SEND",
                    "response_body_mode": if inline_accounting { "BUFFERED" } else { "NONE" },
                    "response_trailer_mode": "SKIP",
                },
                "message_timeout": duration(g.sidecar_timeout_ms),
                "failure_mode_allow": g.failure_mode == FailureMode::Open,
                "allow_mode_override": true,
            });
            if g.failure_mode == FailureMode::Closed {
                ext_proc["status_on_error"] = json!({"code": 503});
            }
            if let Some(md) = grpc_metadata(config) {
                ext_proc["grpc_service"]["initial_metadata"] = md;
            }
            if !config.auth.tokens.is_empty() || dynamic {
                // Before ext_proc: auth must not depend on the sidecar answering.
                filters.push(json!({
                    "name": CLIENT_AUTH_FILTER,
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                        "default_source_code": {"inline_string": client_auth_script(config)},
                    }
                }));
            }
            if async_accounting {
                ext_proc["metadata_options"] = json!({"receiving_namespaces": {"untyped": [METADATA_NAMESPACE]}});
            }
            filters.push(json!({"name": EXT_PROC_FILTER, "typed_config": ext_proc, "disabled": true}));
            if async_accounting {
                let mut accounting = accounting_filter(g.sidecar_timeout_ms);
                if let Some(md) = grpc_metadata(config) {
                    accounting["typed_config"]["grpc_service"]["initial_metadata"] = md;
                }
                accounting["disabled"] = json!(true);
                filters.push(accounting);
            }
            if g.failure_mode == FailureMode::Open {
                filters.push(json!({
                    "name": "envoy.filters.http.lua",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                        "default_source_code": {"inline_string": fail_open_script(config)},
                    }
                }));
            }
        }
        AttachMode::Wasm => {
            let path = opts.wasm_path.clone().or_else(|| g.wasm_path.clone()).context(
                "wasm mode needs the filter's path: `--wasm PATH` or `gateway.wasm_path` (build it with `make wasm`)",
            )?;
            filters.push(json!({
                "name": "envoy.filters.http.wasm",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": {
                        "name": "llmsoup",
                        "root_id": "llmsoup",
                        // Without it Pause on headers becomes StopAll and the body never arrives.
                        "allow_on_headers_stop_iteration": true,
                        // A crashed VM is recreated rather than letting requests through unrouted.
                        "failure_policy": "FAIL_RELOAD",
                        "configuration": {
                            "@type": "type.googleapis.com/google.protobuf.StringValue",
                            "value": wasm_plugin_config(config)?.to_string(),
                        },
                        "vm_config": {
                            "vm_id": "llmsoup",
                            "runtime": "envoy.wasm.runtime.v8",
                            "code": {"local": {"filename": path}},
                        },
                    }
                }
            }));
        }
    }
    // After the attach filter, which set the tenant and picked the model route.
    filters.extend(budget::filter(config));
    filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    }));

    let mut clusters = vec![json!({
        "name": SIDECAR_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": SIDECAR_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": sidecar}}]}],
        },
    })];
    sidecar_health_check(&mut clusters[0], &g.sidecar_health_check);
    let mut secrets = Vec::new();
    for p in &config.providers {
        clusters.push(provider_cluster(p)?);
        if let Some(c) = &p.credentials {
            let source = match (&c.env, &c.file) {
                (Some(env), _) => json!({"environment_variable": env}),
                (None, Some(file)) => json!({"filename": file}),
                (None, None) => bail!("providers `{}`: credentials need `env` or `file`", p.name),
            };
            secrets.push(json!({"name": secret_name(&p.name), "generic_secret": {"secret": source}}));
        }
    }

    clusters.extend(chain_clusters);
    let mut virtual_host = json!({"name": "llm", "domains": ["*"], "routes": routes});
    if mode == AttachMode::ExtProc {
        virtual_host["typed_per_filter_config"] = sidecar_filters_enabled(config);
    }

    let access_log = json!({
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {"text_format_source": {"inline_string":
                "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%\" %RESPONSE_CODE% %RESPONSE_FLAGS% route=%ROUTE_NAME% upstream=%UPSTREAM_CLUSTER% %DURATION%ms\n"
            }}
        }
    });
    let bootstrap = json!({
        "admin": {"address": socket_address(&g.admin, "gateway.admin")?},
        "static_resources": {
            "listeners": [{
                "name": "llmsoup",
                "address": socket_address(&g.listen, "gateway.listen")?,
                "per_connection_buffer_limit_bytes": g.max_body_bytes,
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "llmsoup",
                        "access_log": [access_log],
                        // Paths are normalised before any filter or route sees them: dot segments
                        // resolved (`/v1/../admin` is `/admin`, `%2e%2e` decoded first), slashes
                        // merged, encoded slashes refused, so a provider route's prefix rewrite
                        // cannot be escaped.
                        "normalize_path": true,
                        "merge_slashes": true,
                        "path_with_escaped_slashes_action": "REJECT_REQUEST",
                        "local_reply_config": local_reply_config(config),
                        "route_config": {
                            "name": "llmsoup",
                            "virtual_hosts": [virtual_host],
                        },
                        "http_filters": filters,
                    }
                }]}],
            }],
            "clusters": clusters,
            "secrets": secrets,
        }
    });
    Ok(bootstrap)
}

/// Turns the ext_proc filters on for every request that has a virtual host, i.e. every request
/// whose headers were decoded. They are `disabled` in the filter chain by default, so a stream
/// without request headers never gets them: a local reply for a codec error (HTTP/1 headers over
/// the limit) runs through the encoder filters of a chain built without a route, and an ext_proc
/// filter there would open a sidecar stream for the reply's headers and hold it while the codec
/// closes the connection — the client would get no reply at all instead of the JSON 431
/// (envoyproxy/envoy#29440). Route-level `ExtProcPerRoute` settings (the client-auth routes turn
/// the filter off) still apply on top.
fn sidecar_filters_enabled(config: &Config) -> Value {
    let enabled = json!({"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "config": {}});
    let mut filters = serde_json::Map::new();
    filters.insert(EXT_PROC_FILTER.into(), enabled.clone());
    if config.gateway.response_accounting && config.gateway.async_response_accounting {
        filters.insert(ACCOUNTING_FILTER.into(), enabled);
    }
    Value::Object(filters)
}

/// The sidecar circuit breaker, done by Envoy: an active gRPC health check
/// (`grpc.health.v1.Health`, served unauthenticated by the sidecar) and no panic routing, so a
/// hung or stopping sidecar has no healthy host and both the ext_proc stream and the wasm
/// filter's `dispatch_grpc_call` fail at once (then the fail-open/closed path runs) until a check
/// passes again. A static cluster's first check round runs before Envoy takes traffic, so a
/// sidecar that is up at start is healthy from the first request.
fn sidecar_health_check(cluster: &mut Value, hc: &llmsoup_config::SidecarHealthCheck) {
    if !hc.enabled {
        return;
    }
    let interval = duration(hc.interval_ms);
    cluster["health_checks"] = json!([{
        "timeout": duration(hc.timeout_ms),
        "interval": interval,
        // Envoy checks a cluster that never carried traffic only every 60 s by default (and a
        // sidecar that was down at start never did): keep one cadence in every state so a
        // recovered sidecar is taken back within one interval.
        "no_traffic_interval": interval,
        "no_traffic_healthy_interval": interval,
        "unhealthy_interval": interval,
        "unhealthy_threshold": hc.unhealthy_threshold,
        "healthy_threshold": hc.healthy_threshold,
        "grpc_health_check": {},
    }]);
    // Envoy's default panic threshold (50 %) would keep sending to an unhealthy sole host.
    cluster["common_lb_config"] = json!({"healthy_panic_threshold": {"value": 0}});
}

/// The request header model routes match on: `compat.selected_model_header` when set (for Envoy
/// routes written for vLLM Semantic Router), else `x-llmsoup-model`. The sidecar and both
/// fail-open paths set both.
fn route_header(config: &Config) -> String {
    config
        .compat
        .selected_model_header
        .as_deref()
        .unwrap_or(MODEL_HEADER)
        .to_ascii_lowercase()
}

/// A second ext_proc filter in observability mode ("send and go"): Envoy copies response headers
/// and body chunks to the sidecar and never waits for an answer, so accounting adds no round trip
/// to the data path. The routed facts come with them as forwarded dynamic metadata.
fn accounting_filter(timeout_ms: u64) -> Value {
    json!({
        "name": ACCOUNTING_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {
                "envoy_grpc": {"cluster_name": SIDECAR_CLUSTER},
                "timeout": duration(timeout_ms),
            },
            "observability_mode": true,
            "processing_mode": {
                "request_header_mode": "SKIP",
                "request_body_mode": "NONE",
                "request_trailer_mode": "SKIP",
                "response_header_mode": "SEND",
                // The only body mode observability mode supports.
                "response_body_mode": "STREAMED",
                "response_trailer_mode": "SKIP",
            },
            // Accounting never fails a request.
            "failure_mode_allow": true,
            "metadata_options": {"forwarding_namespaces": {"untyped": [METADATA_NAMESPACE]}},
        }
    })
}

fn model_route(name: &str, p: &ProviderConfig, model: &str, header: &str) -> anyhow::Result<Value> {
    let ep = p.endpoint().map_err(anyhow::Error::msg)?;
    // Only POSTs are routed; the sidecar never sets the header on anything else.
    let matcher = json!({"prefix": "/v1/", "headers": [
        {"name": header, "string_match": {"exact": model}},
        {"name": ":method", "string_match": {"exact": "POST"}},
    ]});
    let mut route = json!({
        "cluster": cluster_name(&p.name),
        // LLM generations run long; idle streams are bounded by the connection manager instead.
        "timeout": "0s",
        "auto_host_rewrite": true,
    });
    if ep.path_prefix != "/v1" {
        route["prefix_rewrite"] = json!(format!("{}/", ep.path_prefix));
    }
    let mut out = json!({
        "name": name,
        "match": matcher,
        "route": route,
        // The tenant is for the rate limit filter only; no provider sees it.
        "request_headers_to_remove": if header == MODEL_HEADER { json!([MODEL_HEADER, TENANT_HEADER]) } else { json!([MODEL_HEADER, header, TENANT_HEADER]) },
    });
    if p.api == ProviderApi::Anthropic {
        // Anthropic refuses requests without a version; a client that chose one keeps it.
        out["request_headers_to_add"] = json!([{
            "header": {"key": "anthropic-version", "value": ANTHROPIC_VERSION},
            "append_action": "ADD_IF_ABSENT",
        }]);
    }
    Ok(out)
}

mod budget;
mod fallback;
mod health;
pub mod local_plan;
pub mod xds;

#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod budget_tests;
#[cfg(test)]
mod reference_bootstraps;
#[cfg(test)]
mod tests;
