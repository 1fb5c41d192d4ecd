//! The wasm filter's local routing plan (`llmsoup.v1.LocalPlan`): rendered only when the filter
//! can compute, from the request body alone, exactly what the sidecar's engine would answer
//! (ARCHITECTURE.md, "Local routing in the wasm filter"). Every condition here stands for some
//! per-request state or step the filter does not have; when one fails, no plan, and every
//! request makes the Route call.

use llmsoup_config::{
    AlgorithmKind, AttachMode, Config, LocalRouting, ProviderApi, RuleNode, RuleOperator, SignalKind,
};
use llmsoup_contract::v1;

/// The client paths the filter may route locally: OpenAI Chat, forwarded natively.
pub const LOCAL_PATHS: &[&str] = &["/v1/chat/completions"];

fn rule(n: &RuleNode) -> Result<v1::RuleNode, String> {
    use v1::rule_node::Node;
    if let (Some(kind), Some(name)) = (n.kind, &n.name) {
        if kind != SignalKind::Keyword {
            return Err(format!("a decision uses a `{kind}` signal"));
        }
        return Ok(v1::RuleNode {
            node: Some(Node::Leaf(v1::RuleLeaf {
                kind: kind.as_str().into(),
                name: name.clone(),
            })),
        });
    }
    let children = n.conditions.iter().map(rule).collect::<Result<Vec<_>, _>>()?;
    // As the engine compiles it (`router::decision::compile`): OR by default, NOT of one child.
    let node = match n.operator.unwrap_or(RuleOperator::Or) {
        RuleOperator::And => Node::And(v1::RuleNodes { nodes: children }),
        RuleOperator::Or => Node::Or(v1::RuleNodes { nodes: children }),
        RuleOperator::Not => match children.into_iter().next() {
            Some(c) => Node::Not(Box::new(c)),
            None => Node::Or(v1::RuleNodes::default()),
        },
    };
    Ok(v1::RuleNode { node: Some(node) })
}

/// Says whether the wasm filter routes `config` itself and, if not, the first reason (at start,
/// on reload and from `envoy-config`): operators see why a config costs a Route call per request.
pub fn log_status(config: &Config, mode: AttachMode) {
    if mode != AttachMode::Wasm {
        return;
    }
    match local_plan(config) {
        Ok(_) => tracing::info!("local routing on: the wasm filter routes chat completions without the Route call"),
        Err(reason) => tracing::info!(%reason, "local routing off: every request makes the Route call"),
    }
}

