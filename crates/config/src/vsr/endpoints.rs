//! vSR endpoints, provider profiles and backends as native providers; models; the assembled
//! native config.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::common::{Cx, sanitize};
use super::decisions::effort;
use crate::{
    ConfigError, CredentialsConfig, DecisionConfig, ModelConfig, ModelRef, Pricing, ProviderApi, ProviderConfig,
    SignalsConfig,
};

/// vSR `pricing`.
#[derive(Debug, Deserialize)]
pub(super) struct VPricing {
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    prompt_per_1m: Option<f64>,
    #[serde(default)]
    completion_per_1m: Option<f64>,
    #[serde(default)]
    cached_input_per_1m: Option<f64>,
    #[serde(default)]
    cache_write_per_1m: Option<f64>,
}

/// Native pricing (same per-1M units; llmsoup assumes USD).
pub(super) fn pricing(cx: &mut Cx, p: Option<VPricing>, at: &str) -> Option<Pricing> {
    let p = p?;
    if let Some(c) = p.currency.as_deref()
        && !c.eq_ignore_ascii_case("usd")
    {
        cx.warn(
            format!("{at}.currency"),
            format!("llmsoup reports costs in USD; `{c}` prices are used as they are"),
        );
    }
    if p.cache_write_per_1m.is_some() {
        cx.warn(format!("{at}.cache_write_per_1m"), "not supported by llmsoup, ignored");
    }
    Some(Pricing {
        prompt_per_1m: p.prompt_per_1m.unwrap_or(0.0),
        completion_per_1m: p.completion_per_1m.unwrap_or(0.0),
        cached_prompt_per_1m: p.cached_input_per_1m,
    })
}

/// Native providers built up from vSR endpoints, one per distinct base URL and credential.
#[derive(Debug, Default)]
pub(super) struct Providers {
    pub(super) list: Vec<ProviderConfig>,
}

/// How Envoy authenticates to a provider, as vSR wrote it.
#[derive(Debug, Default, Clone)]
pub(super) struct Auth {
    /// Source path of the key field (for the inline-secret warning and `${VAR}` detection).
    pub(super) key_path: Option<String>,
    /// Whether a key was written inline.
    pub(super) inline: bool,
    /// `api_key_env`.
    pub(super) env: Option<String>,
    pub(super) header: Option<String>,
    pub(super) prefix: Option<String>,
}

impl Providers {
    /// Adds (or reuses) a provider for `base_url` and returns its name; `at` is the source path
    /// errors and warnings point at.
    pub(super) fn add(
        &mut self,
        cx: &mut Cx,
        hint: &str,
        base_url: String,
        auth: &Auth,
        at: &str,
    ) -> Result<String, ConfigError> {
        let env = auth
            .env
            .clone()
            .or_else(|| auth.key_path.as_deref().and_then(|p| cx.env_ref(p)));
        if env.is_none()
            && auth.inline
            && let Some(p) = &auth.key_path
        {
            cx.warn(
                p.clone(),
                "inline API keys are not copied into llmsoup's config: Envoy reads provider keys from its environment or a file (set `api_key: ${VAR}` or `api_key_env`)",
            );
        }
        let credentials = env.map(|env| CredentialsConfig {
            env: Some(env),
            file: None,
            header: Some(auth.header.clone().unwrap_or_else(|| "authorization".into())),
            prefix: Some(auth.prefix.clone().unwrap_or_else(|| "Bearer ".into())),
        });
        let candidate = ProviderConfig {
            name: String::new(),
            api: ProviderApi::Openai,
            base_url,
            credentials,
            connect_timeout_ms: 5_000,
            outlier_detection: Default::default(),
            circuit_breakers: Default::default(),
            stream_usage: true,
        };
        if let Err(m) = candidate.endpoint() {
            return Err(cx.error(at, m));
        }
        let same = |p: &ProviderConfig| {
            p.base_url == candidate.base_url
                && match (&p.credentials, &candidate.credentials) {
                    (None, None) => true,
                    (Some(a), Some(b)) => a.env == b.env && a.header == b.header && a.prefix == b.prefix,
                    _ => false,
                }
        };
        if let Some(p) = self.list.iter().find(|p| same(p)) {
            return Ok(p.name.clone());
        }
        let base = sanitize(hint);
        let mut name = base.clone();
        let mut n = 2;
        while self.list.iter().any(|p| p.name == name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        self.list.push(ProviderConfig {
            name: name.clone(),
            ..candidate
        });
        Ok(name)
    }
}

/// `scheme://host:port/v1` from vSR's address / port / protocol.
pub(super) fn url_from_address(address: &str, port: Option<u16>, protocol: Option<&str>) -> String {
    // Some configs write the scheme into the address (`address: https://host`).
    let (scheme, address) = match address.trim().split_once("://") {
        Some((scheme, rest)) => (scheme, rest.trim_end_matches('/')),
        None => (protocol.unwrap_or("http"), address.trim()),
    };
    let host = if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]")
    } else {
        address.to_string()
    };
    match port {
        Some(p) => format!("{scheme}://{host}:{p}/v1"),
        None => format!("{scheme}://{host}/v1"),
    }
}

