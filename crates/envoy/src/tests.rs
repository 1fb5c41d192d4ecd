use super::*;
use llmsoup_config::{DEFAULT_CONFIG, load_str_with_env};

fn rendered(text: &str) -> serde_yaml::Value {
    let c = load_str_with_env(text, &|_| None).unwrap();
    serde_yaml::from_str(&render(&c, &RenderOptions::default()).unwrap()).unwrap()
}

#[test]
fn demo_config_renders_routes_clusters_and_filters() {
    let y = rendered(DEFAULT_CONFIG);
    let hcm = &y["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let routes = hcm["route_config"]["virtual_hosts"][0]["routes"].as_sequence().unwrap();
    let names: Vec<&str> = routes.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            // `strong`'s chain while `strong` is in a retry-after skip window.
            "chain_long-context+fast",
            "chain_strong+fast",
            "chain_strong+long-context",
            "chain_strong+long-context+fast",
            "model_fast",
            "model_strong",
            "model_polyglot",
            "model_long-context",
            "method_not_allowed",
            "router_unavailable",
            "models_unavailable",
            "not_found"
        ]
    );
    assert_eq!(routes[0]["route"]["timeout"].as_str(), Some("0s"));
    let filters: Vec<&str> = hcm["http_filters"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        filters,
        [
            "envoy.filters.http.header_mutation",
            "envoy.filters.http.ext_proc",
            "envoy.filters.http.lua",
            "envoy.filters.http.router"
        ]
    );
    let ext = &hcm["http_filters"][1]["typed_config"];
    assert_eq!(ext["failure_mode_allow"].as_bool(), Some(true));
    assert_eq!(ext["processing_mode"]["request_body_mode"].as_str(), Some("BUFFERED"));
    // A request with trailers and no body is only seen by the sidecar at its trailers.
    assert_eq!(ext["processing_mode"]["request_trailer_mode"].as_str(), Some("SEND"));
    let lua = hcm["http_filters"][2]["typed_config"]["default_source_code"]["inline_string"]
        .as_str()
        .unwrap();
    assert!(lua.contains(r#"["fast"] = "mock-small""#) && lua.contains(r#"local DEFAULT_MODEL = "fast""#));
    assert_eq!(
        y["admin"]["address"]["socket_address"]["address"].as_str(),
        Some("127.0.0.1")
    );
}

#[test]
fn an_https_provider_at_an_ip_address_is_validated_against_an_ip_san_without_sni() {
    let y = rendered(
        "
providers:
  - {name: inhouse, base_url: 'https://10.0.0.7:8443/v1'}
models:
  - {name: m, provider: inhouse}
",
    );
    let clusters = y["static_resources"]["clusters"].as_sequence().unwrap();
    let c = clusters
        .iter()
        .find(|c| c["name"].as_str() == Some("provider_inhouse"))
        .unwrap();
    assert_eq!(c["type"].as_str(), Some("STATIC"));
    let tls = &c["transport_socket"]["typed_config"];
    assert!(tls["sni"].is_null(), "SNI cannot carry an address");
    let san = &tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0];
    assert_eq!(san["san_type"].as_str(), Some("IP_ADDRESS"));
    assert_eq!(san["matcher"]["exact"].as_str(), Some("10.0.0.7"));
}

