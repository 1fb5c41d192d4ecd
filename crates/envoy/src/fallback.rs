//! Fallback chains in Envoy: Envoy retries a failed attempt on the next model of the request's
//! chain, each attempt with its own provider, path, `model` id and credential.
//!
//! Per chain (every subsequence of two or more of a configured chain's models, so the sidecar can
//! drop fallbacks that cannot take a request, or a primary in a `retry-after` skip window —
//! `Config::chains`):
//! - a route matching [`CHAIN_HEADER`] with a `retry_policy` (connect failure, reset, 5xx, 429)
//!   and `retry_priority: previous_priorities`, so attempt *n* goes to priority *n*;
//! - an aggregate cluster whose priorities are the chain's models, each a `fallback_model_<name>`
//!   cluster (the provider's address and TLS, endpoint metadata naming the model);
//! - upstream HTTP filters on the aggregate cluster (an aggregate cluster's attempts run its
//!   filters, not the underlying cluster's), run once per attempt after the host is picked:
//!   `header_mutation` copies the host's model and provider from its metadata into request
//!   headers (`%UPSTREAM_METADATA%`), and sets [`ATTEMPTS_HEADER`] on each attempt's answer from
//!   the request's dynamic metadata (`%DYNAMIC_METADATA%`, models tried, with a failed answer's
//!   status and `retry-after`); a Lua step (`fallback.lua`) records the attempt (one metadata
//!   write), rewrites path and `model` id for a non-primary attempt, strips an earlier attempt's
//!   credential, and adds a failed answer's status and `retry-after` to the record (a
//!   `match_delegate` on the answer's `:status` skips it on a 2xx, so the happy path runs no Lua
//!   on the response); one `credential_injector` per provider, skipped (match_delegate) unless
//!   the attempt goes to that provider; a last `header_mutation` removes the attempt's model and
//!   provider headers (set again by the first step of the next attempt).
//!
//! Request headers are shared by all attempts of a request (Envoy's upstream filters mutate the
//! router's copy: a header removed in one attempt is gone for the next), bodies are not: each
//! attempt starts from the routed body. What must outlive an attempt — the attempts so far, the
//! model's byte span, the first path — is kept by the Lua step in the request's dynamic metadata
//! ([`STATE_NAMESPACE`]: an upstream filter's stream info is the downstream request's, shared by
//! its attempts and never sent upstream), so no `x-llmsoup-*` header reaches a provider: the
//! chain header is removed by the route (each aggregate cluster's Lua step knows its chain's
//! primary), the span header by the first attempt.

use std::collections::BTreeSet;

use anyhow::Context as _;
use serde_json::{Value, json};

use llmsoup_config::Config;
use llmsoup_contract::fallback::{ATTEMPTS_HEADER, CHAIN_HEADER, MODEL_SPAN_HEADER, chain_value};

use super::{credential_injector, duration, lua_string, provider_cluster};

const FALLBACK_LUA: &str = include_str!("fallback.lua");
/// Upstream request header: the attempt's model (from the picked host's metadata).
const UPSTREAM_MODEL_HEADER: &str = "x-llmsoup-upstream";
/// Upstream request header: the attempt's provider (from the picked host's metadata).
const UPSTREAM_PROVIDER_HEADER: &str = "x-llmsoup-upstream-provider";
/// Dynamic metadata namespace of the Lua step's per-request state (attempts, span, first path).
const STATE_NAMESPACE: &str = "llmsoup.fallback";
/// The one key of [`STATE_NAMESPACE`]: a struct (`attempts`, `path`, `span`), written once per
/// attempt and once more per failed answer.
const STATE_KEY: &str = "state";
/// The Lua step, wrapped in a matcher that skips it on a 2xx answer.
const LUA_FILTER: &str = "llmsoup.fallback.attempt";
/// The last upstream filter before the codec: removes the per-attempt headers.
const STRIP_FILTER: &str = "llmsoup.fallback.strip";

fn model_cluster_name(model: &str) -> String {
    format!("fallback_model_{model}")
}

fn chain_name(chain: &[&str]) -> String {
    format!("chain_{}", chain.join("+"))
}

