use super::*;
use llmsoup_config::load_str_with_env;

const BUDGETED: &str = "
server: {grpc_token: 'budget-test-grpc-token-01'}
providers:
  - {name: p, base_url: 'http://127.0.0.1:9000/v1'}
models:
  - {name: cheap, provider: p, pricing: {prompt_per_1m: 1.0, completion_per_1m: 2.0}}
  - {name: strong, provider: p}
routing: {default_model: cheap}
auth:
  tokens:
    - {name: alice, group: team, sha256: '0000000000000000000000000000000000000000000000000000000000000001'}
budgets:
  store: {redis_url: 'redis://127.0.0.1:6379', timeout_ms: 80}
  tokens: {alice: {requests_per_minute: 10}}
  groups: {team: {usd_per_day: 5}}
";

fn hcm(text: &str, mode: AttachMode) -> serde_json::Value {
    let c = load_str_with_env(text, &|_| None).unwrap();
    let opts = RenderOptions {
        mode: Some(mode),
        wasm_path: Some("/f.wasm".into()),
    };
    let y: serde_json::Value = serde_yaml::from_str(&render(&c, &opts).unwrap()).unwrap();
    y["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"].clone()
}

fn filter_names(hcm: &serde_json::Value) -> Vec<String> {
    hcm["http_filters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn budgets_render_the_ratelimit_filter_after_routing_in_both_modes() {
    for (mode, before) in [
        (AttachMode::ExtProc, "envoy.filters.http.lua"),
        (AttachMode::Wasm, "envoy.filters.http.wasm"),
    ] {
        let h = hcm(BUDGETED, mode);
        let names = filter_names(&h);
        let i = names.iter().position(|n| n == budget::RATELIMIT_FILTER).unwrap();
        assert_eq!(names[i - 1], before, "{mode:?}: {names:?}");
        assert_eq!(names[i + 1], "envoy.filters.http.router");
        let rl = &h["http_filters"][i]["typed_config"];
        assert_eq!(rl["domain"], "llmsoup");
        // A spend cap applies: the sidecar unreachable refuses with the configured status.
        assert_eq!(rl["failure_mode_deny"], true);
        assert_eq!(rl["status_on_error"]["code"], 503);
        assert_eq!(rl["timeout"], "0.330s");
        let grpc = &rl["rate_limit_service"]["grpc_service"];
        assert_eq!(grpc["envoy_grpc"]["cluster_name"], SIDECAR_CLUSTER);
        assert_eq!(grpc["initial_metadata"][0]["value"], "Bearer budget-test-grpc-token-01");
        assert_eq!(rl["rate_limit_service"]["transport_api_version"], "V3");

        let routes = h["route_config"]["virtual_hosts"][0]["routes"].as_array().unwrap();
        let model = routes.iter().find(|r| r["name"] == "model_strong").unwrap();
        let actions = &model["route"]["rate_limits"][0]["actions"];
        assert_eq!(actions[0]["generic_key"]["descriptor_key"], "llmsoup_model");
        assert_eq!(actions[0]["generic_key"]["descriptor_value"], "strong");
        assert_eq!(actions[1]["request_headers"]["header_name"], TENANT_HEADER);
        assert_eq!(actions[1]["request_headers"]["skip_if_absent"], true);
        assert!(
            model["request_headers_to_remove"]
                .as_array()
                .unwrap()
                .contains(&json!(TENANT_HEADER)),
            "the tenant never reaches a provider"
        );
        // The budgets-unavailable refusal gets its JSON body before any other mapper runs.
        let first = &h["local_reply_config"]["mappers"][0];
        let cel = first["filter"]["extension_filter"]["typed_config"]["expression"]
            .as_str()
            .unwrap();
        assert!(cel.contains("rate_limiter_error"), "{cel}");
        assert_eq!(
            first["body_format_override"]["json_format"]["error"]["code"],
            "budget_unavailable"
        );
    }
}

#[test]
fn without_budgets_nothing_is_rendered_and_rate_limits_alone_fail_open() {
    let plain = BUDGETED.split("budgets:").next().unwrap();
    for mode in [AttachMode::ExtProc, AttachMode::Wasm] {
        let h = hcm(plain, mode);
        assert!(!filter_names(&h).contains(&budget::RATELIMIT_FILTER.to_string()));
        let routes = h["route_config"]["virtual_hosts"][0]["routes"].as_array().unwrap();
        assert!(routes.iter().all(|r| r["route"].get("rate_limits").is_none()));
        let mapper = serde_json::to_string(&h["local_reply_config"]["mappers"][0]).unwrap();
        assert!(!mapper.contains("rate_limiter_error"));
    }
    // Only a model's limit: only its route asks the rate limit service.
    let model_only = BUDGETED
        .replace("  tokens: {alice: {requests_per_minute: 10}}\n", "")
        .replace(
            "  groups: {team: {usd_per_day: 5}}\n",
            "  models: {cheap: {requests_per_minute: 10}}\n",
        );
    let h = hcm(&model_only, AttachMode::Wasm);
    let routes = h["route_config"]["virtual_hosts"][0]["routes"].as_array().unwrap();
    let limited: Vec<&str> = routes
        .iter()
        .filter(|r| r["route"].get("rate_limits").is_some())
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(limited, ["model_cheap"]);
    let rate_only = BUDGETED.replace("  groups: {team: {usd_per_day: 5}}\n", "");
    let h = hcm(&rate_only, AttachMode::ExtProc);
    let i = filter_names(&h)
        .iter()
        .position(|n| n == budget::RATELIMIT_FILTER)
        .unwrap();
    assert_eq!(h["http_filters"][i]["typed_config"]["failure_mode_deny"], false);
}
