//! Quality learned from feedback (`POST /v1/feedback`): per decision and model, an exponentially
//! decayed weighted mean of the scores clients sent, blended with the configured
//! `models[].quality`. The `cost` algorithm reads the blend instead of the configured value, so
//! bad answers from the cheap model push a decision to a better one.
//!
//! One [`QualityEstimates`] value is created at `serve`, shared by the engines it builds (it
//! outlives reloads) and rebuilt at start from the feedback lines of the decision log (each
//! carries its decision, model, score and time, so replaying them gives the same decayed state).
//! Bounded: at most [`MAX_ENTRIES`] (decision, model) pairs. The lock is never held across an
//! await.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::config::FeedbackConfig;

/// (decision, model) pairs kept at most; past it, the pair updated longest ago is forgotten.
pub const MAX_ENTRIES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Estimate {
    /// Σ wᵢ·scoreᵢ, decayed to `at`.
    weighted: f64,
    /// Σ wᵢ, decayed to `at`.
    weight: f64,
    /// Unix seconds of the last update.
    at: f64,
    /// Feedback scores received (not decayed).
    count: u64,
}

impl Estimate {
    fn decayed(&self, now: f64, half_life_s: f64) -> (f64, f64) {
        let age = (now - self.at).max(0.0);
        let f = 0.5f64.powf(age / half_life_s);
        (self.weighted * f, self.weight * f)
    }
}

/// One (decision, model) estimate, for `/v1/backends`.
#[derive(Debug, Clone, Serialize)]
pub struct QualitySnapshot {
    /// Feedback scores received.
    pub feedback: u64,
    /// Their decayed total weight (how much they count now).
    pub weight: f64,
    /// Their decayed mean score.
    pub mean_score: f64,
}

/// Feedback-learned quality per (decision, model).
#[derive(Debug, Default)]
pub struct QualityEstimates {
    /// decision → model → estimate (nested so lookups borrow `&str`).
    entries: Mutex<HashMap<String, HashMap<String, Estimate>>>,
}

impl QualityEstimates {
    /// Adds one feedback score (0–1) for `model`'s answer under `decision`, received at `at`
    /// (Unix seconds). Returns the decayed mean score after it.
    pub fn record(&self, decision: &str, model: &str, score: f64, at: f64, cfg: &FeedbackConfig) -> f64 {
        let half_life = cfg.half_life_s.max(1) as f64;
        let Ok(mut entries) = self.entries.lock() else {
            return score;
        };
        let known = entries.get(decision).is_some_and(|m| m.contains_key(model));
        if !known && entries.values().map(HashMap::len).sum::<usize>() >= MAX_ENTRIES {
            let oldest = entries
                .iter()
                .flat_map(|(d, ms)| ms.iter().map(move |(m, e)| (d, m, e.at)))
                .min_by(|a, b| a.2.total_cmp(&b.2))
                .map(|(d, m, _)| (d.clone(), m.clone()));
            if let Some((d, m)) = oldest
                && let Some(ms) = entries.get_mut(&d)
            {
                ms.remove(&m);
                if ms.is_empty() {
                    entries.remove(&d);
                }
            }
        }
        let e = entries
            .entry(decision.to_string())
            .or_default()
            .entry(model.to_string())
            .or_insert(Estimate {
                weighted: 0.0,
                weight: 0.0,
                at,
                count: 0,
            });
        // Lines replayed from a log may be older than the last update: decay them instead.
        let (weighted, weight, when) = if at >= e.at {
            let (w, s) = e.decayed(at, half_life);
            (w + score, s + 1.0, at)
        } else {
            let f = 0.5f64.powf((e.at - at) / half_life);
            (e.weighted + score * f, e.weight + f, e.at)
        };
        *e = Estimate {
            weighted,
            weight,
            at: when,
            count: e.count + 1,
        };
        weighted / weight
    }

    /// `prior` (the configured quality) blended with the decayed feedback for (decision, model)
    /// at `now`; `prior` itself without feedback.
    pub fn quality(&self, decision: &str, model: &str, prior: f64, now: f64, cfg: &FeedbackConfig) -> f64 {
        let Ok(entries) = self.entries.lock() else {
            return prior;
        };
        let Some(e) = entries.get(decision).and_then(|m| m.get(model)).copied() else {
            return prior;
        };
        drop(entries);
        let (weighted, weight) = e.decayed(now, cfg.half_life_s.max(1) as f64);
        (cfg.prior_weight * prior + weighted) / (cfg.prior_weight + weight)
    }