/// Routes (to go before the model routes) and clusters for every chain Envoy may be handed.
pub(crate) fn render(config: &Config, route_header: &str) -> anyhow::Result<(Vec<Value>, Vec<Value>)> {
    let chains = config.chains();
    if chains.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut routes = Vec::new();
    let mut clusters = Vec::new();
    let mut members = BTreeSet::new();
    for chain in &chains {
        let primary = config.model(chain[0]).context("chain primary")?;
        let p = config
            .provider(&primary.provider)
            .with_context(|| format!("model `{}`: unknown provider", primary.name))?;
        let mut route = super::model_route(&chain_name(chain), p, &primary.name, route_header)?;
        route["match"]["headers"] = json!([
            {"name": CHAIN_HEADER, "string_match": {"exact": chain_value(chain)}},
            {"name": ":method", "string_match": {"exact": "POST"}},
        ]);
        route["route"]["cluster"] = json!(chain_name(chain));
        route["route"]["retry_policy"] = retry_policy(config, chain.len());
        // Matched on, then gone before any attempt: the aggregate cluster's Lua step knows the
        // chain's primary itself.
        if let Some(Value::Array(remove)) = route.get_mut("request_headers_to_remove") {
            remove.push(json!(CHAIN_HEADER));
        }
        routes.push(route);
        let lua = lua_script(config, chain[0])?;
        let mut agg = aggregate_cluster(config, chain, &lua);
        let max_requests = chain
            .iter()
            .filter_map(|m| config.model(m))
            .filter_map(|m| config.provider(&m.provider))
            .map(|p| p.circuit_breakers.max_requests)
            .max()
            .unwrap_or(1024);
        super::health::aggregate(max_requests, &mut agg);
        clusters.push(agg);
        members.extend(chain.iter().copied());
    }
    for name in members {
        let m = config.model(name).context("chain member")?;
        let p = config
            .provider(&m.provider)
            .with_context(|| format!("model `{}`: unknown provider", m.name))?;
        let mut c = provider_cluster(p)?;
        let cname = model_cluster_name(name);
        c["name"] = json!(cname);
        c["load_assignment"]["cluster_name"] = json!(cname);
        c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["metadata"] =
            json!({"filter_metadata": {"llmsoup": {"model": m.name, "provider": p.name}}});
        // The aggregate cluster's upstream filters run, not these: keep only the protocol.
        if let Some(o) = c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
            .as_object_mut()
        {
            o.remove("http_filters");
        }
        clusters.push(c);
    }
    Ok((routes, clusters))
}

/// Retry on what a provider does when it cannot answer: no connection, a reset, a 5xx or a 429,
/// each retry on the next priority (the next model). Retries happen only before response
/// headers reach the client, so a stream fails over only before its first byte.
fn retry_policy(config: &Config, models: usize) -> Value {
    let backoff = config.routing.fallback.backoff_ms.max(1);
    let mut policy = json!({
        "retry_on": "connect-failure,refused-stream,reset,5xx,retriable-status-codes",
        "retriable_status_codes": [429],
        "num_retries": models.saturating_sub(1),
        "retry_priority": {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                "update_frequency": 1,
            }
        },
        "retry_back_off": {"base_interval": duration(backoff), "max_interval": duration(backoff * 4)},
    });
    // An idle timeout, not `per_try_timeout`: that one runs until the response ends and would
    // cut every stream longer than it. Idle time restarts with each byte, so it bounds the wait
    // for a silent provider (a retry while nothing has reached the client) and a stalled stream.
    if let Some(ms) = config.routing.fallback.attempt_timeout_ms {
        policy["per_try_idle_timeout"] = json!(duration(ms.max(1)));
    }
    policy
}

