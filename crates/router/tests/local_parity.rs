//! Parity of the wasm filter's local routing with the engine: for configs `envoy::local_plan`
//! renders a plan for, every request the filter answers itself (`llmsoup_filter::local::route`)
//! must get exactly the engine's `Forward`: model, request headers, body bytes, translation and
//! the client's headers. Requests the filter leaves to the sidecar are not compared.

use std::rc::Rc;

use llmsoup_contract::outcome::Outcome;
use llmsoup_contract::plugin_config::Plugin;
use llmsoup_router::config::load_str_with_env;
use llmsoup_router::engine::{Engine, Request};

const BASE: &str = r#"
providers:
  - {name: alpha, base_url: "http://127.0.0.1:1/v1"}
  - {name: beta, base_url: "http://127.0.0.1:2/v1"}
models:
  - {name: small, provider: alpha, model_id: small-v1}
  - {name: coder, provider: beta, model_id: coder-v2}
  - {name: writer, provider: alpha}
  - {name: polyglot, provider: beta, model_id: poly-1}
signals:
  keywords:
    - {name: code, operator: OR, keywords: [python, rust, "c++", compile, refactor]}
    - {name: poem, operator: OR, keywords: [poem, haiku, sonnet]}
    - {name: both, operator: AND, keywords: [python, rust]}
    - {name: clean, operator: NOR, keywords: [password, secret]}
    - {name: api, operator: OR, keywords: [API], case_sensitive: true}
    - {name: ticket, operator: OR, keywords: ['[A-Z]{2,5}-\d+'], method: regex}
    - {name: zh, operator: OR, keywords: ["代码"]}
decisions:
  - name: coding
    priority: 20
    rules: {operator: AND, conditions: [{type: keyword, name: code}, {type: keyword, name: clean}]}
    modelRefs: [{model: coder}]
  - name: poetry
    priority: 10
    rules: {type: keyword, name: poem}
    modelRefs: [{model: writer}]
  - name: polyglot
    priority: 20
    tier: 2
    rules: {operator: OR, conditions: [{type: keyword, name: zh}, {type: keyword, name: both}]}
    modelRefs: [{model: polyglot}]
  - name: tickets
    priority: 5
    rules: {operator: AND, conditions: [{type: keyword, name: ticket}, {operator: NOT, conditions: [{type: keyword, name: api}]}]}
    modelRefs: [{model: coder}]
routing:
  default_model: small
"#;

fn bodies() -> Vec<String> {
    let chat = |model: &str, text: &str| {
        serde_json::json!({"model": model, "messages": [{"role": "user", "content": text}]}).to_string()
    };
    let mut out: Vec<String> = [
        "write python please",
        "a haiku about rust",
        "python and rust, with my password",
        "请帮我写代码",
        "fix JIRA-123",
        "fix JIRA-123 in the API",
        "fix jira-123",
        "the weather",
        "",
        "Python? RUST!",
        "a c++ sonnet",
    ]
    .iter()
    .flat_map(|t| [chat("auto", t), chat("MoM", t)])
    .collect();
    out.extend([
        chat("coder", "hello"),
        chat("writer", "python"),
        chat("unknown", "python"),
        r#"{"model":"auto","stream":true,"messages":[{"role":"user","content":"python"}]}"#.into(),
        r#"{"model":"auto","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"haiku"}]}"#.into(),
        r#"{"model":"auto","messages":[{"role":"user","content":"python"},{"role":"assistant","content":"ok"},{"role":"user","content":"a haiku"}]}"#.into(),
        r#"{"model":"auto","messages":[{"role":"user","content":[{"type":"text","text":"refactor"},{"type":"text","text":"this"}]}]}"#.into(),
        r#"  {"messages":[{"role":"user","content":"python"}],"model":"auto"}"#.into(),
        r#"{"model":"auto","model":"auto","messages":[]}"#.into(),
        r#"{"model":5}"#.into(),
        r#"["auto"]"#.into(),
        "not json".into(),
    ]);
    out
}

/// Values for the `${E2E_*}` placeholders of the e2e and bench configs.
fn e2e_env(name: &str) -> Option<String> {
    Some(match name {
        "E2E_GRPC_TOKEN" => "e2e-grpc-token-0123456789".into(),
        "E2E_TOKEN_SHA256" => "0".repeat(64),
        "E2E_MODE" => "wasm".into(),
        "E2E_FAILURE_MODE" => "open".into(),
        "E2E_MAX_BODY" => "1048576".into(),
        "E2E_DECISION_LOG" => "/dev/null".into(),
        "E2E_GRPC_LISTEN" => "127.0.0.1:1".into(),
        n if n.ends_with("_PORT") => "1".into(),
        _ => return None,
    })
}

