//! Decision plugins: what a matched decision does to a request besides choosing its model.
//!
//! The engine compiles each decision's plugins once per config load ([`DecisionPlugins`]) and,
//! after decision and model selection, asks them for mutations: a rewritten JSON body (system
//! prompt, request parameters, reasoning toggles), request headers to add, set or remove, or a
//! local reply that never reaches the upstream (`fast_response`). The body is only parsed into a
//! tree and re-serialised when one of the body-changing steps applies; otherwise the engine keeps
//! splicing the model id into the original bytes.

pub mod cache;
pub mod fast_response;
pub mod headers;
pub mod reasoning;
pub mod request_params;
pub mod system_prompt;

use serde_json::{Map, Value};
use thiserror::Error;

use crate::config::{
    CachePlugin, FastResponsePlugin, HeaderMutationPlugin, PluginConfig, RequestParamsPlugin, SystemPromptPlugin,
};

pub use reasoning::Reasoning;

/// The client's API shape, from the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Api {
    /// OpenAI chat completions (and anything OpenAI-compatible).
    #[default]
    OpenAi,
    /// Anthropic Messages (`/v1/messages`): top-level `system`, its own response shapes.
    Anthropic,
}

impl Api {
    /// The shape a request path implies.
    pub fn from_path(path: &str) -> Self {
        let path = path.split('?').next().unwrap_or(path);
        if path.trim_end_matches('/').ends_with("/messages") {
            Api::Anthropic
        } else {
            Api::OpenAi
        }
    }
}

/// A body plugin could not apply to this request (a client error).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PluginError {
    /// The body is not a JSON object.
    #[error("the request body must be a JSON object")]
    NotAnObject,
    /// The body is not valid JSON.
    #[error("the request body is not valid JSON: {0}")]
    Json(String),
}

/// One decision's plugins, compiled for the request path.
#[derive(Debug, Clone, Default)]
pub struct DecisionPlugins {
    /// `system_prompt`, when enabled.
    pub system_prompt: Option<SystemPromptPlugin>,
    /// `header_mutation`, names lower-cased.
    pub headers: Option<HeaderMutationPlugin>,
    /// `fast_response`.
    pub fast_response: Option<FastResponsePlugin>,
    /// `request_params`.
    pub request_params: Option<RequestParamsPlugin>,
    /// `cache`, when enabled.
    pub cache: Option<CachePlugin>,
}

impl DecisionPlugins {
    /// No plugins.
    pub const NONE: DecisionPlugins = DecisionPlugins {
        system_prompt: None,
        headers: None,
        fast_response: None,
        request_params: None,
        cache: None,
    };

    /// Compiles a decision's plugin list (validation refuses duplicates; the last one wins).
    pub fn new(plugins: &[PluginConfig]) -> Self {
        let mut out = DecisionPlugins::default();
        for p in plugins {
            match p {
                PluginConfig::SystemPrompt(s) => out.system_prompt = s.enabled.then(|| s.clone()),
                PluginConfig::HeaderMutation(h) => out.headers = Some(headers::normalise(h)),
                PluginConfig::FastResponse(f) => out.fast_response = Some(f.clone()),
                PluginConfig::RequestParams(r) => out.request_params = Some(r.clone()),
                PluginConfig::Cache(c) => out.cache = c.enabled.then(|| c.clone()),
            }
        }
        out
    }

    /// Whether a body-changing plugin is configured (so the body must be parsed and rebuilt).
    pub fn changes_body(&self) -> bool {
        self.system_prompt.is_some() || self.request_params.is_some()
    }
}

/// What the body plugins did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BodyReport {
    /// The configured system prompt is now in the request.
    pub injected_system_prompt: bool,
}

/// Rewrites `body` for the upstream: the model id, then the decision's body plugins and the
/// reasoning toggle. The result is always a fresh serialisation of the edited JSON object.
pub fn rewrite_body(
    body: &[u8],
    api: Api,
    model_id: &str,
    plugins: &DecisionPlugins,
    reasoning: Option<&Reasoning>,
) -> Result<(Vec<u8>, BodyReport), PluginError> {
    let mut value: Value = serde_json::from_slice(body).map_err(|e| PluginError::Json(e.to_string()))?;
    let obj = value.as_object_mut().ok_or(PluginError::NotAnObject)?;
    let report = edit(obj, api, model_id, plugins, reasoning);
    let out = serde_json::to_vec(&value).map_err(|e| PluginError::Json(e.to_string()))?;
    Ok((out, report))
}

/// [`rewrite_body`] on an already parsed object.
pub fn edit(
    obj: &mut Map<String, Value>,
    api: Api,
    model_id: &str,
    plugins: &DecisionPlugins,
    reasoning: Option<&Reasoning>,
) -> BodyReport {
    obj.insert("model".into(), Value::String(model_id.to_string()));
    let mut report = BodyReport::default();
    if let Some(s) = &plugins.system_prompt {
        report.injected_system_prompt = system_prompt::apply(obj, api, s);
    }
    if let Some(r) = &plugins.request_params {
        request_params::apply(obj, api, r);
    }
    if let Some(r) = reasoning {
        r.apply(obj);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_from_path() {
        assert_eq!(Api::from_path("/v1/messages"), Api::Anthropic);
        assert_eq!(Api::from_path("/anthropic/v1/messages?beta=true"), Api::Anthropic);
        assert_eq!(Api::from_path("/v1/chat/completions"), Api::OpenAi);
        assert_eq!(Api::from_path(""), Api::OpenAi);
    }

    #[test]
    fn rewrite_sets_model_and_keeps_field_order() {
        let plugins = DecisionPlugins::new(&[PluginConfig::SystemPrompt(SystemPromptPlugin {
            enabled: true,
            system_prompt: "Be brief.".into(),
            mode: crate::config::SystemPromptMode::Replace,
        })]);
        let (out, report) = rewrite_body(
            br#"{"model":"auto","temperature":0.5,"messages":[{"role":"user","content":"hi"}]}"#,
            Api::OpenAi,
            "m-v1",
            &plugins,
            None,
        )
        .unwrap();
        assert!(report.injected_system_prompt);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"model":"m-v1","temperature":0.5,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"}]}"#
        );
        assert_eq!(
            rewrite_body(b"[1]", Api::OpenAi, "m", &plugins, None).unwrap_err(),
            PluginError::NotAnObject
        );
    }

    #[test]
    fn disabled_and_cache_plugins_change_nothing() {
        let p = DecisionPlugins::new(&[
            PluginConfig::SystemPrompt(SystemPromptPlugin {
                enabled: false,
                system_prompt: "x".into(),
                mode: crate::config::SystemPromptMode::Insert,
            }),
            PluginConfig::Cache(crate::config::CachePlugin::default()),
        ]);
        assert!(!p.changes_body());
        assert!(p.cache.is_some());
        assert!(p.fast_response.is_none() && p.headers.is_none());
    }
}

#[cfg(test)]
mod config_tests;