/// `scheme://host:port[/path]` from vSR's `endpoint: host:port[/path]`; a bare host:port gets
/// `/v1`, since vSR appends the OpenAI `/v1/chat/completions` path to it.
pub(super) fn url_from_endpoint(endpoint: &str, protocol: Option<&str>) -> String {
    let e = endpoint.trim().trim_end_matches('/');
    let with_scheme = if e.contains("://") {
        e.to_string()
    } else {
        format!("{}://{e}", protocol.unwrap_or("http"))
    };
    let after_scheme = with_scheme.split_once("://").map_or("", |(_, rest)| rest);
    if after_scheme.contains('/') {
        with_scheme
    } else {
        format!("{with_scheme}/v1")
    }
}

/// vSR's provider types llmsoup talks to as OpenAI-compatible without a warning.
pub(super) fn warn_provider_type(cx: &mut Cx, kind: Option<&str>, at: &str) {
    if let Some(t) = kind
        && !matches!(t, "openai" | "vllm" | "chat" | "openai-compatible" | "ollama" | "")
    {
        cx.warn(
            at,
            format!("provider type `{t}`: llmsoup speaks the OpenAI chat-completions protocol only; make sure the base_url serves it"),
        );
    }
}

/// Warns for an `api_format` other than OpenAI.
pub(super) fn warn_api_format(cx: &mut Cx, format: Option<&str>, at: &str) {
    if let Some(f) = format
        && f != "openai"
    {
        cx.warn(
            at,
            format!("api_format `{f}` is not supported: llmsoup sends OpenAI chat-completions requests to this model"),
        );
    }
}

/// A native model.
pub(super) struct ModelSpec {
    pub(super) name: String,
    pub(super) provider: String,
    pub(super) model_id: Option<String>,
    pub(super) pricing: Option<Pricing>,
    pub(super) quality: Option<f64>,
    pub(super) description: Option<String>,
    pub(super) reasoning_family: Option<String>,
}

/// Builds a native model; a reasoning family that is not configured is warned about and dropped.
pub(super) fn model(
    cx: &mut Cx,
    spec: ModelSpec,
    families: &BTreeMap<String, crate::ReasoningFamily>,
    at: &str,
) -> ModelConfig {
    let reasoning_family = match spec.reasoning_family {
        Some(f) if !families.contains_key(&f) => {
            cx.warn(
                format!("{at}.reasoning_family"),
                format!("no reasoning family `{f}` is configured; ignored"),
            );
            None
        }
        other => other,
    };
    let quality = match spec.quality {
        Some(q) if !(0.0..=1.0).contains(&q) => {
            cx.warn(
                format!("{at}.quality_score"),
                "a quality score is between 0 and 1; ignored",
            );
            None
        }
        other => other,
    };
    ModelConfig {
        name: spec.name,
        provider: spec.provider,
        model_id: spec.model_id,
        pricing: spec.pricing,
        quality,
        strength: None,
        tier: None,
        enabled: true,
        description: spec.description,
        reasoning_family,
        fallbacks: Vec::new(),
        capabilities: Default::default(),
    }
}

/// Routing-level settings shared by all shapes.
pub(super) struct RoutingSpec {
    pub(super) auto_model_names: Vec<String>,
    pub(super) default_model: Option<(String, String)>,
    pub(super) strategy: Option<String>,
    pub(super) strategy_at: String,
    pub(super) reasoning_families: BTreeMap<String, crate::ReasoningFamily>,
    pub(super) default_reasoning_effort: Option<(String, String)>,
}

