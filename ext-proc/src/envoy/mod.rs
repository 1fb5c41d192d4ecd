//! `llmsoup envoy-config`: renders a complete Envoy bootstrap from an llmsoup config.
//!
//! Envoy owns the data path: one route per model (matched on `x-llmsoup-model`) to one cluster
//! per provider, TLS with SNI for HTTPS providers, credentials injected from a secret Envoy reads
//! from the environment or a file (never inlined), and a fail-open route to the default model.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::config::{AttachMode, Config, FailureMode, ProviderConfig};
use crate::engine::MODEL_HEADER;

/// Name of the cluster that reaches the sidecar.
pub const SIDECAR_CLUSTER: &str = "llmsoup_sidecar";

/// Name of the ext_proc filter (observability mode) that reads responses for accounting when
/// `gateway.async_response_accounting` is set.
pub const ACCOUNTING_FILTER: &str = "llmsoup.response_accounting";

/// Dynamic metadata namespace carrying a routed request's facts (model, decision, request id,
/// start) from the routing ext_proc stream to the accounting stream.
pub const METADATA_NAMESPACE: &str = "llmsoup";

const FAIL_OPEN_LUA: &str = include_str!("fail_open.lua");

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
    FAIL_OPEN_LUA
        .replace("__MODELS__", &models)
        .replace("__DEFAULT__", &lua_string(&config.default_model().name))
        .replace("__ROUTE_HEADER__", &lua_string(&route_header(config)))
}

/// The wasm filter's JSON configuration (see filter-wasm/src/config.rs).
fn wasm_plugin_config(config: &Config) -> anyhow::Result<Value> {
    let g = &config.gateway;
    let models: serde_json::Map<String, Value> = config
        .models
        .iter()
        .filter(|m| m.enabled)
        .map(|m| (m.name.clone(), json!(m.provider_model_id())))
        .collect();
    Ok(json!({
        "sidecar_cluster": SIDECAR_CLUSTER,
        "timeout_ms": g.sidecar_timeout_ms,
        "failure_mode": match g.failure_mode { FailureMode::Open => "open", FailureMode::Closed => "closed" },
        "max_body_bytes": g.max_body_bytes,
        "token_sha256": config.auth.tokens.iter().map(|t| t.sha256.to_ascii_lowercase()).collect::<Vec<_>>(),
        "token_names": config.auth.tokens.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
        "models": models,
        "default_model": config.default_model().name,
        "route_header": config.compat.selected_model_header.as_ref().map(|h| h.to_ascii_lowercase()),
        "response_accounting": g.response_accounting,
    }))
}

fn json_error(status: u16, message: &str, code: &str) -> Value {
    let body = json!({"error": {"message": message, "type": if status >= 500 {"server_error"} else {"invalid_request_error"}, "param": null, "code": code}});
    json!({
        "status": status,
        "body": {"inline_string": body.to_string()},
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
        upstream_filters.push(json!({
            "name": "envoy.filters.http.credential_injector",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector",
                "overwrite": true,
                "credential": {
                    "name": "envoy.http.injected_credentials.generic",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.http.injected_credentials.generic.v3.Generic",
                        "credential": {"name": secret_name(&p.name)},
                        "header": c.header,
                        "header_value_prefix": c.prefix,
                    }
                }
            }
        }));
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
    if ep.tls {
        let host = &ep.host;
        cluster["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": host,
                "common_tls_context": {
                    "alpn_protocols": ["h2", "http/1.1"],
                    "validation_context": {
                        "trusted_ca": {"filename": "__CA_BUNDLE__"},
                        "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": host}}],
                    }
                }
            }
        });
    }
    Ok(cluster)
}

fn secret_name(provider: &str) -> String {
    format!("provider_{provider}_credential")
}