    /// Whether any feedback was recorded for `decision`.
    pub fn has_feedback(&self, decision: &str) -> bool {
        self.entries.lock().is_ok_and(|e| e.contains_key(decision))
    }

    /// Every estimate at `now`, by model then decision.
    pub fn snapshot(&self, now: f64, cfg: &FeedbackConfig) -> HashMap<String, HashMap<String, QualitySnapshot>> {
        let Ok(entries) = self.entries.lock() else {
            return HashMap::new();
        };
        let mut out: HashMap<String, HashMap<String, QualitySnapshot>> = HashMap::new();
        for (decision, model, e) in entries
            .iter()
            .flat_map(|(d, ms)| ms.iter().map(move |(m, e)| (d, m, e)))
        {
            let (weighted, weight) = e.decayed(now, cfg.half_life_s.max(1) as f64);
            out.entry(model.clone()).or_default().insert(
                decision.clone(),
                QualitySnapshot {
                    feedback: e.count,
                    weight,
                    mean_score: if weight > 0.0 { weighted / weight } else { 0.0 },
                },
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> FeedbackConfig {
        FeedbackConfig {
            prior_weight: 4.0,
            half_life_s: 100,
        }
    }

    #[test]
    fn feedback_moves_the_estimate_from_the_prior() {
        let q = QualityEstimates::default();
        let c = cfg();
        assert_eq!(q.quality("d", "m", 0.8, 0.0, &c), 0.8);
        for _ in 0..4 {
            q.record("d", "m", 0.0, 0.0, &c);
        }
        // (4·0.8 + 4·0) / (4 + 4)
        assert!((q.quality("d", "m", 0.8, 0.0, &c) - 0.4).abs() < 1e-12);
        // Other decisions and models are untouched.
        assert_eq!(q.quality("e", "m", 0.8, 0.0, &c), 0.8);
        assert_eq!(q.quality("d", "n", 0.8, 0.0, &c), 0.8);
        assert!(q.has_feedback("d") && !q.has_feedback("e"));
    }

    #[test]
    fn old_feedback_fades_back_to_the_prior() {
        let q = QualityEstimates::default();
        let c = cfg();
        for _ in 0..4 {
            q.record("d", "m", 0.0, 0.0, &c);
        }
        // One half-life later the four scores weigh 2: (4·0.8) / (4 + 2).
        assert!((q.quality("d", "m", 0.8, 100.0, &c) - 3.2 / 6.0).abs() < 1e-12);
        assert!((q.quality("d", "m", 0.8, 100_000.0, &c) - 0.8).abs() < 1e-9);
        let snap = q.snapshot(100.0, &c);
        assert_eq!(snap["m"]["d"].feedback, 4);
        assert!((snap["m"]["d"].weight - 2.0).abs() < 1e-12);
    }

    #[test]
    fn replay_order_does_not_matter() {
        let c = cfg();
        let a = QualityEstimates::default();
        let b = QualityEstimates::default();
        let lines = [(0.0, 1.0), (50.0, 0.0), (120.0, 0.5)];
        for (at, s) in lines {
            a.record("d", "m", s, at, &c);
        }
        for (at, s) in lines.iter().rev() {
            b.record("d", "m", *s, *at, &c);
        }
        let (x, y) = (a.quality("d", "m", 0.7, 200.0, &c), b.quality("d", "m", 0.7, 200.0, &c));
        assert!((x - y).abs() < 1e-12, "{x} {y}");
    }

    #[test]
    fn entries_are_bounded() {
        let q = QualityEstimates::default();
        let c = cfg();
        for i in 0..MAX_ENTRIES + 10 {
            q.record("d", &format!("m{i}"), 1.0, i as f64, &c);
        }
        let snap = q.snapshot(0.0, &c);
        assert_eq!(snap.len(), MAX_ENTRIES);
        assert!(!snap.contains_key("m0") && snap.contains_key(&format!("m{}", MAX_ENTRIES + 9)));
    }
}
