//! G2: vSR's canonical `version: v0.3` format (`providers`, `routing`, `global`).

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_yaml::Value;

use super::prelude::{
    self as common, Auth, Cx, ModelSpec, Providers, RoutingSpec, Scope, VDecision, VListener, VPricing, VSignals,
};
use crate::{Config, ConfigError, ReasoningFamilies};

/// `providers.models[].backend_refs[]`.
#[derive(Debug, Deserialize)]
struct BackendRef {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    weight: Option<f64>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    auth_header: Option<String>,
    #[serde(default)]
    auth_prefix: Option<String>,
    #[serde(default)]
    extra_headers: Option<Value>,
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    chat_path: Option<String>,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    api_key_env: Option<String>,
}

/// `providers.models[]`: how a model card is reached.
#[derive(Debug, Deserialize)]
struct ProviderModel {
    name: String,
    #[serde(default)]
    provider_model_id: Option<String>,
    #[serde(default)]
    reasoning_family: Option<String>,
    #[serde(default)]
    api_format: Option<String>,
    #[serde(default)]
    pricing: Option<VPricing>,
    #[serde(default)]
    external_model_ids: Option<Value>,
    #[serde(default)]
    reliability: Option<Value>,
    #[serde(default)]
    backend_refs: Vec<BackendRef>,
}

/// `providers.defaults`.
#[derive(Debug, Default, Deserialize)]
struct Defaults {
    #[serde(default)]
    default_model: Option<String>,
    #[serde(default)]
    default_reasoning_effort: Option<String>,
    #[serde(default)]
    reasoning_families: ReasoningFamilies,
}

/// `providers`.
#[derive(Debug, Default, Deserialize)]
struct CanonicalProviders {
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    models: Vec<ProviderModel>,
}

/// `routing.modelCards[]`: the semantic catalog.
#[derive(Debug, Deserialize)]
struct ModelCard {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    quality_score: Option<f64>,
    // Metadata: accepted, no effect on routing.
    #[allow(dead_code)]
    #[serde(default)]
    param_size: Option<Value>,
    // Metadata: accepted, no effect on routing.
    #[allow(dead_code)]
    #[serde(default)]
    context_window_size: Option<Value>,
    // Metadata: accepted, no effect on routing.
    #[allow(dead_code)]
    #[serde(default)]
    capabilities: Option<Value>,
    // Metadata: accepted, no effect on routing.
    #[allow(dead_code)]
    #[serde(default)]
    loras: Option<Value>,
    // Metadata: accepted, no effect on routing.
    #[allow(dead_code)]
    #[serde(default)]
    tags: Option<Value>,
    #[serde(default)]
    modality: Option<String>,
}

/// `routing`.
#[derive(Debug, Default, Deserialize)]
struct Routing {
    #[serde(default)]
    strategy: Option<String>,
    #[serde(default, rename = "modelCards", alias = "model_cards")]
    model_cards: Vec<ModelCard>,
    #[serde(default)]
    signals: VSignals,
    #[serde(default)]
    decisions: Vec<VDecision>,
}

/// `global.router`: only the routing gate maps onto llmsoup.
#[derive(Debug, Default, Deserialize)]
struct Router {
    #[serde(default)]
    auto_model_name: Option<String>,
    #[serde(default)]
    auto_model_names: Vec<String>,
    #[serde(default)]
    strategy: Option<String>,
}

/// The document.
#[derive(Debug, Deserialize)]
struct Canonical {
    // Metadata: accepted, no effect on routing.
    #[allow(dead_code)]
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    listeners: Vec<VListener>,
    #[serde(default)]
    providers: CanonicalProviders,
    #[serde(default)]
    routing: Routing,
}

