//! Choosing among a decision's candidate models: `static` (the first), `cost` (cheapest meeting a
//! quality floor, or a quality↔price trade-off), `latency_aware` (lowest observed time to
//! first token, skipping models over their targets) and `success_target` (cheapest whose
//! predicted success on the request reaches a target, `success.rs`). Models observed failing are
//! skipped by every algorithm unless all of them are.

pub mod backends;
pub mod quality;
pub mod success;

use crate::config::{AlgorithmConfig, AlgorithmKind, Config, ModelConfig};

pub use backends::Backends;
pub use quality::QualityEstimates;
pub use success::{Estimate, Success, SuccessTrace};

fn price(m: &ModelConfig) -> f64 {
    m.pricing
        .as_ref()
        .map_or(0.0, |p| p.prompt_per_1m + p.completion_per_1m)
}

fn quality(m: &ModelConfig) -> f64 {
    m.quality.unwrap_or(0.0)
}

/// Feedback-learned quality for one decision's selection.
#[derive(Clone, Copy)]
pub struct Feedback<'a> {
    /// The estimates.
    pub quality: &'a QualityEstimates,
    /// The decision selecting.
    pub decision: &'a str,
}

/// What selection reads besides the config and the backends: learned per request or per
/// decision.
#[derive(Clone, Copy, Default)]
pub struct Inputs<'a> {
    /// Feedback-learned quality, read by `cost` instead of the configured `quality`.
    pub feedback: Option<Feedback<'a>>,
    /// The request's success prediction, read by `success_target`.
    pub success: Option<&'a Success>,
    /// Why `success.prediction` is missing, for the trace.
    pub success_error: Option<&'a str>,
}

/// A selection: the model, and what `success_target` saw.
#[derive(Debug)]
pub struct Selected<'c> {
    /// The chosen model (`None`: no enabled model among the references).
    pub model: Option<&'c ModelConfig>,
    /// `success_target`'s estimates and verdict.
    pub success: Option<SuccessTrace>,
}

/// Picks the model among `model_refs` with `algorithm`.
/// Models `backends` reports down are skipped unless all of them are.
pub fn select<'c>(
    config: &'c Config,
    backends: &Backends,
    model_refs: &[String],
    algorithm: &AlgorithmConfig,
) -> Option<&'c ModelConfig> {
    select_learned(config, backends, Inputs::default(), model_refs, algorithm).model
}

/// [`select`], with the `cost` algorithm reading the decision's feedback-learned quality (the
/// configured `quality` blended with decayed feedback scores) instead of the configured value,
/// and `success_target` reading the request's success prediction.
pub fn select_learned<'c>(
    config: &'c Config,
    backends: &Backends,
    inputs: Inputs<'_>,
    model_refs: &[String],
    algorithm: &AlgorithmConfig,
) -> Selected<'c> {
    let enabled: Vec<&ModelConfig> = model_refs
        .iter()
        .filter_map(|n| config.model(n))
        .filter(|m| m.enabled)
        .collect();
    let healthy: Vec<&ModelConfig> = enabled.iter().copied().filter(|m| !backends.is_down(&m.name)).collect();
    let candidates = if healthy.is_empty() { enabled } else { healthy };
    let model = match algorithm.kind {
        AlgorithmKind::SuccessTarget => {
            let target = algorithm.target.unwrap_or(1.0);
            let none = Success {
                prediction: None,
                reference: crate::prediction::ReferenceStrengths { weak: 0.0, strong: 1.0 },
            };
            let success = inputs.success.unwrap_or(&none);
            let error = inputs
                .success_error
                .or(inputs.success.is_none().then_some("no success prediction"));
            return match success::by_success(&candidates, target, success, error) {
                Some((m, trace)) => Selected {
                    model: Some(m),
                    success: Some(trace),
                },
                None => Selected {
                    model: None,
                    success: None,
                },
            };
        }
        AlgorithmKind::Static => candidates.first().copied(),
        AlgorithmKind::Cost => match inputs.feedback.filter(|l| l.quality.has_feedback(l.decision)) {
            Some(l) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                let fb = &config.routing.feedback;
                by_cost(&candidates, algorithm, &|m: &ModelConfig| {
                    l.quality.quality(l.decision, &m.name, quality(m), now, fb)
                })
            }
            None => by_cost(&candidates, algorithm, &quality),
        },
        AlgorithmKind::LatencyAware => by_latency(backends, &candidates, algorithm),
    };
    Selected { model, success: None }
}

fn by_cost<'c>(
    candidates: &[&'c ModelConfig],
    a: &AlgorithmConfig,
    quality: &dyn Fn(&ModelConfig) -> f64,
) -> Option<&'c ModelConfig> {
    if let Some(bias) = a.quality_bias {
        let max_price = candidates.iter().map(|m| price(m)).fold(0.0, f64::max);
        let score = |m: &ModelConfig| {
            let normalised = if max_price > 0.0 { price(m) / max_price } else { 0.0 };
            bias * quality(m) - (1.0 - bias) * normalised
        };
        // Ties keep configuration order.
        return candidates
            .iter()
            .copied()
            .rev()
            .max_by(|x, y| score(x).total_cmp(&score(y)));
    }
    let floor = a.quality_floor.unwrap_or(f64::MIN);
    let cheapest = candidates
        .iter()
        .copied()
        .filter(|m| quality(m) >= floor)
        .rev()
        .min_by(|x, y| price(x).total_cmp(&price(y)));
    // Nothing meets the floor: the best quality there is.
    cheapest.or_else(|| {
        candidates
            .iter()
            .copied()
            .rev()
            .max_by(|x, y| quality(x).total_cmp(&quality(y)))
    })
}

fn by_latency<'c>(backends: &Backends, candidates: &[&'c ModelConfig], a: &AlgorithmConfig) -> Option<&'c ModelConfig> {
    let observed: Vec<(&ModelConfig, Option<f64>, Option<f64>)> = candidates
        .iter()
        .map(|m| {
            let (ttft, tpot) = backends.latency(&m.name, a.ttft_percentile);
            (*m, ttft, tpot)
        })
        .collect();
    // Not yet observed models go first, so every candidate gets measured.
    if let Some((m, _, _)) = observed.iter().find(|(_, ttft, _)| ttft.is_none()) {
        return Some(m);
    }
    let within = |ttft: f64, tpot: Option<f64>| {
        a.ttft_target_ms.is_none_or(|t| ttft <= t) && a.tpot_target_ms.is_none_or(|t| tpot.is_none_or(|p| p <= t))
    };
    let fastest = |only_within: bool| {
        observed
            .iter()
            .filter(|(_, ttft, tpot)| !only_within || within(ttft.unwrap_or(f64::MAX), *tpot))
            .min_by(|x, y| x.1.unwrap_or(f64::MAX).total_cmp(&y.1.unwrap_or(f64::MAX)))
            .map(|(m, _, _)| *m)
    };
    let choice = fastest(true).or_else(|| fastest(false))?;
    // A model passed over for a while gets one request now and then: it may have recovered.
    let probe = observed
        .iter()
        .map(|(m, _, _)| *m)
        .find(|m| m.name != choice.name && backends.claim_probe(&m.name, backends::PROBE_AFTER));
    Some(probe.unwrap_or(choice))
}

#[cfg(test)]
mod tests;
