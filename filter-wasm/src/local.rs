//! Local routing (ARCHITECTURE.md, "Local routing in the wasm filter"): for a config whose
//! plugin configuration carries a `LocalPlan`, what the sidecar's engine would answer for a
//! request, computed in the filter with the engine's own code (`llmsoup-rules`: the request
//! parse, the keyword matcher, the decisions) and the contract's `Summary` for the client's
//! headers. `None` means "ask the sidecar": any path, method, body or model the plan does not
//! cover, including every request the sidecar would refuse (its error body stays the sidecar's).
//!
//! The decision record (`UsageReport.local_route`) rides on the request's usage report; the
//! sidecar publishes it as it publishes a Route call's trace (`Engine::local_route`).

use llmsoup_contract::auth;
use llmsoup_contract::headers::MODEL_HEADER;
use llmsoup_contract::outcome::{Summary, Translation};
use llmsoup_contract::plugin_config::Plugin;
use llmsoup_contract::v1;
use llmsoup_rules::plan::Planned;
use llmsoup_rules::request;

/// A plugin configuration's plan, compiled once per configuration.
pub struct Local {
    plan: v1::LocalPlan,
    planned: Planned,
}

impl Local {
    /// Compiles the plugin configuration's plan; `None` without one, an error when it cannot be
    /// used (every request then makes the Route call).
    pub fn new(plugin: &Plugin) -> Result<Option<Local>, String> {
        let Some(plan) = &plugin.plan else {
            return Ok(None);
        };
        Ok(Some(Local {
            planned: Planned::new(plan)?,
            plan: plan.clone(),
        }))
    }
}

/// What to do with a request routed locally: the mutations the sidecar's `Forward` would carry,
/// the client's headers, and the decision record for the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    /// The chosen model (configured name).
    pub model: String,
    /// The winning decision (empty: none).
    pub decision: String,
    /// Request headers to set.
    pub set_headers: Vec<(String, String)>,
    /// The new request body, when it changes.
    pub body: Option<Vec<u8>>,
    /// How the response must be rewritten.
    pub translation: Translation,
    /// Headers for the client's response.
    pub response_headers: Vec<(&'static str, String)>,
    /// The decision record (`UsageReport.local_route`), without its timing.
    pub record: v1::LocalRoute,
}