fn aggregate_cluster(config: &Config, chain: &[&str], lua: &str) -> Value {
    let mut filters = vec![json!({
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {
                "request_mutations": [
                    {"append": {"header": {"key": UPSTREAM_MODEL_HEADER, "value": "%UPSTREAM_METADATA(llmsoup:model)%"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}},
                    {"append": {"header": {"key": UPSTREAM_PROVIDER_HEADER, "value": "%UPSTREAM_METADATA(llmsoup:provider)%"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}},
                ],
                // Runs on each attempt's answer after the Lua step (response filters run in
                // reverse): the attempts so far, as the Lua step left them in the metadata.
                "response_mutations": [
                    {"append": {"header": {"key": ATTEMPTS_HEADER, "value": format!("%DYNAMIC_METADATA({STATE_NAMESPACE}:{STATE_KEY}:attempts)%")}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}},
                ],
            }
        }
    })];
    filters.push(json!({
        "name": LUA_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher",
            "extension_config": {
                "name": "envoy.filters.http.lua",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                    "default_source_code": {"inline_string": lua},
                }
            },
            // A 2xx answer has nothing to record: the Lua step's response hook is skipped (the
            // request hook has run by then; the match needs the response's status).
            "xds_matcher": {"matcher_list": {"matchers": [{
                "predicate": {"single_predicate": {
                    "input": {"name": "status", "typed_config": {
                        "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpResponseHeaderMatchInput",
                        "header_name": ":status",
                    }},
                    "value_match": {"prefix": "2"},
                }},
                "on_match": {"action": {"name": "skip", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter",
                }}},
            }]}},
        }
    }));
    let mut providers: Vec<&str> = Vec::new();
    for name in chain {
        if let Some(m) = config.model(name)
            && !providers.contains(&m.provider.as_str())
        {
            providers.push(&m.provider);
        }
    }
    for provider in providers {
        let Some(p) = config.provider(provider) else { continue };
        let Some(c) = &p.credentials else { continue };
        filters.push(json!({
            "name": format!("llmsoup.credential.{}", p.name),
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher",
                "extension_config": credential_injector(p, c),
                // Skipped unless this attempt goes to this provider.
                "xds_matcher": {"matcher_list": {"matchers": [{
                    "predicate": {"not_matcher": {"single_predicate": {
                        "input": {"name": "provider", "typed_config": {
                            "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
                            "header_name": UPSTREAM_PROVIDER_HEADER,
                        }},
                        "value_match": {"exact": p.name},
                    }}},
                    "on_match": {"action": {"name": "skip", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter",
                    }}},
                }]}},
            }
        }));
    }
    // The attempt's model and provider were for the steps above; set again by the first step of
    // every attempt, they need not reach the provider. The span is the Lua step's (it removes it
    // itself; this is in case it did not run to the end).
    filters.push(json!({
        "name": STRIP_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": [
                {"remove": UPSTREAM_MODEL_HEADER},
                {"remove": UPSTREAM_PROVIDER_HEADER},
                {"remove": MODEL_SPAN_HEADER},
            ]},
        }
    }));
    filters.push(json!({
        "name": "envoy.filters.http.upstream_codec",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}
    }));
    let name = chain_name(chain);
    json!({
        "name": name,
        "connect_timeout": "1s",
        "lb_policy": "CLUSTER_PROVIDED",
        "cluster_type": {
            "name": "envoy.clusters.aggregate",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig",
                // Priority order: attempt n goes to the n-th model (previous_priorities).
                "clusters": chain.iter().map(|m| model_cluster_name(m)).collect::<Vec<_>>(),
            }
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http_protocol_options": {}},
                "http_filters": filters,
            }
        },
    })
}

/// The per-attempt Lua step of the chain whose primary is `primary`, with every chain model's id
/// and path prefix filled in.
fn lua_script(config: &Config, primary: &str) -> anyhow::Result<String> {
    let mut models = String::from("{");
    let mut credential_headers = BTreeSet::new();
    for name in config.chains().iter().flatten().collect::<BTreeSet<_>>() {
        let m = config.model(name).context("chain member")?;
        let p = config.provider(&m.provider).context("provider")?;
        let ep = p.endpoint().map_err(anyhow::Error::msg)?;
        let id = serde_json::to_string(m.provider_model_id()).context("model id")?;
        models.push_str(&format!(
            "[{}] = {{id = {}, prefix = {}}}, ",
            lua_string(name),
            lua_string(&id),
            lua_string(&ep.path_prefix)
        ));
        if let Some(c) = &p.credentials {
            credential_headers.insert(p.credential_header(c).0.to_ascii_lowercase());
        }
    }
    models.push('}');
    let creds: Vec<String> = credential_headers.iter().map(|h| lua_string(h)).collect();
    Ok(FALLBACK_LUA
        .replace("__MODELS__", &models)
        .replace("__CREDENTIAL_HEADERS__", &format!("{{{}}}", creds.join(", ")))
        .replace("__UPSTREAM__", &lua_string(UPSTREAM_MODEL_HEADER))
        .replace("__PRIMARY__", &lua_string(primary))
        .replace("__NS__", &lua_string(STATE_NAMESPACE))
        .replace("__KEY__", &lua_string(STATE_KEY))
        .replace("__ATTEMPTS__", &lua_string(ATTEMPTS_HEADER))
        .replace("__SPAN__", &lua_string(MODEL_SPAN_HEADER)))
}