async fn compare(config_text: &str) -> usize {
    let config = load_str_with_env(config_text, &e2e_env).unwrap();
    let plan = llmsoup_envoy::local_plan::local_plan(&config).expect("a locally decidable config");
    let plugin_json = serde_json::json!({
        "sidecar_cluster": "llmsoup_sidecar",
        "models": config.models.iter().filter(|m| m.enabled).map(|m| (m.name.clone(), m.provider_model_id().to_string())).collect::<std::collections::BTreeMap<_, _>>(),
        "default_model": config.default_model().name,
        "response_accounting": config.gateway.response_accounting,
        "route_header": config.compat.selected_model_header.as_ref().map(|h| h.to_ascii_lowercase()),
        "local_plan": llmsoup_contract::plugin_config::encode_plan(&plan),
    });
    let plugin = Rc::new(Plugin::parse(plugin_json.to_string().as_bytes()).unwrap());
    let local = llmsoup_filter::local::Local::new(&plugin).unwrap().unwrap();
    let engine = Engine::new(config).unwrap();
    let mut local_count = 0;
    for body in bodies() {
        let path = "/v1/chat/completions";
        let Some(mine) = llmsoup_filter::local::route(&local, &plugin, "POST", path, body.as_bytes()) else {
            continue;
        };
        local_count += 1;
        let (outcome, trace) = engine
            .handle(Request {
                path,
                body: body.as_bytes(),
                request_id: "r",
                client: "",
            })
            .await;
        let Outcome::Forward(f) = outcome else {
            panic!("the filter forwarded what the engine answered: {body}");
        };
        assert_eq!(mine.model, f.summary.model, "{body}");
        assert_eq!(mine.decision, f.summary.decision.clone().unwrap_or_default(), "{body}");
        let set: Vec<(String, String)> = f.set_headers.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        assert_eq!(mine.set_headers, set, "{body}");
        assert!(f.remove_headers.is_empty() && f.append_headers.is_empty(), "{body}");
        assert_eq!(mine.body, f.body, "{body}");
        assert_eq!(mine.translation, f.translation, "{body}");
        assert_eq!(mine.response_headers, f.summary.response_headers(), "{body}");
        // The decision record the sidecar publishes from the report is the engine's own.
        assert_eq!(mine.record.routed, trace.routing.is_some(), "{body}");
        if let Some(rec) = trace.routing.and_then(|r| r.record) {
            assert_eq!(mine.record.signals, rec.signals, "{body}");
            assert_eq!(mine.record.confidence, rec.confidence, "{body}");
            assert_eq!(mine.record.prompt_tokens, rec.prompt_tokens, "{body}");
            assert_eq!(mine.record.prompt, rec.prompt, "{body}");
            assert_eq!(
                Some(mine.record.prompt_sha256.clone()).filter(|h| !h.is_empty()),
                rec.prompt_sha256,
                "{body}"
            );
        }
    }
    local_count
}

#[tokio::test]
async fn the_filter_routes_exactly_like_the_engine() {
    assert!(compare(BASE).await >= 24);
    // The other strategy, history, no response accounting, a compat route header.
    let variant = BASE.replace(
        "routing:\n  default_model: small\n",
        "routing:\n  default_model: small\n  strategy: confidence\n  include_history: true\ngateway:\n  response_accounting: false\ncompat:\n  selected_model_header: X-Selected-Model\n",
    );
    assert!(compare(&variant).await >= 24);
    // Decision records, redacted and with prompts kept.
    for log in ["{path: /dev/null}", "{path: /dev/null, include_prompt: true}"] {
        assert!(compare(&format!("{BASE}decision_log: {log}\n")).await >= 24);
    }
}

/// The configs the e2e table and the gateway benchmark run in wasm mode with a plan.
#[tokio::test]
async fn the_e2e_and_bench_configs_route_exactly_like_the_engine() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for file in ["tests/e2e/llmsoup-local.yaml", "bench/bench-config.yaml"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(compare(&text).await >= 20, "{file}");
    }
}
