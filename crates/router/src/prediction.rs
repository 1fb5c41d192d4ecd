//! The learned router's answer for one request: the 2PL item-response prediction that
//! `signals::difficulty` computes from the shared embedding and the request view keeps, so that
//! `classify`, `eval` and selection read it without a second pass. Its own module because both
//! `request` (which stores it) and `signals` (which computes it) use it.

/// The router's prediction for one prompt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// `b(x)`.
    pub b: f32,
    /// `a(x)` > 0.
    pub a: f32,
    /// `θ_ref`.
    pub reference: f32,
}

impl Prediction {
    /// Probability that a model of `strength` answers correctly.
    pub fn success(&self, strength: f64) -> f64 {
        sigmoid(f64::from(self.a) * (strength - f64::from(self.b)))
    }

    /// The 0–1 score: how likely a model of the reference strength is to fail.
    pub fn difficulty(&self) -> f64 {
        1.0 - self.success(f64::from(self.reference))
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}
