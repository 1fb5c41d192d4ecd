//! A request's fallback chain: the selected model, then the configured fallbacks
//! (`Config::fallback_chain`) that can take this request, cut to `routing.fallback.max_attempts`.
//! A selected model in a `retry-after` skip window gives its place to the first fallback that can
//! take the request (when none can, it is tried anyway). Envoy does the failing over
//! (`llmsoup_envoy`'s chain routes); the engine only says which chain.

use crate::config::{Config, DecisionConfig, ModelConfig};
use crate::request::RequestView;
use crate::selection::Backends;

/// Why a configured fallback (or a primary in a skip window) is left out of a request's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Skip {
    /// Its `capabilities.context_window` is smaller than the prompt (estimated tokens).
    ContextWindow,
    /// The request offers tools and the model has `capabilities.tools: false`.
    Tools,
    /// The request sends images and the model has `capabilities.vision: false`.
    Vision,
    /// Its `quality` is below `routing.fallback.quality_floor`.
    QualityFloor,
    /// Observed failing (the same view selection has).
    Down,
    /// Its provider answered a recent attempt 429/503 with `retry-after`, and that pause
    /// (capped by `routing.fallback.max_skip_s`) is not over.
    RetryAfter,
    /// Past `routing.fallback.max_attempts`.
    #[serde(rename = "max_attempts")]
    Attempts,
    /// Its provider speaks another API than the primary's (the body is written for that one).
    Api,
}

impl Skip {
    /// The reason, for logs and `llmsoup route`.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::ContextWindow => "context_window",
            Skip::Tools => "tools",
            Skip::Vision => "vision",
            Skip::QualityFloor => "quality_floor",
            Skip::Down => "down",
            Skip::RetryAfter => "retry_after",
            Skip::Attempts => "max_attempts",
            Skip::Api => "api",
        }
    }
}

/// The models a request may be sent to, in order, and the fallbacks left out.
#[derive(Debug, Clone)]
pub struct Chain<'c> {
    /// The model the request goes to first (the selected one, unless it is in a skip window),
    /// then its fallbacks; a single model means no fail-over.
    pub models: Vec<&'c ModelConfig>,
    /// Configured chain models this request does not use, with the reason.
    pub skipped: Vec<(&'c str, Skip)>,
}

/// One chain model a request left out, as the decision log and `llmsoup route` show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// The model.
    pub model: String,
    /// Why.
    pub reason: Skip,
}

impl Chain<'_> {
    /// The models left out, owned (for the decision log).
    pub fn skipped_owned(&self) -> Vec<Skipped> {
        self.skipped
            .iter()
            .map(|(m, why)| Skipped {
                model: m.to_string(),
                reason: *why,
            })
            .collect()
    }
}

/// Why `m` cannot take the request as a fallback, if it cannot.
fn unfit(
    config: &Config,
    backends: &Backends,
    primary: &ModelConfig,
    m: &ModelConfig,
    view: &RequestView,
) -> Option<Skip> {
    let caps = &m.capabilities;
    let format = |m: &ModelConfig| config.provider(&m.provider).map(|p| p.api);
    if format(m) != format(primary) {
        Some(Skip::Api)
    } else if caps.context_window.is_some_and(|w| w.0 < view.prompt_tokens) {
        Some(Skip::ContextWindow)
    } else if view.tools && !caps.tools {
        Some(Skip::Tools)
    } else if view.images && !caps.vision {
        Some(Skip::Vision)
    } else if let (Some(floor), Some(q)) = (config.routing.fallback.quality_floor, m.quality)
        && q < floor
    {
        Some(Skip::QualityFloor)
    } else if backends.is_down(&m.name) {
        Some(Skip::Down)
    } else if backends.is_skipped(&m.name) {
        Some(Skip::RetryAfter)
    } else {
        None
    }
}

/// The chain for a request routed to `primary` (by `decision`, when one matched).
pub fn chain<'c>(
    config: &'c Config,
    backends: &Backends,
    primary: &'c ModelConfig,
    decision: Option<&'c DecisionConfig>,
    view: &RequestView,
) -> Chain<'c> {
    let configured = config.fallback_chain(primary, decision);
    let max = config.routing.fallback.max_attempts as usize;
    let mut fits = Vec::new();
    let mut skipped = Vec::new();
    for m in configured.into_iter().skip(1) {
        match unfit(config, backends, primary, m, view) {
            Some(why) => skipped.push((m.name.as_str(), why)),
            None => fits.push(m),
        }
    }
    // A primary whose provider asked for a pause gives its place to the first usable fallback;
    // with none, it is tried anyway (the provider may answer again by now).
    let mut models = if !fits.is_empty() && backends.is_skipped(&primary.name) {
        skipped.insert(0, (primary.name.as_str(), Skip::RetryAfter));
        fits
    } else {
        let mut m = vec![primary];
        m.extend(fits);
        m
    };
    if models.len() > max {
        skipped.extend(models.drain(max..).map(|m| (m.name.as_str(), Skip::Attempts)));
    }
    Chain { models, skipped }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use crate::request::parse_request;

    const CONFIG: &str = "
