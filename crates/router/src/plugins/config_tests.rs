//! Load-time validation of decision plugins (in `Config::validate`), with key paths and lines.

use crate::config::{PluginConfig, SystemPromptMode, load_str_with_env};

fn config(plugins: &str, extra: &str) -> String {
    format!(
        "
providers: [{{name: p, base_url: 'http://127.0.0.1:1/v1'}}]
models: [{{name: m, provider: p}}]
decisions:
  - name: d
    modelRefs: [{{model: m}}]
    plugins:
{plugins}
{extra}"
    )
}

fn err(plugins: &str) -> String {
    load_str_with_env(&config(plugins, ""), &|_| None)
        .unwrap_err()
        .to_string()
}

#[test]
fn vsr_plugin_shapes_load() {
    let c = load_str_with_env(
        &config(
            "
      - type: system_prompt
        configuration: {system_prompt: hi, mode: insert}
      - type: header_mutation
        configuration:
          add: [{name: x-a, value: '1'}]
          update: [{name: Authorization, value: Bearer x}]
          delete: [x-b]
      - type: fast_response
        configuration: {message: no}
      - type: request_params
        configuration: {blocked_params: [logprobs], max_tokens_limit: 10, max_n: 2, strip_unknown: true}
      - type: semantic-cache
        configuration: {enabled: true, similarity_threshold: 0.8}",
            "",
        ),
        &|_| None,
    )
    .unwrap();
    let p = &c.decisions[0].plugins;
    assert_eq!(p.len(), 5);
    assert!(matches!(&p[0], PluginConfig::SystemPrompt(s) if s.mode == SystemPromptMode::Insert));
    assert!(matches!(&p[2], PluginConfig::FastResponse(f) if f.status == 200));
    assert_eq!(p[4].kind(), "cache");
    assert!(matches!(&p[4], PluginConfig::Cache(c) if c.similarity_threshold == 0.8 && c.semantic));
}

#[test]
fn cache_plugin_and_store_checks() {
    let e = err("      - {type: cache, configuration: {similarity_threshold: 1.5}}");
    assert!(e.contains("configuration.similarity_threshold"), "{e}");
    let e = err("      - {type: cache, configuration: {max_temperature: -1}}");
    assert!(e.contains("configuration.max_temperature"), "{e}");
    let e = err("      - {type: cache, configuration: {scope: everyone}}");
    assert!(e.contains("scope"), "{e}");
    let bad = |extra: &str| {
        load_str_with_env(&config("      - {type: cache, configuration: {}}", extra), &|_| None)
            .unwrap_err()
            .to_string()
    };
    let e = bad("gateway: {response_accounting: false}");
    assert!(
        e.contains("plugins[0].type") && e.contains("response_accounting"),
        "{e}"
    );
    let e = bad("response_cache: {backend: redis}");
    assert!(e.contains("response_cache.redis"), "{e}");
    let e = bad("response_cache: {backend: redis, redis: {url: 'http://x'}}");
    assert!(e.contains("response_cache.redis.url"), "{e}");
    let e = bad("response_cache: {max_entry_bytes: 0}");
    assert!(e.contains("response_cache.max_entry_bytes"), "{e}");
    let ok = config(
        "      - {type: cache, configuration: {scope: shared, max_temperature: null, ttl_seconds: 5}}",
        "response_cache: {backend: redis, redis: {url: 'redis://127.0.0.1:6379'}}",
    );
    let c = load_str_with_env(&ok, &|_| None).unwrap();
    assert!(matches!(&c.decisions[0].plugins[0], PluginConfig::Cache(p) if p.max_temperature.is_none()));
    assert_eq!(c.response_cache.redis.unwrap().timeout_ms, 50);
}

#[test]
fn reserved_and_invalid_headers_are_refused_with_their_path() {
    let e = err(
        "      - type: header_mutation\n        configuration:\n          add:\n            - name: x-llmsoup-model\n              value: x",
    );
    assert!(
        e.contains("decisions[0].plugins[0].configuration.add[0].name") && e.contains("reserved"),
        "{e}"
    );
    assert!(e.contains("line 11"), "{e}");
    let e = err("      - type: header_mutation\n        configuration: {delete: [':authority']}");
    assert!(
        e.contains("decisions[0].plugins[0].configuration.delete[0]") && e.contains("pseudo"),
        "{e}"
    );
    let e = err("      - type: header_mutation\n        configuration: {update: [{name: content-length, value: '1'}]}");
    assert!(e.contains("managed"), "{e}");
    let e = err("      - type: header_mutation\n        configuration: {add: [{name: x-a, value: \"a\\r\\nb\"}]}");
    assert!(e.contains("configuration.add[0].value"), "{e}");
    let text = config(
        "      - type: header_mutation\n        configuration: {delete: [X-Selected-Model]}",
        "compat: {selected_model_header: x-selected-model}",
    );
    let e = load_str_with_env(&text, &|_| None).unwrap_err().to_string();
    assert!(e.contains("selected_model_header"), "{e}");
}

#[test]
fn other_plugin_checks() {
    let e =
        err("      - type: header_mutation\n        configuration: {add: [{name: X-A, value: '1'}], delete: [x-a]}");
    assert!(e.contains("configuration.delete[0]") && e.contains("both"), "{e}");
    let e = err("      - {type: fast_response, configuration: {message: x, status: 302}}");
    assert!(e.contains("configuration.status"), "{e}");
    let e = err("      - {type: request_params, configuration: {max_n: 0}}");
    assert!(e.contains("configuration.max_n"), "{e}");
    let e = err("      - {type: system_prompt, configuration: {system_prompt: ' '}}");
    assert!(e.contains("configuration.system_prompt"), "{e}");
    let e = err(
        "      - {type: fast_response, configuration: {message: a}}\n      - {type: fast_response, configuration: {message: b}}",
    );
    assert!(e.contains("plugins[1].type") && e.contains("duplicate"), "{e}");
    let e = err("      - {type: system_prompt, configuration: {system_prompt: x, mode: append}}");
    assert!(e.contains("append"), "{e}");
}

#[test]
fn compat_header_must_be_a_plain_name() {
    for bad in ["':path'", "x-llmsoup-route", "'bad header'"] {
        let text = format!(
            "providers: [{{name: p, base_url: 'http://127.0.0.1:1/v1'}}]\nmodels: [{{name: m, provider: p}}]\ncompat: {{selected_model_header: {bad}}}\n"
        );
        let e = load_str_with_env(&text, &|_| None).unwrap_err().to_string();
        assert!(e.contains("compat.selected_model_header"), "{bad}: {e}");
    }
}

#[test]
fn lora_names_are_checked() {
    let text = "providers: [{name: p, base_url: 'http://127.0.0.1:1/v1'}]\nmodels: [{name: m, provider: p}]\ndecisions:\n  - {name: d, modelRefs: [{model: m, lora_name: ''}]}\n";
    let e = load_str_with_env(text, &|_| None).unwrap_err().to_string();
    assert!(e.contains("decisions[0].modelRefs[0].lora_name"), "{e}");
}