/// Assembles the native config from converted parts.
pub(super) fn assemble(
    cx: &mut Cx,
    providers: Providers,
    models: Vec<ModelConfig>,
    signals: SignalsConfig,
    decisions: Vec<DecisionConfig>,
    r: RoutingSpec,
    listen: Option<String>,
) -> Result<crate::Config, ConfigError> {
    use crate::{Config, RoutingConfig, Strategy};
    let mut routing = RoutingConfig {
        auto_models: Vec::new(),
        ..RoutingConfig::default()
    };
    for n in r.auto_model_names {
        if !routing.auto_models.contains(&n) {
            routing.auto_models.push(n);
        }
    }
    if let Some((d, at)) = r.default_model {
        if models.iter().any(|m| m.name == d) {
            routing.default_model = Some(d);
        } else {
            cx.warn(
                at,
                format!("default model `{d}` has no provider binding in this file; the first model is the default"),
            );
        }
    }
    routing.strategy = match r.strategy.as_deref() {
        None | Some("priority") => Strategy::Priority,
        Some("confidence") => Strategy::Confidence,
        Some(other) => {
            return Err(cx.error(
                r.strategy_at,
                format!("unknown strategy `{other}` (expected priority or confidence)"),
            ));
        }
    };
    routing.reasoning_families = r.reasoning_families;
    if let Some((e, at)) = r.default_reasoning_effort {
        routing.default_reasoning_effort = effort(cx, Some(&e), &at);
    }
    if models.is_empty() {
        return Err(cx.error(
            "",
            "no model is bound to an endpoint: llmsoup needs at least one routable model",
        ));
    }
    let fallback = routing.default_model.clone().unwrap_or_else(|| models[0].name.clone());
    let mut decisions = decisions;
    for d in decisions.iter_mut().filter(|d| d.model_refs.is_empty()) {
        d.model_refs.push(ModelRef::new(fallback.clone()));
    }
    let mut config = Config {
        server: Default::default(),
        gateway: Default::default(),
        providers: providers.list,
        models,
        signals,
        decisions,
        routing,
        auth: Default::default(),
        budgets: Default::default(),
        embedding: Default::default(),
        classifier: Default::default(),
        decision_log: None,
        compat: crate::CompatConfig {
            vsr_headers: true,
            selected_model_header: Some("x-selected-model".into()),
        },
        response_cache: Default::default(),
    };
    if let Some(l) = listen {
        config.gateway.listen = l;
    }
    Ok(config)
}

/// `listeners[0]` → `gateway.listen`; the other listeners are warned about.
#[derive(Debug, Deserialize)]
pub(super) struct VListener {
    // Metadata: accepted, no effect on routing.
    #[allow(dead_code)]
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    timeout: Option<String>,
}

/// The Envoy listen address from vSR `listeners`.
pub(super) fn listen(cx: &mut Cx, listeners: Vec<VListener>, path: &str) -> Option<String> {
    let mut it = listeners.into_iter().enumerate();
    let (_, first) = it.next()?;
    for (i, _) in it {
        cx.warn(
            format!("{path}[{i}]"),
            "llmsoup renders one Envoy listener (`gateway.listen`); only the first is used",
        );
    }
    if first.timeout.is_some() {
        cx.warn(
            format!("{path}[0].timeout"),
            "upstream timeouts are set by `llmsoup envoy-config`; ignored",
        );
    }
    let port = first.port?;
    let address = first.address.unwrap_or_else(|| "0.0.0.0".into());
    Some(if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    })
}

#[cfg(test)]
mod tests {
    use super::{url_from_address, url_from_endpoint};

    #[test]
    fn endpoint_urls() {
        assert_eq!(
            url_from_address("127.0.0.1", Some(8000), None),
            "http://127.0.0.1:8000/v1"
        );
        assert_eq!(url_from_address("::1", Some(8000), None), "http://[::1]:8000/v1");
        assert_eq!(
            url_from_address("https://api.example.com", Some(443), None),
            "https://api.example.com:443/v1"
        );
        assert_eq!(url_from_address("vllm", None, Some("https")), "https://vllm/v1");
        assert_eq!(url_from_endpoint("127.0.0.1:8000", None), "http://127.0.0.1:8000/v1");
        assert_eq!(
            url_from_endpoint("api.openai.com/v1/", Some("https")),
            "https://api.openai.com/v1"
        );
        assert_eq!(url_from_endpoint("http://host:1/openai", None), "http://host:1/openai");
    }
}