/// Converts a G2 document.
pub(super) fn convert(cx: &mut Cx, mut doc: Value) -> Result<Config, ConfigError> {
    let mut router = Router::default();
    if let Some(map) = doc.as_mapping_mut() {
        if let Some(mut global) = map.remove("global") {
            if let Some(mut r) = global.as_mapping_mut().and_then(|g| g.remove("router")) {
                if let Some(rm) = r.as_mapping_mut() {
                    let extra: Vec<Value> = rm
                        .keys()
                        .filter(|k| !matches!(k.as_str(), Some("auto_model_name" | "auto_model_names" | "strategy")))
                        .cloned()
                        .collect();
                    for k in extra {
                        rm.remove(&k);
                        let at = common::join("global.router", k.as_str().unwrap_or_default());
                        let reason = common::reason(&at);
                        cx.warn(at, reason);
                    }
                }
                router = cx.typed(r, "global.router")?;
            }
            if let Some(g) = global.as_mapping() {
                for (k, v) in g {
                    let at = common::join("global", k.as_str().unwrap_or_default());
                    cx.warn_children(&at, v);
                }
            }
        }
        for key in ["entrypoints", "recipes"] {
            if map.remove(key).is_some() {
                cx.warn(
                    key,
                    "several routing profiles are not supported by llmsoup; only `routing` is used",
                );
            }
        }
        if let Some(r) = map.get_mut("routing").and_then(Value::as_mapping_mut) {
            if let Some(s) = r.get_mut("signals").and_then(Value::as_mapping_mut) {
                common::strip_unsupported_families(cx, s, "routing.signals", false);
            }
            cx.strip_unsupported(r, "routing", &["projections"]);
        }
    }
    let c: Canonical = cx.typed(doc, "")?;
    let families = c.providers.defaults.reasoning_families;

    let mut providers = Providers::default();
    let mut models = Vec::new();
    let cards = c.routing.model_cards;
    for (i, m) in c.providers.models.into_iter().enumerate() {
        let at = format!("providers.models[{i}]");
        if models.iter().any(|x: &crate::ModelConfig| x.name == m.name) {
            return Err(cx.error(format!("{at}.name"), format!("duplicate model name `{}`", m.name)));
        }
        let Some(b) = m.backend_refs.first() else {
            cx.warn(
                format!("{at}.backend_refs"),
                format!("model `{}` has no backend; dropped", m.name),
            );
            continue;
        };
        let bat = format!("{at}.backend_refs[0]");
        if m.backend_refs.len() > 1 {
            cx.warn(
                format!("{at}.backend_refs"),
                "llmsoup sends each model to one provider; only the first backend is used",
            );
        }
        if b.weight.is_some() && m.backend_refs.len() > 1 {
            cx.warn(format!("{bat}.weight"), common::reason("weight"));
        }
        common::warn_provider_type(cx, b.provider.as_deref(), &format!("{bat}.provider"));
        common::warn_provider_type(cx, b.kind.as_deref(), &format!("{bat}.type"));
        for (key, set) in [
            ("extra_headers", b.extra_headers.is_some()),
            ("api_version", b.api_version.is_some()),
            ("chat_path", b.chat_path.is_some()),
        ] {
            if set {
                cx.warn(format!("{bat}.{key}"), "not supported by llmsoup, ignored");
            }
        }
        let url = match (&b.base_url, &b.endpoint) {
            (Some(u), _) => u.clone(),
            (None, Some(e)) => common::url_from_endpoint(e, b.protocol.as_deref()),
            (None, None) => return Err(cx.error(bat, "a backend needs `endpoint` or `base_url`")),
        };
        let auth = Auth {
            key_path: b.api_key.as_ref().map(|_| format!("{bat}.api_key")),
            inline: b.api_key.as_deref().is_some_and(|k| !k.is_empty()),
            env: b.api_key_env.clone(),
            header: b.auth_header.clone(),
            prefix: b.auth_prefix.clone(),
        };
        let hint = b.name.clone().unwrap_or_else(|| m.name.clone());
        let provider = providers.add(cx, &hint, url, &auth, &bat)?;
        common::warn_api_format(cx, m.api_format.as_deref(), &format!("{at}.api_format"));
        if m.external_model_ids.is_some() {
            cx.warn(format!("{at}.external_model_ids"), "not supported by llmsoup, ignored");
        }
        if m.reliability.is_some() {
            cx.warn(format!("{at}.reliability"), common::reason("reliability"));
        }
        let card = cards.iter().find(|k| k.name == m.name);
        let pricing = common::pricing(cx, m.pricing, &format!("{at}.pricing"));
        models.push(common::model(
            cx,
            ModelSpec {
                name: m.name,
                provider,
                model_id: m.provider_model_id,
                pricing,
                quality: card.and_then(|k| k.quality_score),
                description: card.and_then(|k| k.description.clone()),
                reasoning_family: m.reasoning_family,
            },
            &families,
            &at,
        ));
    }
    for (i, card) in cards.iter().enumerate() {
        if card.modality.as_deref().is_some_and(|m| !matches!(m, "ar" | "text")) {
            cx.warn(
                format!("routing.modelCards[{i}].modality"),
                "llmsoup routes text chat completions only",
            );
        }
        if !models.iter().any(|m| m.name == card.name) {
            cx.warn(
                format!("routing.modelCards[{i}]"),
                format!(
                    "model `{}` has no entry in providers.models; it cannot be routed to",
                    card.name
                ),
            );
        }
    }

    let (mut signals, mut known) = common::convert_signals(cx, c.routing.signals, &|family, i| {
        format!("routing.signals.{family}[{i}]")
    })?;
    let model_names: BTreeSet<String> = models.iter().map(|m| m.name.clone()).collect();
    let mut scope = Scope {
        known: &mut known,
        signals: &mut signals,
    };
    let decisions = common::convert_decisions(cx, c.routing.decisions, "routing.decisions", &model_names, &mut scope)?;
    let listen = common::listen(cx, c.listeners, "listeners");
    let mut auto = vec![
        "auto".to_string(),
        router.auto_model_name.clone().unwrap_or_else(|| "MoM".into()),
    ];
    auto.extend(router.auto_model_names);
    let (strategy, strategy_at) = match (c.routing.strategy, router.strategy) {
        (Some(s), _) => (Some(s), "routing.strategy"),
        (None, Some(s)) => (Some(s), "global.router.strategy"),
        (None, None) => (None, "routing.strategy"),
    };
    common::assemble(
        cx,
        providers,
        models,
        signals,
        decisions,
        RoutingSpec {
            auto_model_names: auto,
            default_model: c
                .providers
                .defaults
                .default_model
                .map(|d| (d, "providers.defaults.default_model".into())),
            strategy,
            strategy_at: strategy_at.into(),
            reasoning_families: families,
            default_reasoning_effort: c
                .providers
                .defaults
                .default_reasoning_effort
                .map(|e| (e, "providers.defaults.default_reasoning_effort".into())),
        },
        listen,
    )
}
