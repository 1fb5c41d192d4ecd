//! The learned router's answer for one request: the probabilities that `signals::difficulty`
//! computes from the shared embedding and the request view keeps, so that `classify`, `eval` and
//! selection read it without a second pass. Its own module because both `request` (which stores
//! it) and `signals` (which computes it) use it.
//!
//! The head behind it (`DifficultyHead::predict`, embedding + features → [`Prediction`]) may
//! change; what routing reads is this type's interface: [`Prediction::difficulty`] for difficulty
//! rules, [`Prediction::success_at`] for `success_target` selection.
//!
//! **Success at any strength.** The head predicts the success of two reference models (a cheap
//! and a strong one) whose strengths `θ_weak < θ_strong` are known on the `models[].strength`
//! scale (a Rasch fit over 30 models, `llmsoup_config::strengths`). For one prompt, the success
//! of a model of strength θ is read off the straight line in logit space through the two
//! reference points — a two-parameter item response model (2PL) whose discrimination `a(x)` and
//! difficulty `b(x)` come from the two heads:
//!
//! ```text
//! logit P(θ) = z̄ + a·(θ − θ̄)     z̄ = (z_weak + z_strong)/2, θ̄ = (θ_weak + θ_strong)/2
//! a = max(z_strong − z_weak, 0) / (θ_strong − θ_weak)
//! ```
//!
//! It reproduces both heads at the reference strengths, interpolates between them and
//! extrapolates beyond them (saturating towards 0 and 1), and never decreases with strength: where
//! the heads disagree with the scale (the strong model predicted *less* likely to succeed than
//! the weak one, which two separately trained heads can do on a prompt neither saw the like of)
//! the slope is 0 and every strength gets the heads' mean — no model is preferred for its
//! strength on a prompt the router cannot tell apart.

/// The router's prediction for one prompt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// Probability that the reference weak (cheap) model answers the prompt correctly.
    pub weak: f32,
    /// Probability that the reference strong model answers it correctly.
    pub strong: f32,
}

/// The strengths of the reference models the prediction is about (`models[].strength` scale).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReferenceStrengths {
    /// The weak model's.
    pub weak: f64,
    /// The strong model's (above the weak one's).
    pub strong: f64,
}

impl ReferenceStrengths {
    /// The learned strengths of the reference models named `weak` and `strong`; `None` unless
    /// both are in the built-in table and the strong one is the stronger.
    pub fn learned(weak: &str, strong: &str) -> Option<Self> {
        let (w, s) = (
            crate::config::strengths::learned(weak)?,
            crate::config::strengths::learned(strong)?,
        );
        (s.strength > w.strength).then_some(ReferenceStrengths {
            weak: w.strength,
            strong: s.strength,
        })
    }
}

/// Probabilities are kept this far from 0 and 1 before taking logits.
const EDGE: f64 = 1e-6;

fn logit(p: f32) -> f64 {
    let p = f64::from(p).clamp(EDGE, 1.0 - EDGE);
    (p / (1.0 - p)).ln()
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl Prediction {
    /// The 0–1 score: the probability that the weak model fails the prompt while the strong one
    /// answers it, `P_strong · (1 − P_weak)` (the two answers taken as independent given the
    /// prompt). It is what sending the prompt to the strong model buys: low both for prompts
    /// either model gets right and for prompts neither does.
    pub fn difficulty(&self) -> f64 {
        f64::from(self.strong) * (1.0 - f64::from(self.weak))
    }

    /// The probability that a model of `strength` answers the prompt correctly (see the module
    /// documentation): non-decreasing in `strength`, equal to the heads' predictions at the
    /// reference strengths.
    pub fn success_at(&self, strength: f64, reference: ReferenceStrengths) -> f64 {
        let (zw, zs) = (logit(self.weak), logit(self.strong));
        let span = reference.strong - reference.weak;
        let slope = if span > 0.0 { (zs - zw).max(0.0) / span } else { 0.0 };
        let centre = (reference.weak + reference.strong) / 2.0;
        sigmoid((zw + zs) / 2.0 + slope * (strength - centre))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REF: ReferenceStrengths = ReferenceStrengths {
        weak: -0.5,
        strong: 1.5,
    };

    #[test]
    fn difficulty_is_the_strong_models_gain() {
        let p = |weak, strong| Prediction { weak, strong }.difficulty();
        assert!((p(0.2, 0.9) - 0.72).abs() < 1e-6);
        // Both right, or both wrong: nothing to gain from the strong model.
        assert!(p(0.95, 0.99) < 0.05 && p(0.05, 0.05) < 0.05);
    }

    #[test]
    fn success_reproduces_the_heads_at_the_reference_strengths() {
        let p = Prediction { weak: 0.3, strong: 0.8 };
        assert!((p.success_at(REF.weak, REF) - 0.3).abs() < 1e-6);
        assert!((p.success_at(REF.strong, REF) - 0.8).abs() < 1e-6);
        let mid = p.success_at(0.5, REF);
        assert!(mid > 0.3 && mid < 0.8, "{mid}");
        // Beyond the references: extrapolated on the same logit line, saturating.
        assert!(p.success_at(10.0, REF) > 0.999 && p.success_at(-10.0, REF) < 0.001);
    }

    /// Deterministic pseudo-random numbers in 0..1 (xorshift).
    fn stream(seed: u64) -> impl Iterator<Item = f64> {
        let mut x = seed.max(1);
        std::iter::from_fn(move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Some((x >> 11) as f64 / (1u64 << 53) as f64)
        })
    }

    #[test]
    fn success_never_decreases_with_strength() {
        let mut r = stream(17);
        let mut next = || r.next().unwrap_or(0.5);
        for _ in 0..10_000 {
            // Any pair of head outputs, including the strong head below the weak one and the
            // extremes 0 and 1.
            let pick = |u: f64| match (u * 10.0) as u32 {
                0 => 0.0,
                1 => 1.0,
                _ => u as f32,
            };
            let p = Prediction {
                weak: pick(next()),
                strong: pick(next()),
            };
            let reference = ReferenceStrengths {
                weak: next() * 4.0 - 3.0,
                strong: 1.0 + next() * 2.0,
            };
            let (a, b) = (next() * 12.0 - 6.0, next() * 12.0 - 6.0);
            let (lo, hi) = (a.min(b), a.max(b));
            let (s_lo, s_hi) = (p.success_at(lo, reference), p.success_at(hi, reference));
            assert!((0.0..=1.0).contains(&s_lo) && (0.0..=1.0).contains(&s_hi));
            assert!(s_lo <= s_hi, "{p:?} {reference:?}: {lo} → {s_lo}, {hi} → {s_hi}");
        }
    }

    #[test]
    fn heads_that_disagree_with_the_scale_prefer_no_strength() {
        let p = Prediction { weak: 0.7, strong: 0.5 };
        let (a, b) = (p.success_at(-3.0, REF), p.success_at(3.0, REF));
        assert_eq!(a, b);
        assert!((a - 0.6).abs() < 0.02, "{a}");
    }

    #[test]
    fn the_builtin_reference_pair_has_learned_strengths() {
        let r = ReferenceStrengths::learned("Mixtral-8x7B-Instruct-v0.1", "gpt-4o-2024-05-13").unwrap();
        assert!(r.strong > r.weak);
        assert!(ReferenceStrengths::learned("gpt-4o-2024-05-13", "Mixtral-8x7B-Instruct-v0.1").is_none());
        assert!(ReferenceStrengths::learned("nope", "gpt-4o-2024-05-13").is_none());
    }
}