#[test]
fn https_provider_gets_tls_sni_credentials_and_rewrite() {
    let y = rendered(
        "
providers:
  - name: openai
    base_url: https://api.openai.com/v1
    credentials: {env: OPENAI_API_KEY}
  - name: azure
    base_url: https://example.openai.azure.com/openai/deployments/x
    credentials: {file: /run/secrets/azure, header: api-key, prefix: ''}
models:
  - {name: gpt, provider: openai, model_id: gpt-4o-mini}
  - {name: az, provider: azure}
gateway:
  failure_mode: closed
",
    );
    let clusters = y["static_resources"]["clusters"].as_sequence().unwrap();
    let openai = clusters
        .iter()
        .find(|c| c["name"].as_str() == Some("provider_openai"))
        .unwrap();
    assert_eq!(openai["type"].as_str(), Some("LOGICAL_DNS"));
    let tls = &openai["transport_socket"]["typed_config"];
    assert_eq!(tls["sni"].as_str(), Some("api.openai.com"));
    let san = &tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0];
    assert_eq!(san["san_type"].as_str(), Some("DNS"));
    assert_eq!(san["matcher"]["exact"].as_str(), Some("api.openai.com"));
    let opts = &openai["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert_eq!(
        opts["http_filters"][0]["name"].as_str(),
        Some("envoy.filters.http.credential_injector")
    );
    assert_eq!(
        opts["http_filters"][1]["name"].as_str(),
        Some("envoy.filters.http.upstream_codec")
    );
    let secrets = y["static_resources"]["secrets"].as_sequence().unwrap();
    assert_eq!(
        secrets[0]["generic_secret"]["secret"]["environment_variable"].as_str(),
        Some("OPENAI_API_KEY")
    );
    assert_eq!(
        secrets[1]["generic_secret"]["secret"]["filename"].as_str(),
        Some("/run/secrets/azure")
    );
    let hcm = &y["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let routes = hcm["route_config"]["virtual_hosts"][0]["routes"].as_sequence().unwrap();
    assert!(routes[0]["route"].get("prefix_rewrite").is_none());
    assert_eq!(
        routes[1]["route"]["prefix_rewrite"].as_str(),
        Some("/openai/deployments/x/")
    );
    assert_eq!(routes[3]["name"].as_str(), Some("router_unavailable"));
    assert_eq!(routes[3]["direct_response"]["status"].as_u64(), Some(503));
    // Fail-closed: no Lua fail-open step, and ext_proc errors become 503.
    let filters: Vec<&str> = hcm["http_filters"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(!filters.contains(&"envoy.filters.http.lua"));
    assert_eq!(
        hcm["http_filters"][1]["typed_config"]["status_on_error"]["code"].as_u64(),
        Some(503)
    );
}

#[test]
fn secrets_are_never_inlined() {
    let c = load_str_with_env(
        "
providers: [{name: p, base_url: 'https://x.example/v1', credentials: {env: SECRET_KEY}}]
models: [{name: m, provider: p}]
",
        &|_| None,
    )
    .unwrap();
    // The rendered config names the variable Envoy reads; the key itself never passes through us.
    let out = render(&c, &RenderOptions::default()).unwrap();
    assert!(out.contains("environment_variable: SECRET_KEY"));
}

#[test]
fn lua_strings_are_escaped() {
    assert_eq!(lua_string(r#"a"b\c"#), r#""a\"b\\c""#);
    assert_eq!(lua_string("é"), "\"\\195\\169\"");
}

#[test]
fn compat_selected_model_header_is_routed_on_stripped_and_set_on_fail_open() {
    let text = "
providers: [{name: p, base_url: 'http://127.0.0.1:8000/v1'}]
models: [{name: m, provider: p}]
compat: {selected_model_header: X-Selected-Model}
";
    let y = rendered(text);
    let hcm = &y["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let route = &hcm["route_config"]["virtual_hosts"][0]["routes"][0];
    assert_eq!(route["match"]["headers"][0]["name"].as_str(), Some("x-selected-model"));
    let removed: Vec<&str> = route["request_headers_to_remove"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(removed, ["x-llmsoup-model", "x-selected-model", "x-llmsoup-tenant"]);
    let strip = &hcm["http_filters"][0]["typed_config"]["mutations"]["request_mutations"];
    assert_eq!(
        strip[1]["remove_on_match"]["key_matcher"]["exact"].as_str(),
        Some("x-selected-model")
    );
    let lua = hcm["http_filters"][2]["typed_config"]["default_source_code"]["inline_string"]
        .as_str()
        .unwrap();
    assert!(lua.contains(r#"local ROUTE_HEADER = "x-selected-model""#), "{lua}");

    let c = load_str_with_env(text, &|_| None).unwrap();
    let wasm = render(
        &c,
        &RenderOptions {
            mode: Some(AttachMode::Wasm),
            wasm_path: Some("/f.wasm".into()),
        },
    )
    .unwrap();
    let y: serde_yaml::Value = serde_yaml::from_str(&wasm).unwrap();
    let hcm = &y["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let plugin = hcm["http_filters"][1]["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .unwrap();
    let plugin: serde_json::Value = serde_json::from_str(plugin).unwrap();
    assert_eq!(plugin["route_header"], "x-selected-model");

    // Without the switch, routes match x-llmsoup-model and the Lua sets only that.
    let y =
        rendered("providers: [{name: p, base_url: 'http://127.0.0.1:8000/v1'}]\nmodels: [{name: m, provider: p}]\n");
    let hcm = &y["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let route = &hcm["route_config"]["virtual_hosts"][0]["routes"][0];
    assert_eq!(route["match"]["headers"][0]["name"].as_str(), Some("x-llmsoup-model"));
}

fn http_filters(text: &str) -> Vec<serde_yaml::Value> {
    let y = rendered(text);
    y["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
        .as_sequence()
        .unwrap()
        .clone()
}

fn with_gateway(line: &str) -> String {
    let text = DEFAULT_CONFIG.replacen("\ngateway:\n", &format!("\ngateway:\n  {line}\n"), 1);
    assert_ne!(text, DEFAULT_CONFIG);
    text
}

#[test]
fn response_accounting_modes_render_the_body_where_it_is_read() {
    let names = |f: &[serde_yaml::Value]| -> Vec<String> {
        f.iter().map(|f| f["name"].as_str().unwrap().to_string()).collect()
    };
    let body_mode = |f: &[serde_yaml::Value]| {
        let mode = &f[1]["typed_config"]["processing_mode"];
        assert_eq!(
            mode["response_header_mode"].as_str(),
            Some("SEND"),
            "headers carry x-llmsoup-*"
        );
        mode["response_body_mode"].as_str().unwrap().to_string()
    };

    // Default: inline, on the routing stream.
    let inline = http_filters(DEFAULT_CONFIG);
    assert_eq!(body_mode(&inline), "BUFFERED");
    assert!(!names(&inline).contains(&ACCOUNTING_FILTER.to_string()));
    assert!(inline[1]["typed_config"].get("metadata_options").is_none());

    // Async: a second filter that Envoy never waits for, fed the routing facts as metadata.
    let asynchronous = http_filters(&with_gateway("async_response_accounting: true"));
    assert_eq!(body_mode(&asynchronous), "NONE");
    assert_eq!(
        asynchronous[1]["typed_config"]["metadata_options"]["receiving_namespaces"]["untyped"][0].as_str(),
        Some(METADATA_NAMESPACE)
    );
    assert_eq!(asynchronous[2]["name"].as_str(), Some(ACCOUNTING_FILTER));
    let observer = &asynchronous[2]["typed_config"];
    assert_eq!(observer["observability_mode"].as_bool(), Some(true));
    assert_eq!(observer["failure_mode_allow"].as_bool(), Some(true));
    assert_eq!(
        observer["processing_mode"]["request_header_mode"].as_str(),
        Some("SKIP")
    );
    assert_eq!(
        observer["processing_mode"]["response_body_mode"].as_str(),
        Some("STREAMED")
    );
    assert_eq!(
        observer["metadata_options"]["forwarding_namespaces"]["untyped"][0].as_str(),
        Some(METADATA_NAMESPACE)
    );

    // Off: no body anywhere, whatever async says.
    let off_text = with_gateway("response_accounting: false\n  async_response_accounting: true");
    let off = http_filters(&off_text);
    assert_eq!(body_mode(&off), "NONE");
    assert!(!names(&off).contains(&ACCOUNTING_FILTER.to_string()));
    assert!(off[1]["typed_config"].get("metadata_options").is_none());

    let c = load_str_with_env(&off_text, &|_| None).unwrap();
    assert_eq!(wasm_plugin_config(&c).unwrap()["response_accounting"], json!(false));
    let c = load_str_with_env(DEFAULT_CONFIG, &|_| None).unwrap();
    assert_eq!(wasm_plugin_config(&c).unwrap()["response_accounting"], json!(true));
}

fn hcm(y: &serde_yaml::Value) -> &serde_yaml::Value {
    &y["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
}

/// No route sends a request without the routing header to a provider, in either failure mode:
/// the fail-open hole (`fail_open_default`) is gone, and only POSTs are routed.
#[test]
fn requests_without_the_routing_header_match_no_provider_route() {
    for mode in ["open", "closed"] {
        let text = DEFAULT_CONFIG.replacen("failure_mode: open", &format!("failure_mode: {mode}"), 1);
        let y = rendered(&text);
        let routes = hcm(&y)["route_config"]["virtual_hosts"][0]["routes"]
            .as_sequence()
            .unwrap();
        for r in routes {
            let name = r["name"].as_str().unwrap();
            if r.get("route").is_some() {
                assert!(
                    name.starts_with("model_") || name.starts_with("chain_"),
                    "{name}: a provider route"
                );
                let headers = r["match"]["headers"].as_sequence().unwrap();
                // Chain routes match the chain the sidecar set, never a header a client may send.
                let routing = if name.starts_with("chain_") {
                    llmsoup_contract::fallback::CHAIN_HEADER
                } else {
                    MODEL_HEADER
                };
                assert_eq!(headers[0]["name"].as_str(), Some(routing), "{name}");
                assert_eq!(headers[1]["name"].as_str(), Some(":method"));
                assert_eq!(headers[1]["string_match"]["exact"].as_str(), Some("POST"));
            } else {
                let d = &r["direct_response"];
                let body: serde_json::Value =
                    serde_json::from_str(d["body"]["inline_string"].as_str().unwrap()).unwrap();
                assert!(body["error"]["code"].is_string() && body["error"]["type"].is_string());
                let ct = r["response_headers_to_add"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .find(|h| h["header"]["key"].as_str() == Some("content-type"))
                    .unwrap();
                assert_eq!(ct["header"]["value"].as_str(), Some("application/json"), "{name}");
            }
        }
        let status = |name: &str| {
            routes.iter().find(|r| r["name"].as_str() == Some(name)).unwrap()["direct_response"]["status"]
                .as_u64()
                .unwrap()
        };
        assert_eq!(
            (
                status("method_not_allowed"),
                status("router_unavailable"),
                status("not_found")
            ),
            (405, 503, 404)
        );
        let regex = routes
            .iter()
            .find(|r| r["name"].as_str() == Some("method_not_allowed"))
            .unwrap()["match"]["safe_regex"]["regex"]
            .as_str()
            .unwrap();
        let re = regex::Regex::new(regex).unwrap();
        assert!(re.is_match("/v1/chat/completions") && re.is_match("/v1/messages"));
        assert!(!re.is_match("/v1/chat/completions/x") && !re.is_match("/v1/files"));
    }
}

/// Paths are normalised before routing (dot segments, merged slashes, encoded slashes refused).
#[test]
fn paths_are_normalised_before_filters_and_routes() {
    let y = rendered(DEFAULT_CONFIG);
    let h = hcm(&y);
    assert_eq!(h["normalize_path"].as_bool(), Some(true));
    assert_eq!(h["merge_slashes"].as_bool(), Some(true));
    assert_eq!(h["path_with_escaped_slashes_action"].as_str(), Some("REJECT_REQUEST"));
}

/// Envoy's own local replies get OpenAI-style JSON; replies that already are JSON keep theirs.
#[test]
fn local_replies_are_mapped_to_openai_json_without_touching_json_ones() {
    let y = rendered(DEFAULT_CONFIG);
    let mappers = hcm(&y)["local_reply_config"]["mappers"].as_sequence().unwrap();
    let mut codes = Vec::new();
    for m in mappers {
        let f = &m["filter"]["extension_filter"];
        assert_eq!(f["name"].as_str(), Some("envoy.access_loggers.extension_filters.cel"));
        let expr = f["typed_config"]["expression"].as_str().unwrap();
        assert!(
            expr.starts_with("!('content-type' in response.headers && response.headers['content-type'].startsWith('application/json'))"),
            "{expr}"
        );
        let err = &m["body_format_override"]["json_format"]["error"];
        assert!(err["message"].is_string() && err["type"].is_string());
        codes.push(err["code"].as_str().unwrap().to_string());
    }
    assert_eq!(
        codes,
        [
            "request_too_large",
            "request_header_fields_too_large",
            "router_unavailable",
            "upstream_timeout",
            "no_healthy_upstream",
            "upstream_overflow",
            "upstream_unavailable",
            "gateway_error",
            "invalid_request"
        ]
    );
    // Only the sidecar's failures change status: ext_proc's 504 for a message timeout is the same
    // 503 as a gRPC error; every other reply keeps Envoy's status (a genuine upstream 504 too).
    let overridden: Vec<(&str, u64)> = mappers
        .iter()
        .filter_map(|m| {
            let expr = m["filter"]["extension_filter"]["typed_config"]["expression"].as_str()?;
            Some((expr, m["status_code"].as_u64()?))
        })
        .collect();
    assert_eq!(overridden.len(), 1, "{overridden:?}");
    assert!(
        overridden[0]
            .0
            .ends_with("(response.code_details.startsWith('ext_proc_error'))")
    );
    assert_eq!(overridden[0].1, 503);
}

/// The ext_proc filters are off by default and on for the virtual host: a stream whose request
/// headers were never decoded (a codec error's local reply) has no route, so its reply never
/// waits on the sidecar; every request with headers gets them.
#[test]
fn ext_proc_filters_run_only_for_requests_with_headers() {
    for async_accounting in [false, true] {
        let text = DEFAULT_CONFIG.replacen(
            "\ngateway:\n",
            &format!("\ngateway:\n  async_response_accounting: {async_accounting}\n"),
            1,
        );
        let y = rendered(&text);
        let h = hcm(&y);
        let filters = h["http_filters"].as_sequence().unwrap();
        let enabled = &h["route_config"]["virtual_hosts"][0]["typed_per_filter_config"];
        let mut sidecar_filters = 0;
        for f in filters {
            let name = f["name"].as_str().unwrap();
            let is_ext_proc = f["typed_config"]["@type"]
                .as_str()
                .unwrap()
                .ends_with(".ExternalProcessor");
            assert_eq!(f["disabled"].as_bool().unwrap_or(false), is_ext_proc, "{name}");
            if is_ext_proc {
                sidecar_filters += 1;
                let on = &enabled[name];
                assert_eq!(
                    on["@type"].as_str(),
                    Some("type.googleapis.com/envoy.config.route.v3.FilterConfig")
                );
                assert!(on["config"].as_mapping().is_some_and(|m| m.is_empty()), "{on:?}");
                assert!(on["disabled"].is_null());
            }
        }
        assert_eq!(sidecar_filters, if async_accounting { 2 } else { 1 });
        assert_eq!(enabled.as_mapping().unwrap().len(), sidecar_filters);
    }
    // Wasm mode has no ext_proc filter and nothing to enable.
    let c = load_str_with_env(DEFAULT_CONFIG, &|_| None).unwrap();
    let opts = RenderOptions {
        mode: Some(AttachMode::Wasm),
        wasm_path: Some("/x.wasm".into()),
    };
    let y: serde_yaml::Value = serde_yaml::from_str(&render(&c, &opts).unwrap()).unwrap();
    let h = hcm(&y);
    assert!(h["route_config"]["virtual_hosts"][0]["typed_per_filter_config"].is_null());
    assert!(
        h["http_filters"]
            .as_sequence()
            .unwrap()
            .iter()
            .all(|f| f["disabled"].is_null())
    );
}

/// The fail-open step refuses what it cannot route (no catch-all provider route behind it).
#[test]
fn fail_open_script_refuses_unroutable_bodies() {
    let lua = fail_open_script(&load_str_with_env(DEFAULT_CONFIG, &|_| None).unwrap());
    assert!(!lua.contains("__MODELS__") && !lua.contains("__DEFAULT__") && !lua.contains("__ROUTE_HEADER__"));
    for needle in [
        "respond(",
        "\"400\"",
        "invalid_json",
        "missing_model",
        "invalid_model",
        "members[key] ~= nil",
    ] {
        assert!(lua.contains(needle), "{needle}");
    }
}

#[test]
fn sidecar_cluster_is_health_checked_without_panic_routing() {
    let y = rendered(DEFAULT_CONFIG);
    let sidecar = &y["static_resources"]["clusters"][0];
    assert_eq!(sidecar["name"].as_str(), Some(SIDECAR_CLUSTER));
    let hc = &sidecar["health_checks"][0];
    assert!(hc["grpc_health_check"].is_mapping());
    assert_eq!(hc["interval"].as_str(), Some("1.000s"));
    assert_eq!(hc["timeout"].as_str(), Some("0.500s"));
    // A sidecar never seen healthy (down at Envoy's start) is still checked every interval.
    assert_eq!(hc["no_traffic_interval"].as_str(), Some("1.000s"));
    assert_eq!(hc["unhealthy_interval"].as_str(), Some("1.000s"));
    assert_eq!(hc["unhealthy_threshold"].as_u64(), Some(3));
    assert_eq!(hc["healthy_threshold"].as_u64(), Some(1));
    assert_eq!(
        sidecar["common_lb_config"]["healthy_panic_threshold"]["value"].as_u64(),
        Some(0)
    );

    let off = rendered(
        "providers: [{name: p, base_url: 'http://127.0.0.1:1/v1'}]\nmodels: [{name: m, provider: p}]\n\
         gateway:\n  sidecar_health_check: {enabled: false}\n",
    );
    let sidecar = &off["static_resources"]["clusters"][0];
    assert!(sidecar["health_checks"].is_null() && sidecar["common_lb_config"].is_null());
}

#[test]
fn sidecar_is_reached_over_tcp_or_a_unix_socket() {
    let base = "providers: [{name: p, base_url: 'http://127.0.0.1:1/v1'}]\nmodels: [{name: m, provider: p}]\n";
    let sidecar = |text: &str, mode: AttachMode| {
        let c = load_str_with_env(text, &|_| None).unwrap();
        let opts = RenderOptions {
            mode: Some(mode),
            wasm_path: Some("/opt/llmsoup_filter.wasm".into()),
        };
        let y: serde_yaml::Value = serde_yaml::from_str(&render(&c, &opts).unwrap()).unwrap();
        let cluster = y["static_resources"]["clusters"][0].clone();
        assert_eq!(cluster["name"].as_str(), Some(SIDECAR_CLUSTER));
        cluster
    };
    let address =
        |c: &serde_yaml::Value| c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"].clone();
    let tcp = address(&sidecar(
        &format!("{base}server: {{grpc_listen: '127.0.0.1:5055'}}\n"),
        AttachMode::ExtProc,
    ));
    assert_eq!(tcp["socket_address"]["address"].as_str(), Some("127.0.0.1"));
    assert_eq!(tcp["socket_address"]["port_value"].as_u64(), Some(5055));
    // A co-located sidecar on a socket: a `pipe`, from either key and spelling, in both modes.
    // The ext_proc filter, the wasm filter's calls, the rate limit service and the health check
    // all name the cluster, so the cluster's address is the only thing that changes.
    for mode in [AttachMode::ExtProc, AttachMode::Wasm] {
        for (server, gateway) in [
            ("unix:/run/llmsoup/grpc.sock", None),
            ("unix:///run/llmsoup/grpc.sock", None),
            ("127.0.0.1:5055", Some("unix:/run/llmsoup/grpc.sock")),
        ] {
            let mut text = format!("{base}server: {{grpc_listen: '{server}'}}\n");
            if let Some(g) = gateway {
                text += &format!("gateway: {{sidecar_address: '{g}'}}\n");
            }
            let cluster = sidecar(&text, mode);
            let pipe = address(&cluster);
            assert_eq!(pipe["pipe"]["path"].as_str(), Some("/run/llmsoup/grpc.sock"), "{text}");
            assert!(pipe["socket_address"].is_null());
            assert!(cluster["health_checks"][0]["grpc_health_check"].is_mapping());
            assert!(
                cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
                    ["explicit_http_config"]["http2_protocol_options"]
                    .is_mapping()
            );
        }
    }
    // A TCP address must be an IP and port: the error names the key it came from.
    let bad = |text: &str| {
        let c = load_str_with_env(&format!("{base}{text}"), &|_| None).unwrap();
        format!("{:#}", render(&c, &RenderOptions::default()).unwrap_err())
    };
    let e = bad("gateway: {sidecar_address: 'localhost'}\n");
    assert!(e.contains("gateway.sidecar_address") && e.contains("unix:/"), "{e}");
    let e = bad("server: {grpc_listen: 'llmsoup:50051'}\n");
    assert!(e.contains("server.grpc_listen"), "{e}");
}
