//! G1: vSR's flat router YAML (v0.1.0 / v0.2.0), and the G0 categories format that shares its
//! top level (its decisions are synthesised by [`super::categories`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_yaml::Value;

use super::prelude::{
    self as common, Auth, Cx, ModelSpec, Providers, RoutingSpec, Scope, VCategory, VComplexity, VContext, VDecision,
    VEmbedding, VJailbreak, VKeyword, VLanguage, VPii, VPricing, VSignals,
};
use crate::{Config, ConfigError, ReasoningFamilies};

/// `vllm_endpoints[]`.
#[derive(Debug, Deserialize)]
struct Endpoint {
    name: String,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    weight: Option<f64>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    provider_profile: Option<String>,
    #[serde(default)]
    model: Option<String>,
    /// G0: models served here.
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    health_check_path: Option<String>,
}

/// `provider_profiles.<name>`.
#[derive(Debug, Deserialize)]
struct Profile {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    base_url: Option<String>,
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
}

/// `model_config.<model>`.
#[derive(Debug, Default, Deserialize)]
struct ModelParams {
    #[serde(default)]
    reasoning_family: Option<String>,
    #[serde(default)]
    preferred_endpoints: Vec<String>,
    #[serde(default)]
    pricing: Option<VPricing>,
    // Metadata: accepted, no effect on routing.
    #[allow(dead_code)]
    #[serde(default)]
    loras: Option<Value>,
    #[serde(default)]
    access_key: Option<String>,
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
    model_id: Option<String>,
    #[serde(default)]
    provider_model_id: Option<String>,
    #[serde(default)]
    external_model_ids: Option<Value>,
    #[serde(default)]
    pii_policy: Option<Value>,
}

/// `classifier.category_model` (only the threshold maps onto llmsoup's classifier).
#[derive(Debug, Default, Deserialize)]
struct CategoryModel {
    #[serde(default)]
    threshold: Option<f32>,
}

/// `classifier`.
#[derive(Debug, Default, Deserialize)]
struct Classifier {
    #[serde(default)]
    category_model: Option<CategoryModel>,
}

/// The flat document.
#[derive(Debug, Deserialize)]
struct Flat {
    #[serde(default)]
    vllm_endpoints: Vec<Endpoint>,
    #[serde(default)]
    provider_profiles: BTreeMap<String, Profile>,
    #[serde(default)]
    model_config: BTreeMap<String, ModelParams>,
    #[serde(default)]
    default_model: Option<String>,
    #[serde(default)]
    reasoning_families: ReasoningFamilies,
    #[serde(default)]
    default_reasoning_effort: Option<String>,
    #[serde(default)]
    auto_model_name: Option<String>,
    #[serde(default)]
    strategy: Option<String>,
    #[serde(default)]
    keyword_rules: Vec<VKeyword>,
    #[serde(default)]
    embedding_rules: Vec<VEmbedding>,
    #[serde(default)]
    categories: Vec<VCategory>,
    #[serde(default)]
    language_rules: Vec<VLanguage>,
    #[serde(default)]
    context_rules: Vec<VContext>,
    #[serde(default)]
    complexity_rules: Vec<VComplexity>,
    #[serde(default)]
    jailbreak: Vec<VJailbreak>,
    #[serde(default)]
    pii: Vec<VPii>,
    #[serde(default)]
    decisions: Vec<VDecision>,
    #[serde(default)]
    classifier: Option<Classifier>,
}

/// G1 keys whose rules live under another name in the `signals:` block.
const FAMILY_KEYS: &[(&str, &str)] = &[
    ("keywords", "keyword_rules"),
    ("embeddings", "embedding_rules"),
    ("domains", "categories"),
    ("language", "language_rules"),
    ("context", "context_rules"),
    ("complexity", "complexity_rules"),
    ("jailbreak", "jailbreak"),
    ("pii", "pii"),
];

fn flat_key(family: &str) -> &str {
    FAMILY_KEYS
        .iter()
        .find(|(f, _)| *f == family)
        .map_or(family, |(_, k)| k)
}

