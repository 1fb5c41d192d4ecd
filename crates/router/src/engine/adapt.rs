//! Fitting a routed request to its provider's API: translation between the client's API and the
//! provider's (`llmsoup_translate`, one module per pair), and usage asked for on OpenAI-format
//! streams whose clients did not ask, so accounting gets real tokens. The response side of both
//! is the [`Translation`] the front ends hand to `llmsoup_translate::ResponseTranslator`.

use llmsoup_contract::ApiError;
use llmsoup_contract::outcome::Translation;
use llmsoup_translate::{Dialect, stream_usage};

use crate::config::{ProviderApi, ProviderConfig};
use crate::plugins::Api;

/// How a request reaches its provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plan {
    /// The provider speaks the client's API.
    Native {
        /// The provider takes `stream_options` (`providers[].stream_usage`).
        stream_usage: bool,
    },
    /// The body is translated (`from` the client's API `to` the provider's) and the path changed.
    Translate {
        /// The client's API.
        from: Dialect,
        /// The provider's.
        to: Dialect,
        /// The provider takes `stream_options` (`providers[].stream_usage`).
        stream_usage: bool,
    },
}

impl Plan {
    /// The API the provider reads: what body plugins must write.
    pub(super) fn provider_api(self, client: Api) -> Api {
        match self {
            Plan::Native { .. } => client,
            Plan::Translate {
                to: Dialect::AnthropicMessages,
                ..
            } => Api::Anthropic,
            Plan::Translate {
                to: Dialect::OpenAiChat,
                ..
            } => Api::OpenAi,
        }
    }
}

/// The client's API, for the endpoints llmsoup can translate.
fn client_dialect(path: &str) -> Option<Dialect> {
    match path.split('?').next().unwrap_or(path).trim_end_matches('/') {
        "/v1/chat/completions" => Some(Dialect::OpenAiChat),
        "/v1/messages" => Some(Dialect::AnthropicMessages),
        _ => None,
    }
}

fn provider_dialect(p: &ProviderConfig) -> Dialect {
    match p.api {
        ProviderApi::Openai => Dialect::OpenAiChat,
        ProviderApi::Anthropic => Dialect::AnthropicMessages,
    }
}

/// How a request on `path` reaches `provider` (serving `model`): natively, translated, or not
/// at all (a 400 naming the provider: its API has no such endpoint).
pub(super) fn plan(path: &str, model: &str, provider: &ProviderConfig) -> Result<Plan, ApiError> {
    let to = provider_dialect(provider);
    let stream_usage = provider.stream_usage;
    match client_dialect(path) {
        Some(from) if from == to => Ok(Plan::Native { stream_usage }),
        Some(from) => Ok(Plan::Translate { from, to, stream_usage }),
        None if provider.api == ProviderApi::Openai => Ok(Plan::Native { stream_usage }),
        None => Err(ApiError::bad_request(
            format!(
                "The model `{}` is served by the provider `{}`, which speaks the {} API: `{}` requests cannot be sent to it.",
                llmsoup_contract::error::truncate_echo(model),
                llmsoup_contract::error::truncate_echo(&provider.name),
                to.name(),
                llmsoup_contract::error::truncate_echo(path.split('?').next().unwrap_or(path)),
            ),
            Some("model"),
            "unsupported_endpoint",
        )),
    }
}

/// The request as the provider must receive it.
#[derive(Debug, Default)]
pub(super) struct Adapted {
    /// The new body, when it changed.
    pub body: Option<Vec<u8>>,
    /// The provider's path, when it differs from the client's.
    pub path: Option<&'static str>,
    /// What the response needs on its way back.
    pub translation: Translation,
}

/// Translates `body` (the client's, already naming `model_id` or not) when the plan says so.
pub(super) fn translate(plan: Plan, body: &[u8], model_id: &str) -> Result<Option<Adapted>, ApiError> {
    let Plan::Translate { from, to, stream_usage } = plan else {
        return Ok(None);
    };
    let t = llmsoup_translate::translate_request(from, to, body, model_id, stream_usage)?;
    Ok(Some(Adapted {
        body: Some(t.body),
        path: Some(t.path),
        translation: t.translation,
    }))
}

/// For a native OpenAI Chat stream: the body asking for usage, and the translation that hides it
/// from the client again (`None` when the client asked itself, or for anything else).
pub(super) fn ask_for_usage(plan: Plan, client: Api, path: &str, body: &[u8]) -> Option<(Vec<u8>, Translation)> {
    if plan != (Plan::Native { stream_usage: true })
        || client != Api::OpenAi
        || client_dialect(path) != Some(Dialect::OpenAiChat)
    {
        return None;
    }
    stream_usage::ask_for_usage(body).map(|b| (b, Translation::StripUsageChunk))
}
