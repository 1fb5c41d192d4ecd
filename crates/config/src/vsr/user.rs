//! G1': the `vllm-sr` CLI user format (`version: v0.1`): a `signals:` block, decisions, and
//! `providers.models[]` carrying their own endpoints.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_yaml::Value;

use super::prelude::{
    self as common, Auth, Cx, ModelSpec, Providers, RoutingSpec, Scope, VDecision, VListener, VPricing, VSignals,
};
use crate::{Config, ConfigError, ReasoningFamilies};

/// `providers.models[].endpoints[]`.
#[derive(Debug, Deserialize)]
struct Endpoint {
    #[serde(default)]
    name: Option<String>,
    endpoint: String,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    weight: Option<f64>,
}

/// `providers.models[]`.
#[derive(Debug, Deserialize)]
struct Model {
    name: String,
    #[serde(default)]
    endpoints: Vec<Endpoint>,
    #[serde(default)]
    access_key: Option<String>,
    #[serde(default)]
    reasoning_family: Option<String>,
    #[serde(default)]
    pricing: Option<VPricing>,
    // Metadata: accepted, no effect on routing.
    #[allow(dead_code)]
    #[serde(default)]
    param_size: Option<Value>,
    #[serde(default)]
    api_format: Option<String>,
    #[serde(default)]
    description: Option<String>,
    // Metadata: accepted, no effect on routing.
    #[allow(dead_code)]
    #[serde(default)]
    capabilities: Option<Value>,
    #[serde(default)]
    quality_score: Option<f64>,
    #[serde(default)]
    provider_model_id: Option<String>,
    // Metadata: accepted, no effect on routing.
    #[allow(dead_code)]
    #[serde(default)]
    loras: Option<Value>,
}

/// `providers`.
#[derive(Debug, Default, Deserialize)]
struct UserProviders {
    #[serde(default)]
    models: Vec<Model>,
    #[serde(default)]
    default_model: Option<String>,
    #[serde(default)]
    reasoning_families: ReasoningFamilies,
    #[serde(default)]
    default_reasoning_effort: Option<String>,
}

/// The document.
#[derive(Debug, Deserialize)]
struct User {
    // Metadata: accepted, no effect on routing.
    #[allow(dead_code)]
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    listeners: Vec<VListener>,
    #[serde(default)]
    signals: VSignals,
    #[serde(default)]
    decisions: Vec<VDecision>,
    #[serde(default)]
    providers: UserProviders,
    #[serde(default)]
    strategy: Option<String>,
    #[serde(default)]
    auto_model_name: Option<String>,
}

/// Converts a G1' document.
pub(super) fn convert(cx: &mut Cx, mut doc: Value) -> Result<Config, ConfigError> {
    if let Some(signals) = doc.get_mut("signals").and_then(Value::as_mapping_mut) {
        common::strip_unsupported_families(cx, signals, "signals", false);
    }
    if let Some(p) = doc.get_mut("providers").and_then(Value::as_mapping_mut) {
        cx.strip_unsupported(p, "providers", &["external_models"]);
    }
    let u: User = cx.typed(doc, "")?;
    let families = u.providers.reasoning_families;

    let mut providers = Providers::default();
    let mut models = Vec::new();
    for (i, m) in u.providers.models.into_iter().enumerate() {
        let at = format!("providers.models[{i}]");
        if models.iter().any(|x: &crate::ModelConfig| x.name == m.name) {
            return Err(cx.error(format!("{at}.name"), format!("duplicate model name `{}`", m.name)));
        }
        let Some(e) = m.endpoints.first() else {
            cx.warn(
                format!("{at}.endpoints"),
                format!("model `{}` has no endpoint; dropped", m.name),
            );
            continue;
        };
        if m.endpoints.len() > 1 {
            cx.warn(
                format!("{at}.endpoints"),
                "llmsoup sends each model to one provider; only the first endpoint is used",
            );
        }
        if e.weight.is_some() && m.endpoints.len() > 1 {
            cx.warn(format!("{at}.endpoints[0].weight"), common::reason("weight"));
        }
        let auth = Auth {
            key_path: m.access_key.as_ref().map(|_| format!("{at}.access_key")),
            inline: m.access_key.as_deref().is_some_and(|k| !k.is_empty()),
            ..Auth::default()
        };
        let hint = e.name.clone().unwrap_or_else(|| m.name.clone());
        let url = common::url_from_endpoint(&e.endpoint, e.protocol.as_deref());
        let provider = providers.add(cx, &hint, url, &auth, &format!("{at}.endpoints[0].endpoint"))?;
        common::warn_api_format(cx, m.api_format.as_deref(), &format!("{at}.api_format"));
        let pricing = common::pricing(cx, m.pricing, &format!("{at}.pricing"));
        models.push(common::model(
            cx,
            ModelSpec {
                name: m.name,
                provider,
                model_id: m.provider_model_id,
                pricing,
                quality: m.quality_score,
                description: m.description,
                reasoning_family: m.reasoning_family,
            },
            &families,
            &at,
        ));
    }

    let (mut signals, mut known) =
        common::convert_signals(cx, u.signals, &|family, i| format!("signals.{family}[{i}]"))?;
    let model_names: BTreeSet<String> = models.iter().map(|m| m.name.clone()).collect();
    let mut scope = Scope {
        known: &mut known,
        signals: &mut signals,
    };
    let decisions = common::convert_decisions(cx, u.decisions, "decisions", &model_names, &mut scope)?;
    let listen = common::listen(cx, u.listeners, "listeners");
    // The CLI's router defaults answer to `MoM` as well as `auto`.
    let mut auto = vec!["auto".to_string(), "MoM".to_string()];
    auto.extend(u.auto_model_name);
    common::assemble(
        cx,
        providers,
        models,
        signals,
        decisions,
        RoutingSpec {
            auto_model_names: auto,
            default_model: u.providers.default_model.map(|d| (d, "providers.default_model".into())),
            strategy: u.strategy,
            strategy_at: "strategy".into(),
            reasoning_families: families,
            default_reasoning_effort: u
                .providers
                .default_reasoning_effort
                .map(|e| (e, "providers.default_reasoning_effort".into())),
        },
        listen,
    )
}
