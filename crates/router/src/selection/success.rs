//! `success_target` selection: the cheapest of a decision's models whose predicted success on
//! this request reaches the target. Each candidate's success is the learned router's prediction
//! read at the model's strength ([`Prediction::success_at`]; the strength is `models[].strength`
//! or the learned default, [`crate::config::strengths::of`]). Among the models that reach the
//! target the cheapest wins (equal prices: the stronger, then configuration order); when none
//! reaches it, the strongest (equal strengths: the cheaper, then configuration order) — the best
//! chance of a correct answer is what the target asked for. Without a prediction (the embedding
//! failed) the strongest is chosen too, and the trace says why.

use serde::Serialize;

use super::price;
use crate::config::{ModelConfig, strengths};
use crate::prediction::{Prediction, ReferenceStrengths};

/// The request's prediction on the strength scale: what `success_target` reads.
#[derive(Debug, Clone, Copy)]
pub struct Success {
    /// The learned router's prediction for the request (`None`: it could not be computed).
    pub prediction: Option<Prediction>,
    /// The strengths of the models the prediction is about.
    pub reference: ReferenceStrengths,
}

/// One candidate as `success_target` saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    /// The model.
    pub model: String,
    /// Its strength (configured or learned).
    pub strength: f64,
    /// Predicted probability that it answers this request correctly.
    pub success: f64,
    /// Its price, USD per 1M prompt + completion tokens.
    pub price: f64,
}

/// What `success_target` decided, for the trace, the decision log and `route`/`classify`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SuccessTrace {
    /// The decision's target.
    pub target: f64,
    /// Every candidate still in the running (models down are skipped before), in configuration
    /// order.
    pub estimates: Vec<Estimate>,
    /// The chosen model.
    pub chosen: String,
    /// Whether it reaches the target (`false`: none did, or no prediction; the strongest was
    /// taken).
    pub reached: bool,
    /// Why there are no estimates, when the prediction failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Picks among `candidates` (non-empty for a result) for `target`.
pub fn by_success<'c>(
    candidates: &[&'c ModelConfig],
    target: f64,
    success: &Success,
    error: Option<&str>,
) -> Option<(&'c ModelConfig, SuccessTrace)> {
    // Validation makes every `success_target` model's strength known; one that is not (a config
    // built without validation) counts as the weakest possible.
    let strength = |m: &ModelConfig| strengths::of(m).unwrap_or(f64::MIN);
    let estimates: Vec<(&'c ModelConfig, Estimate)> = match success.prediction {
        Some(p) => candidates
            .iter()
            .map(|m| {
                let s = strength(m);
                let e = Estimate {
                    model: m.name.clone(),
                    strength: s,
                    success: if s == f64::MIN {
                        0.0
                    } else {
                        p.success_at(s, success.reference)
                    },
                    price: price(m),
                };
                (*m, e)
            })
            .collect(),
        None => Vec::new(),
    };
    // `min_by` keeps the first of equals, `max_by` the last: configuration order wins ties.
    let cheapest_reaching = estimates
        .iter()
        .filter(|(_, e)| e.success >= target)
        .min_by(|(_, a), (_, b)| a.price.total_cmp(&b.price).then(b.strength.total_cmp(&a.strength)))
        .map(|(m, _)| *m);
    let strongest = || {
        candidates
            .iter()
            .copied()
            .rev()
            .max_by(|a, b| strength(a).total_cmp(&strength(b)).then(price(b).total_cmp(&price(a))))
    };
    let (chosen, reached) = match cheapest_reaching {
        Some(m) => (m, true),
        None => (strongest()?, false),
    };
    let trace = SuccessTrace {
        target,
        estimates: estimates.into_iter().map(|(_, e)| e).collect(),
        chosen: chosen.name.clone(),
        reached,
        error: error.map(str::to_string),
    };
    Some((chosen, trace))
}