/// Converts a G1 (or, with `categories_shape`, a G0) document.
pub(super) fn convert(cx: &mut Cx, mut doc: Value, categories_shape: bool) -> Result<Config, ConfigError> {
    let mut guard = super::categories::PromptGuard::default();
    if let Some(map) = doc.as_mapping_mut() {
        common::strip_unsupported_families(cx, map, "", true);
        // G0's global jailbreak guard blocks requests; later it only configures a model.
        if categories_shape && let Some(g) = map.remove("prompt_guard") {
            guard = cx.typed(g, "prompt_guard")?;
        }
    }
    let f: Flat = cx.typed(doc, "")?;

    // Providers: one per endpoint (deduplicated by URL and credential).
    let mut providers = Providers::default();
    // Providers are made when a model uses an endpoint, so a per-model key can stand in for
    // the endpoint's and unused endpoints make no Envoy cluster.
    let mut endpoint_target: BTreeMap<String, (String, Auth, String)> = BTreeMap::new();
    let mut endpoint_models: Vec<(String, Vec<String>)> = Vec::new();
    for (i, e) in f.vllm_endpoints.iter().enumerate() {
        let at = format!("vllm_endpoints[{i}]");
        if e.weight.is_some() && f.vllm_endpoints.len() > 1 {
            cx.warn(format!("{at}.weight"), common::reason("weight"));
        }
        if e.health_check_path.is_some() {
            cx.warn(format!("{at}.health_check_path"), common::reason("reliability"));
        }
        common::warn_provider_type(cx, e.kind.as_deref(), &format!("{at}.type"));
        let profile = match &e.provider_profile {
            Some(p) => match f.provider_profiles.get(p) {
                Some(prof) => Some((p, prof)),
                None => {
                    return Err(cx.error(
                        format!("{at}.provider_profile"),
                        format!("no provider profile `{p}` in provider_profiles"),
                    ));
                }
            },
            None => None,
        };
        let base_url = match (profile.and_then(|(_, p)| p.base_url.clone()), &e.address) {
            (Some(b), _) => b,
            (None, Some(a)) => common::url_from_address(a, e.port, e.protocol.as_deref()),
            (None, None) => {
                return Err(cx.error(
                    at,
                    "an endpoint needs `address` (or a provider profile with `base_url`)",
                ));
            }
        };
        let mut auth = Auth {
            key_path: e.api_key.as_ref().map(|_| format!("{at}.api_key")),
            inline: e.api_key.as_deref().is_some_and(|k| !k.is_empty()),
            ..Auth::default()
        };
        if let Some((pname, p)) = profile {
            let pat = format!("provider_profiles.{pname}");
            common::warn_provider_type(cx, p.kind.as_deref(), &format!("{pat}.type"));
            auth.header = p.auth_header.clone();
            auth.prefix = p.auth_prefix.clone();
            for (key, set) in [
                ("extra_headers", p.extra_headers.is_some()),
                ("api_version", p.api_version.is_some()),
                ("chat_path", p.chat_path.is_some()),
            ] {
                if set {
                    cx.warn(format!("{pat}.{key}"), "not supported by llmsoup, ignored");
                }
            }
        }
        endpoint_target.insert(e.name.clone(), (base_url, auth, at));
        let mut served = e.models.clone();
        served.extend(e.model.clone());
        endpoint_models.push((e.name.clone(), served));
    }
    for name in f.provider_profiles.keys() {
        if !f
            .vllm_endpoints
            .iter()
            .any(|e| e.provider_profile.as_deref() == Some(name))
        {
            cx.warn(format!("provider_profiles.{name}"), "not used by any endpoint; ignored");
        }
    }

    // Models: model_config entries, plus models only named by endpoints or decisions.
    let mut names: BTreeSet<String> = f.model_config.keys().cloned().collect();
    names.extend(endpoint_models.iter().flat_map(|(_, m)| m.iter().cloned()));
    if categories_shape {
        names.extend(
            f.categories
                .iter()
                .flat_map(|c| c.model_scores.iter().map(|s| s.model.clone())),
        );
    }
    names.extend(f.decisions.iter().flat_map(|d| d.model_names()));
    names.extend(f.default_model.clone());
    let mut params = f.model_config;
    let mut used = BTreeSet::new();
    let mut models = Vec::new();
    for name in names {
        let at = format!("model_config.{name}");
        let p = params.remove(&name).unwrap_or_default();
        let endpoint = if let Some((j, first)) = p.preferred_endpoints.iter().enumerate().next() {
            if p.preferred_endpoints.len() > 1 {
                cx.warn(
                    format!("{at}.preferred_endpoints"),
                    format!("llmsoup sends each model to one provider; using `{first}`"),
                );
            }
            if !endpoint_target.contains_key(first) {
                return Err(cx.error(
                    format!("{at}.preferred_endpoints[{j}]"),
                    format!("no endpoint `{first}` in vllm_endpoints"),
                ));
            }
            Some(first.clone())
        } else {
            endpoint_models
                .iter()
                .find(|(_, served)| served.contains(&name))
                .or(endpoint_models.first())
                .map(|(e, _)| e.clone())
        };
        let Some(endpoint) = endpoint else {
            return Err(cx.error(
                "vllm_endpoints",
                format!("model `{name}` has no endpoint: add one to vllm_endpoints"),
            ));
        };
        used.insert(endpoint.clone());
        let (url, endpoint_auth, endpoint_at) = endpoint_target[&endpoint].clone();
        let provider = match &p.access_key {
            Some(k) => {
                let model_auth = Auth {
                    key_path: Some(format!("{at}.access_key")),
                    inline: !k.is_empty(),
                    header: endpoint_auth.header.clone(),
                    prefix: endpoint_auth.prefix.clone(),
                    env: None,
                };
                providers.add(cx, &endpoint, url, &model_auth, &endpoint_at)?
            }
            None => providers.add(cx, &endpoint, url, &endpoint_auth, &endpoint_at)?,
        };
        common::warn_api_format(cx, p.api_format.as_deref(), &format!("{at}.api_format"));
        for (key, set) in [
            ("external_model_ids", p.external_model_ids.is_some()),
            ("pii_policy", p.pii_policy.is_some()),
        ] {
            if set {
                cx.warn(format!("{at}.{key}"), "not supported by llmsoup, ignored");
            }
        }
        let pricing = common::pricing(cx, p.pricing, &format!("{at}.pricing"));
        models.push(common::model(
            cx,
            ModelSpec {
                name: name.clone(),
                provider,
                model_id: p.provider_model_id.or(p.model_id),
                pricing,
                quality: p.quality_score,
                description: p.description,
                reasoning_family: p.reasoning_family,
            },
            &f.reasoning_families,
            &at,
        ));
    }

    for (i, e) in f.vllm_endpoints.iter().enumerate() {
        if !used.contains(&e.name) {
            cx.warn(format!("vllm_endpoints[{i}]"), "no model uses this endpoint; ignored");
        }
    }

    let signals = VSignals {
        keywords: f.keyword_rules,
        embeddings: f.embedding_rules,
        domains: f.categories,
        language: f.language_rules,
        context: f.context_rules,
        complexity: f.complexity_rules,
        jailbreak: f.jailbreak,
        pii: f.pii,
    };
    // G0 needs the categories' routing knobs after the signals are converted.
    let (categories, signals) = if categories_shape {
        let (cats, rest) = super::categories::split(signals);
        (Some(cats), rest)
    } else {
        for (i, c) in signals.domains.iter().enumerate() {
            if !c.model_scores.is_empty() {
                cx.warn(
                    format!("categories[{i}].model_scores"),
                    "categories are metadata once decisions exist; decisions route, model_scores are ignored",
                );
            }
        }
        (None, signals)
    };
    let (mut native_signals, mut known) =
        common::convert_signals(cx, signals, &|family, i| format!("{}[{i}]", flat_key(family)))?;
    let model_names: BTreeSet<String> = models.iter().map(|m| m.name.clone()).collect();
    let mut scope = Scope {
        known: &mut known,
        signals: &mut native_signals,
    };
    let decisions = match categories {
        Some(cats) => super::categories::decisions(cx, cats, guard, &model_names, &mut scope)?,
        None => common::convert_decisions(cx, f.decisions, "decisions", &model_names, &mut scope)?,
    };

    let auto = vec!["auto".to_string(), f.auto_model_name.unwrap_or_else(|| "MoM".into())];
    let mut config = common::assemble(
        cx,
        providers,
        models,
        native_signals,
        decisions,
        RoutingSpec {
            auto_model_names: auto,
            default_model: f.default_model.map(|d| (d, "default_model".into())),
            strategy: f.strategy,
            strategy_at: "strategy".into(),
            reasoning_families: f.reasoning_families,
            default_reasoning_effort: f
                .default_reasoning_effort
                .map(|e| (e, "default_reasoning_effort".into())),
        },
        None,
    )?;
    if let Some(t) = f.classifier.and_then(|c| c.category_model).and_then(|m| m.threshold) {
        if (0.0..=1.0).contains(&t) {
            config.classifier.threshold = t;
        } else {
            return Err(cx.error(
                "classifier.category_model.threshold",
                "a probability is between 0 and 1",
            ));
        }
    }
    Ok(config)
}