/// The plan for `config`, or why the filter cannot route it locally.
pub fn local_plan(config: &Config) -> Result<v1::LocalPlan, String> {
    if config.gateway.local_routing == LocalRouting::Off {
        return Err("gateway.local_routing is off".into());
    }
    if config.compat.vsr_headers {
        return Err("compat.vsr_headers is on".into());
    }
    let r = &config.routing;
    if r.target_strong_share.is_some() {
        return Err("routing.target_strong_share calibrates live".into());
    }
    if !config.chains().is_empty() {
        return Err("fallback chains depend on the providers' observed health".into());
    }
    // Every model a request may reach speaks the client's API (no translation, no reasoning
    // toggles written into the body).
    for m in config.models.iter().filter(|m| m.enabled) {
        match config.provider(&m.provider) {
            // The filter asks streams for usage as the engine does for such providers.
            Some(p) if p.api == ProviderApi::Openai && p.stream_usage => {}
            _ => {
                return Err(format!(
                    "model `{}` is not served by an OpenAI provider that takes `stream_options`",
                    m.name
                ));
            }
        }
    }
    let default = config.default_model();
    if !default.enabled {
        return Err("the default model is disabled".into());
    }
    let mut decisions = Vec::with_capacity(config.decisions.len());
    for d in &config.decisions {
        let why = |what: &str| format!("decision `{}`: {what}", d.name);
        if !d.plugins.is_empty() {
            return Err(why("has plugins"));
        }
        if d.target_share.is_some() {
            return Err(why("calibrates live"));
        }
        if d.algorithm.kind != AlgorithmKind::Static {
            return Err(why("selects with a learned or observed algorithm"));
        }
        // One candidate: selection cannot depend on which models are up.
        let [model_ref] = d.model_refs.as_slice() else {
            return Err(why("has several modelRefs"));
        };
        if model_ref.lora_name.is_some() || model_ref.use_reasoning.is_some() {
            return Err(why("rewrites more than the model id"));
        }
        if !config.model(&model_ref.model).is_some_and(|m| m.enabled) {
            return Err(why("its model is disabled"));
        }
        decisions.push(v1::LocalDecision {
            name: d.name.clone(),
            priority: d.priority,
            tier: d.tier,
            rule: d.rules.as_ref().map(rule).transpose().map_err(|e| why(&e))?,
            model: model_ref.model.clone(),
        });
    }
    // The filter's regex has only the Unicode tables keyword rules need (`crates/rules`): a
    // pattern with a Unicode class escape (`\p{Greek}`) would compile here and not there, and the
    // filter would quietly make the Route call while this says local routing is on.
    if let Some(k) = config.signals.keywords.iter().find(|k| {
        k.method == llmsoup_config::KeywordMethod::Regex
            && k.keywords.iter().any(|p| p.contains("\\p") || p.contains("\\P"))
    }) {
        return Err(format!(
            "keyword rule `{}` uses a Unicode class (\\p{{..}}), which the wasm filter does not carry",
            k.name
        ));
    }
    let keyword_rules = config
        .signals
        .keywords
        .iter()
        .map(|k| v1::KeywordRule {
            name: k.name.clone(),
            operator: match k.operator {
                llmsoup_config::KeywordOperator::Or => v1::KeywordOperator::KeywordOr,
                llmsoup_config::KeywordOperator::And => v1::KeywordOperator::KeywordAnd,
                llmsoup_config::KeywordOperator::Nor => v1::KeywordOperator::KeywordNor,
            } as i32,
            keywords: k.keywords.clone(),
            regex: k.method == llmsoup_config::KeywordMethod::Regex,
            case_sensitive: k.case_sensitive,
        })
        .collect();
    Ok(v1::LocalPlan {
        keyword_rules,
        decisions,
        confidence_first: r.strategy == llmsoup_config::Strategy::Confidence,
        auto_models: r.auto_models.clone(),
        include_history: r.include_history,
        include_prompt: config.decision_log.as_ref().is_some_and(|l| l.include_prompt),
        decision_log: config.decision_log.is_some(),
        paths: LOCAL_PATHS.iter().map(|p| p.to_string()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmsoup_config::{DEFAULT_CONFIG, load_str_with_env};

    const KEYWORDS: &str = r#"
providers:
  - {name: alpha, base_url: "http://127.0.0.1:1/v1"}
  - {name: beta, base_url: "http://127.0.0.1:2/v1"}
models:
  - {name: small, provider: alpha, model_id: small-v1}
  - {name: coder, provider: beta, model_id: coder-v2}
  - {name: writer, provider: alpha}
signals:
  keywords:
    - {name: code, operator: OR, keywords: [python, "c++"]}
    - {name: poem, operator: OR, keywords: [poem, haiku]}
decisions:
  - name: coding
    priority: 20
    rules: {operator: AND, conditions: [{type: keyword, name: code}, {operator: NOT, conditions: [{type: keyword, name: poem}]}]}
    modelRefs: [{model: coder}]
  - name: poetry
    priority: 10
    rules: {type: keyword, name: poem}
    modelRefs: [{model: writer}]
routing:
  default_model: small
"#;

    fn plan(text: &str) -> Result<v1::LocalPlan, String> {
        local_plan(&load_str_with_env(text, &|_| None).unwrap())
    }

    #[test]
    fn a_keyword_config_has_a_plan_that_routes_like_it() {
        let p = plan(KEYWORDS).unwrap();
        assert_eq!(p.keyword_rules.len(), 2);
        assert_eq!(p.paths, ["/v1/chat/completions"]);
        let d: Vec<(&str, &str)> = p
            .decisions
            .iter()
            .map(|d| (d.name.as_str(), d.model.as_str()))
            .collect();
        assert_eq!(d, [("coding", "coder"), ("poetry", "writer")]);
        // It survives the plugin config's text form.
        let p =
            llmsoup_contract::plugin_config::decode_plan(&llmsoup_contract::plugin_config::encode_plan(&p)).unwrap();
        let planned = llmsoup_rules::plan::Planned::new(&p).unwrap();
        assert_eq!(planned.decide("python please").decision, Some(("coding", "coder")));
        assert_eq!(planned.decide("a python haiku").decision, Some(("poetry", "writer")));
        assert_eq!(planned.decide("hello").decision, None);
    }

    #[test]
    fn anything_the_sidecar_decides_with_state_has_no_plan() {
        let off = KEYWORDS.to_string() + "gateway: {local_routing: off}\n";
        assert!(plan(&off).unwrap_err().contains("local_routing"));
        let two = KEYWORDS.replace(
            "modelRefs: [{model: writer}]",
            "modelRefs: [{model: writer}, {model: small}]",
        );
        assert!(
            plan(&two).unwrap_err().contains("several modelRefs"),
            "{:?}",
            plan(&two)
        );
        let vsr = KEYWORDS.to_string() + "compat: {vsr_headers: true}\n";
        assert!(plan(&vsr).is_err());
        let chain = KEYWORDS.replace(
            "{name: coder, provider: beta, model_id: coder-v2}",
            "{name: coder, provider: beta, model_id: coder-v2, fallbacks: [small]}",
        );
        assert!(plan(&chain).unwrap_err().contains("fallback"));
        let unicode = KEYWORDS.replace("keywords: [poem, haiku]}", "keywords: ['\\p{Greek}+'], method: regex}");
        assert!(
            plan(&unicode).unwrap_err().contains("Unicode class"),
            "{:?}",
            plan(&unicode)
        );
        // The demo config uses model signals.
        assert!(local_plan(&load_str_with_env(DEFAULT_CONFIG, &|_| None).unwrap()).is_err());
    }
}
