//! The learned router's answer for one request: the probabilities that `signals::difficulty`
//! computes from the shared embedding and the request view keeps, so that `classify`, `eval` and
//! selection read it without a second pass. Its own module because both `request` (which stores
//! it) and `signals` (which computes it) use it.

/// The router's prediction for one prompt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// Probability that the reference weak (cheap) model answers the prompt correctly.
    pub weak: f32,
    /// Probability that the reference strong model answers it correctly.
    pub strong: f32,
}

impl Prediction {
    /// The 0–1 score: the probability that the weak model fails the prompt while the strong one
    /// answers it, `P_strong · (1 − P_weak)` (the two answers taken as independent given the
    /// prompt). It is what sending the prompt to the strong model buys: low both for prompts
    /// either model gets right and for prompts neither does.
    pub fn difficulty(&self) -> f64 {
        f64::from(self.strong) * (1.0 - f64::from(self.weak))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn difficulty_is_the_strong_models_gain() {
        let p = |weak, strong| Prediction { weak, strong }.difficulty();
        assert!((p(0.2, 0.9) - 0.72).abs() < 1e-6);
        // Both right, or both wrong: nothing to gain from the strong model.
        assert!(p(0.95, 0.99) < 0.05 && p(0.05, 0.05) < 0.05);
    }
}