/// The sidecar's answer for this request, if the plan covers it.
pub fn route(local: &Local, plugin: &Plugin, method: &str, path: &str, body: &[u8]) -> Option<Routed> {
    let plan = &local.plan;
    if method != "POST" || body.is_empty() || !plan.paths.iter().any(|p| p == path) {
        return None;
    }
    let parsed = request::parse(body, plan.include_history).ok()?;
    let cfg = &plugin.config;
    let (model, summary, routed) = if plan.auto_models.contains(&parsed.model) {
        let verdict = local.planned.decide(&parsed.text);
        let (decision, model) = match verdict.decision {
            Some((d, m)) => (Some(d.to_string()), m.to_string()),
            None => (None, cfg.default_model.clone()),
        };
        let summary = Summary {
            model: model.clone(),
            signals: verdict.signals,
            decision,
            confidence: Some(verdict.confidence),
            ..Summary::default()
        };
        (model, summary, true)
    } else {
        // A concrete model: itself, if enabled; an unknown one gets the sidecar's 400.
        cfg.models.get(&parsed.model)?;
        let summary = Summary {
            model: parsed.model.clone(),
            ..Summary::default()
        };
        (parsed.model.clone(), summary, false)
    };
    let upstream_id = cfg.models.get(&model)?;
    // As the engine: a routed request's `model` is always spliced, a concrete one's only when
    // the provider's id differs.
    let mut new_body = (routed || *upstream_id != model).then(|| parsed.with_model(body, upstream_id));
    let mut translation = Translation::None;
    // Only a stream is asked for usage: the check spares every other body a second JSON parse.
    if cfg.response_accounting
        && parsed.stream
        && let Some(b) = llmsoup_translate::stream_usage::ask_for_usage(new_body.as_deref().unwrap_or(body))
    {
        new_body = Some(b);
        translation = Translation::StripUsageChunk;
    }
    let mut set_headers = vec![(MODEL_HEADER.to_string(), model.clone())];
    if let Some(h) = &cfg.route_header {
        set_headers.push((h.clone(), model.clone()));
    }
    let record = v1::LocalRoute {
        decision: summary.decision.clone().unwrap_or_default(),
        confidence: summary.confidence.unwrap_or_default(),
        signals: summary.signals.clone(),
        prompt_tokens: parsed.prompt_tokens,
        latency_us: 0,
        // Only a decision log keeps these: without one, no hashing on the request path.
        prompt_sha256: if plan.decision_log && !plan.include_prompt {
            hex::encode(auth::hash(parsed.text.as_bytes()))
        } else {
            String::new()
        },
        prompt: (plan.decision_log && plan.include_prompt).then(|| parsed.text.clone()),
        routed,
    };
    Some(Routed {
        decision: record.decision.clone(),
        response_headers: summary.response_headers(),
        model,
        set_headers,
        body: new_body,
        translation,
        record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmsoup_contract::plugin_config::encode_plan;
    use llmsoup_contract::v1::rule_node;

    fn plugin(accounting: bool) -> Plugin {
        let plan = v1::LocalPlan {
            keyword_rules: vec![v1::KeywordRule {
                name: "code".into(),
                keywords: vec!["python".into()],
                ..Default::default()
            }],
            decisions: vec![v1::LocalDecision {
                name: "coding".into(),
                priority: 20,
                rule: Some(v1::RuleNode {
                    node: Some(rule_node::Node::Leaf(v1::RuleLeaf {
                        kind: "keyword".into(),
                        name: "code".into(),
                    })),
                }),
                model: "coder".into(),
                ..Default::default()
            }],
            auto_models: vec!["auto".into()],
            paths: vec!["/v1/chat/completions".into()],
            decision_log: accounting,
            ..Default::default()
        };
        let json = serde_json::json!({
            "sidecar_cluster": "llmsoup_sidecar",
            "models": {"small": "small-v1", "coder": "coder-v2", "writer": "writer"},
            "default_model": "small",
            "response_accounting": accounting,
            "local_plan": encode_plan(&plan),
        });
        Plugin::parse(json.to_string().as_bytes()).unwrap()
    }

    fn go(p: &Plugin, path: &str, body: &str) -> Option<Routed> {
        let local = Local::new(p).unwrap().unwrap();
        route(&local, p, "POST", path, body.as_bytes())
    }

    #[test]
    fn routes_like_the_engine_and_defers_the_rest() {
        let p = plugin(true);
        let r = go(
            &p,
            "/v1/chat/completions",
            r#"{"model":"auto","messages":[{"role":"user","content":"python?"}]}"#,
        )
        .unwrap();
        assert_eq!((r.model.as_str(), r.decision.as_str()), ("coder", "coding"));
        assert_eq!(
            String::from_utf8(r.body.unwrap()).unwrap(),
            r#"{"model":"coder-v2","messages":[{"role":"user","content":"python?"}]}"#
        );
        assert_eq!(r.set_headers, [("x-llmsoup-model".to_string(), "coder".to_string())]);
        let h: Vec<(&str, &str)> = r.response_headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            h,
            [
                ("x-llmsoup-model", "coder"),
                ("x-llmsoup-decision", "coding"),
                ("x-llmsoup-signals", "keyword:code"),
                ("x-llmsoup-confidence", "1.000")
            ]
        );
        assert!(r.record.routed && r.record.prompt.is_none() && r.record.prompt_sha256.len() == 64);
        // Without a decision log the record carries no prompt hash (none is computed).
        let r = go(
            &plugin(false),
            "/v1/chat/completions",
            r#"{"model":"auto","messages":[{"role":"user","content":"python?"}]}"#,
        )
        .unwrap();
        assert!(r.record.prompt.is_none() && r.record.prompt_sha256.is_empty());

        // No decision: the default model, confidence 0, no decision header.
        let r = go(
            &p,
            "/v1/chat/completions",
            r#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        assert_eq!((r.model.as_str(), r.decision.as_str()), ("small", ""));
        assert_eq!(r.response_headers.len(), 2);

        // A concrete model whose id is its name: no body change.
        let r = go(&p, "/v1/chat/completions", r#"{"model":"writer","messages":[]}"#).unwrap();
        assert_eq!((r.body, r.record.routed), (None, false));

        // A stream asks for usage, as the sidecar does when it accounts responses.
        let s = r#"{"model":"auto","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(
            go(&p, "/v1/chat/completions", s).unwrap().translation,
            Translation::StripUsageChunk
        );
        assert_eq!(
            go(&plugin(false), "/v1/chat/completions", s).unwrap().translation,
            Translation::None
        );

        // The sidecar answers everything else.
        for (path, body) in [
            ("/v1/messages", r#"{"model":"auto","messages":[]}"#),
            ("/v1/chat/completions", r#"{"model":"nope","messages":[]}"#),
            ("/v1/chat/completions", r#"{"model":"auto","model":"auto"}"#),
            ("/v1/chat/completions", "not json"),
            ("/v1/chat/completions", ""),
        ] {
            assert!(go(&p, path, body).is_none(), "{path} {body}");
        }
    }
}