/// Renders the Envoy bootstrap as YAML.
pub fn render(config: &Config, opts: &RenderOptions) -> anyhow::Result<String> {
    let g = &config.gateway;
    let mode = opts.mode.unwrap_or(g.mode);
    let sidecar = g
        .sidecar_address
        .clone()
        .unwrap_or_else(|| config.server.grpc_listen.clone());
    let sidecar_addr: SocketAddr = sidecar
        .parse()
        .with_context(|| format!("gateway.sidecar_address `{sidecar}` must be ip:port"))?;

    let mut routes = Vec::new();
    for m in config.models.iter().filter(|m| m.enabled) {
        let p = config
            .provider(&m.provider)
            .with_context(|| format!("model `{}`: unknown provider", m.name))?;
        routes.push(model_route(
            &format!("model_{}", m.name),
            p,
            Some(&m.name),
            &route_header(config),
        )?);
    }
    let default = config.default_model();
    let default_provider = config
        .provider(&default.provider)
        .with_context(|| format!("default model `{}`: unknown provider", default.name))?;
    match g.failure_mode {
        // Only reached when the sidecar did not answer: the Lua step rewrote the body.
        FailureMode::Open => routes.push(model_route(
            "fail_open_default",
            default_provider,
            None,
            &route_header(config),
        )?),
        FailureMode::Closed => routes.push(json!({
            "name": "router_unavailable",
            "match": {"prefix": "/v1/"},
            "direct_response": json_error(503, "The llmsoup router is unavailable.", "router_unavailable"),
        })),
    }
    routes.push(json!({
        "name": "not_found",
        "match": {"prefix": "/"},
        "direct_response": json_error(404, "llmsoup serves OpenAI-compatible paths under /v1/.", "not_found"),
    }));

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
                    "request_trailer_mode": "SKIP",
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
            if async_accounting {
                ext_proc["metadata_options"] = json!({"receiving_namespaces": {"untyped": [METADATA_NAMESPACE]}});
            }
            filters.push(json!({"name": "envoy.filters.http.ext_proc", "typed_config": ext_proc}));
            if async_accounting {
                filters.push(accounting_filter(g.sidecar_timeout_ms));
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
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": sidecar_addr.ip().to_string(), "port_value": sidecar_addr.port()
            }}}}]}],
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
                        "route_config": {
                            "name": "llmsoup",
                            "virtual_hosts": [{"name": "llm", "domains": ["*"], "routes": routes}],
                        },
                        "http_filters": filters,
                    }
                }]}],
            }],
            "clusters": clusters,
            "secrets": secrets,
        }
    });
    let yaml = serde_yaml::to_string(&bootstrap).context("rendering YAML")?;
    let header = "# Envoy bootstrap rendered by `llmsoup envoy-config`; edit the llmsoup config instead.\n";
    Ok(format!("{header}{}", yaml.replace("__CA_BUNDLE__", &g.ca_bundle)))
}

/// The sidecar circuit breaker, done by Envoy: an active gRPC health check
/// (`grpc.health.v1.Health`, served unauthenticated by the sidecar) and no panic routing, so a
/// hung or stopping sidecar has no healthy host and both the ext_proc stream and the wasm
/// filter's `dispatch_grpc_call` fail at once (then the fail-open/closed path runs) until a check
/// passes again. A static cluster's first check round runs before Envoy takes traffic, so a
/// sidecar that is up at start is healthy from the first request.
fn sidecar_health_check(cluster: &mut Value, hc: &crate::config::SidecarHealthCheck) {
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

fn model_route(name: &str, p: &ProviderConfig, model: Option<&str>, header: &str) -> anyhow::Result<Value> {
    let ep = p.endpoint().map_err(anyhow::Error::msg)?;
    let mut matcher = json!({"prefix": "/v1/"});
    if let Some(m) = model {
        matcher["headers"] = json!([{"name": header, "string_match": {"exact": m}}]);
    }
    let mut route = json!({
        "cluster": cluster_name(&p.name),
        // LLM generations run long; idle streams are bounded by the connection manager instead.
        "timeout": "0s",
        "auto_host_rewrite": true,
    });
    if ep.path_prefix != "/v1" {
        route["prefix_rewrite"] = json!(format!("{}/", ep.path_prefix));
    }
    Ok(json!({
        "name": name,
        "match": matcher,
        "route": route,
        "request_headers_to_remove": if header == MODEL_HEADER { json!([MODEL_HEADER]) } else { json!([MODEL_HEADER, header]) },
    }))
}

#[cfg(test)]
mod tests;