providers:
  - {name: p, base_url: 'http://127.0.0.1:1/v1'}
models:
  - {name: main, provider: p, quality: 0.9, fallbacks: [tiny, notools, blind, weak]}
  - {name: tiny, provider: p, capabilities: {context_window: 10}}
  - {name: notools, provider: p, capabilities: {tools: false}}
  - {name: blind, provider: p, capabilities: {vision: false}}
  - {name: weak, provider: p, quality: 0.1}
  - {name: spare, provider: p}
routing:
  fallback: {max_attempts: 5, quality_floor: 0.5}
";

    fn names<'a>(c: &'a Chain<'a>) -> Vec<&'a str> {
        c.models.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn fallbacks_that_cannot_take_the_request_are_skipped() {
        let config = load_str(CONFIG).unwrap();
        let backends = Backends::default();
        let main = config.model("main").unwrap();
        let short = parse_request(
            br#"{"model":"main","messages":[{"role":"user","content":"hi"}]}"#,
            false,
        )
        .unwrap();
        let c = chain(&config, &backends, main, None, &short.view);
        assert_eq!(names(&c), ["main", "tiny", "notools", "blind"]);
        assert_eq!(c.skipped, [("weak", Skip::QualityFloor)]);

        let long = format!(
            r#"{{"model":"main","tools":[{{"type":"function"}}],"messages":[{{"role":"user","content":[{{"type":"text","text":"{}"}},{{"type":"image_url","image_url":{{"url":"x"}}}}]}}]}}"#,
            "word ".repeat(20)
        );
        let long = parse_request(long.as_bytes(), false).unwrap();
        let c = chain(&config, &backends, main, None, &long.view);
        assert_eq!(names(&c), ["main"]);
        let why: Vec<Skip> = c.skipped.iter().map(|(_, w)| *w).collect();
        assert_eq!(
            why,
            [Skip::ContextWindow, Skip::Tools, Skip::Vision, Skip::QualityFloor]
        );

        // Down models are skipped, and the chain is cut to max_attempts.
        for _ in 0..3 {
            backends.record("tiny", false, None, None);
        }
        let config = load_str(&CONFIG.replace("max_attempts: 5", "max_attempts: 2")).unwrap();
        let c = chain(&config, &backends, config.model("main").unwrap(), None, &short.view);
        assert_eq!(names(&c), ["main", "notools"]);
        assert_eq!(c.skipped[0], ("tiny", Skip::Down));
        assert!(c.skipped.contains(&("blind", Skip::Attempts)));
    }

    #[test]
    fn a_retry_after_window_skips_the_model_then_ends() {
        let config = load_str(CONFIG).unwrap();
        let backends = Backends::default();
        let short = parse_request(
            br#"{"model":"main","messages":[{"role":"user","content":"hi"}]}"#,
            false,
        )
        .unwrap();
        let main = config.model("main").unwrap();
        // A fallback in its window is left out.
        backends.skip("notools", std::time::Duration::from_secs(60));
        let c = chain(&config, &backends, main, None, &short.view);
        assert_eq!(names(&c), ["main", "tiny", "blind"]);
        assert!(c.skipped.contains(&("notools", Skip::RetryAfter)));
        // A primary in its window gives its place to the first usable fallback.
        backends.skip("main", std::time::Duration::from_secs(60));
        let c = chain(&config, &backends, main, None, &short.view);
        assert_eq!(names(&c), ["tiny", "blind"]);
        assert_eq!(c.skipped[0], ("main", Skip::RetryAfter));
        assert_eq!(
            serde_json::to_value(c.skipped_owned()).unwrap()[0],
            serde_json::json!({"model": "main", "reason": "retry_after"})
        );
        // With no usable fallback the primary is tried anyway.
        let spare = config.model("spare").unwrap();
        backends.skip("spare", std::time::Duration::from_secs(60));
        let c = chain(&config, &backends, spare, None, &short.view);
        assert_eq!(names(&c), ["spare"]);
        // When the window ends the model is used again.
        backends.skip("tiny", std::time::Duration::from_millis(1));
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(!backends.is_skipped("tiny"));
        assert!(backends.snapshot()["main"].skip_s.is_some_and(|s| s > 59.0));
        assert!(backends.snapshot()["tiny"].skip_s.is_none());
    }
}