#[cfg(test)]
mod tests {
    use llmsoup_config::load_str_with_env;

    use crate::{RenderOptions, render};

    const CONFIG: &str = "
providers:
  - {name: a, base_url: 'http://127.0.0.1:8001/v1'}
  - {name: b, base_url: 'https://api.example.com/openai/v1', credentials: {env: B_KEY}}
models:
  - {name: m1, provider: a, model_id: 'one\"v1', fallbacks: [m2]}
  - {name: m2, provider: b, model_id: two-v1}
";

    fn rendered() -> serde_yaml::Value {
        let c = load_str_with_env(CONFIG, &|_| None).unwrap();
        serde_yaml::from_str(&render(&c, &RenderOptions::default()).unwrap()).unwrap()
    }

    #[test]
    fn a_chain_is_a_retrying_route_over_an_aggregate_cluster() {
        let y = rendered();
        let hcm = &y["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        let routes = hcm["route_config"]["virtual_hosts"][0]["routes"].as_sequence().unwrap();
        let chain = &routes[0];
        assert_eq!(chain["name"].as_str(), Some("chain_m1+m2"));
        assert_eq!(chain["match"]["headers"][0]["name"].as_str(), Some("x-llmsoup-chain"));
        assert_eq!(
            chain["match"]["headers"][0]["string_match"]["exact"].as_str(),
            Some("m1,m2")
        );
        let r = &chain["route"];
        assert_eq!(r["cluster"].as_str(), Some("chain_m1+m2"));
        assert_eq!(r["retry_policy"]["num_retries"].as_u64(), Some(1));
        assert_eq!(r["retry_policy"]["retriable_status_codes"][0].as_u64(), Some(429));
        assert!(r["retry_policy"]["retry_on"].as_str().unwrap().contains("reset"));
        // No per-attempt timeout unless configured (attempts wait for the route's timeout).
        assert!(r["retry_policy"]["per_try_idle_timeout"].is_null());
        assert!(r["retry_policy"]["per_try_timeout"].is_null());
        assert_eq!(
            r["retry_policy"]["retry_priority"]["name"].as_str(),
            Some("envoy.retry_priorities.previous_priorities")
        );
        assert_eq!(routes[1]["name"].as_str(), Some("model_m1"));

        let clusters = y["static_resources"]["clusters"].as_sequence().unwrap();
        let by_name = |n: &str| clusters.iter().find(|c| c["name"].as_str() == Some(n)).unwrap();
        let agg = by_name("chain_m1+m2");
        assert_eq!(
            agg["cluster_type"]["typed_config"]["clusters"],
            serde_yaml::to_value(["fallback_model_m1", "fallback_model_m2"]).unwrap()
        );
        let opts = &agg["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        let filters: Vec<&str> = opts["http_filters"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        // Only provider b has a credential.
        assert_eq!(
            filters,
            [
                "envoy.filters.http.header_mutation",
                "llmsoup.fallback.attempt",
                "llmsoup.credential.b",
                "llmsoup.fallback.strip",
                "envoy.filters.http.upstream_codec"
            ]
        );
        let lua_filter = &opts["http_filters"][1]["typed_config"];
        let lua = lua_filter["extension_config"]["typed_config"]["default_source_code"]["inline_string"]
            .as_str()
            .unwrap();
        // No Lua on a 2xx answer: the matcher skips the step on the response's status.
        let predicate = &lua_filter["xds_matcher"]["matcher_list"]["matchers"][0]["predicate"]["single_predicate"];
        assert_eq!(
            predicate["input"]["typed_config"]["header_name"].as_str(),
            Some(":status")
        );
        assert_eq!(predicate["value_match"]["prefix"].as_str(), Some("2"));
        // The attempts header comes from the metadata, formatted by Envoy itself.
        let answer = &opts["http_filters"][0]["typed_config"]["mutations"]["response_mutations"][0]["append"]["header"];
        assert_eq!(answer["key"].as_str(), Some("x-llmsoup-attempts"));
        assert_eq!(
            answer["value"].as_str(),
            Some("%DYNAMIC_METADATA(llmsoup.fallback:state:attempts)%")
        );
        // Ids are JSON strings, ready to splice; prefixes are the providers' base paths.
        assert!(
            lua.contains(r#"["m1"] = {id = "\"one\\\"v1\"", prefix = "/v1"}"#),
            "{lua}"
        );
        assert!(
            lua.contains(r#"["m2"] = {id = "\"two-v1\"", prefix = "/openai/v1"}"#),
            "{lua}"
        );
        assert!(lua.contains(r#"local CREDENTIAL_HEADERS = {"authorization"}"#), "{lua}");
        assert!(lua.contains(r#"local PRIMARY = MODELS["m1"]"#), "{lua}");
        // The chain header routed the request; no attempt carries it to a provider.
        let removed = chain["request_headers_to_remove"].as_sequence().unwrap();
        assert!(
            removed.iter().any(|h| h.as_str() == Some("x-llmsoup-chain")),
            "{removed:?}"
        );
        assert!(!lua.contains("__"), "every placeholder is filled: {lua}");
        // State across attempts lives in dynamic metadata, not in headers a provider would see.
        assert!(lua.contains(r#"local NS = "llmsoup.fallback""#), "{lua}");
        assert!(lua.contains(r#"local KEY = "state""#), "{lua}");
        assert!(
            !lua.contains("x-llmsoup-tried") && !lua.contains("x-llmsoup-path"),
            "{lua}"
        );
        let strip = &opts["http_filters"][3]["typed_config"]["mutations"]["request_mutations"];
        assert!(
            strip
                .as_sequence()
                .unwrap()
                .iter()
                .any(|m| m["remove"].as_str() == Some("x-llmsoup-model-span")),
            "{strip:?}"
        );

        let m2 = by_name("fallback_model_m2");
        let ep = &m2["load_assignment"]["endpoints"][0]["lb_endpoints"][0];
        assert_eq!(
            ep["metadata"]["filter_metadata"]["llmsoup"]["model"].as_str(),
            Some("m2")
        );
        assert_eq!(
            ep["metadata"]["filter_metadata"]["llmsoup"]["provider"].as_str(),
            Some("b")
        );
        // TLS with SNI, like the provider's own cluster; its filters are the aggregate's.
        assert_eq!(
            m2["transport_socket"]["typed_config"]["sni"].as_str(),
            Some("api.example.com")
        );
        assert!(
            m2["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
                ["http_filters"]
                .is_null()
        );
    }

    #[test]
    fn no_chains_no_extra_routes() {
        let c = load_str_with_env(&CONFIG.replace(", fallbacks: [m2]", ""), &|_| None).unwrap();
        let out = render(&c, &RenderOptions::default()).unwrap();
        assert!(!out.contains("chain_") && !out.contains("fallback_model_"));
    }

    #[test]
    fn an_attempt_timeout_is_an_idle_timeout_per_attempt() {
        let text = CONFIG.replace("models:", "routing:\n  fallback: {attempt_timeout_ms: 1500}\nmodels:");
        let c = load_str_with_env(&text, &|_| None).unwrap();
        let y: serde_yaml::Value = serde_yaml::from_str(&render(&c, &RenderOptions::default()).unwrap()).unwrap();
        let hcm = &y["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        let policy = &hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["retry_policy"];
        assert_eq!(policy["per_try_idle_timeout"].as_str(), Some("1.500s"));
        // Never `per_try_timeout`: it would end every stream longer than it.
        assert!(policy["per_try_timeout"].is_null());
    }
}
