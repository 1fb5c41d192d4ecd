//! The Rasch model (one-parameter item response theory) that puts models on one strength scale:
//!
//! ```text
//! P(model m answers question q) = σ(θ_m − b_q)
//! ```
//!
//! `θ_m` is the model's strength, `b_q` the question's difficulty. θ = 0 is a model that answers
//! an average question of the fitted set half the time; one unit more multiplies its odds by e.
//! Used by `make fit-strengths` (the committed default `models[].strength`) and by `make
//! train-router`, which refits it without the held-out source to check the router's success
//! estimate for models it was not trained on.
//!
//! Fit: joint maximum likelihood, alternating one Newton step per model and one per question,
//! with Gaussian priors (θ ~ N(0, 3²), b ~ N(0, 2²): a question every model got right or wrong
//! would otherwise run off to ±∞), a fixed number of rounds from zero, no sampling: the output
//! is the same on every run. Missing outcomes (a model without an answer) are skipped.

/// Newton rounds (the fit has converged to 1e-9 long before).
pub const ROUNDS: usize = 200;
/// Prior precision (1/σ²) of a model's strength.
const THETA_PRECISION: f64 = 1.0 / 9.0;
/// Prior precision (1/σ²) of a question's difficulty.
const B_PRECISION: f64 = 1.0 / 4.0;

/// One question's outcomes, per model: `Some(correct)` or `None` (no answer).
pub type Row = Vec<Option<bool>>;

/// The logistic function.
pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// A fitted Rasch model.
#[derive(Debug, Clone, PartialEq)]
pub struct Rasch {
    /// Strength per model (column order of the rows).
    pub theta: Vec<f64>,
    /// Difficulty per question (row order).
    pub b: Vec<f64>,
}

/// Fits strengths for `models` models and difficulties for `rows` questions.
pub fn fit(models: usize, rows: &[Row]) -> Rasch {
    let (mut theta, mut b) = (vec![0.0; models], vec![0.0; rows.len()]);
    for _ in 0..ROUNDS {
        for (m, t) in theta.iter_mut().enumerate() {
            let (mut grad, mut hess) = (-THETA_PRECISION * *t, THETA_PRECISION);
            for (row, bq) in rows.iter().zip(&b) {
                if let Some(y) = row[m] {
                    let p = sigmoid(*t - bq);
                    grad += f64::from(u8::from(y)) - p;
                    hess += p * (1.0 - p);
                }
            }
            *t += grad / hess;
        }
        for (row, bq) in rows.iter().zip(b.iter_mut()) {
            let (mut grad, mut hess) = (-B_PRECISION * *bq, B_PRECISION);
            for (y, t) in row.iter().zip(&theta) {
                if let Some(y) = y {
                    let p = sigmoid(t - *bq);
                    // d/db of the log-likelihood: −(y − p).
                    grad -= f64::from(u8::from(*y)) - p;
                    hess += p * (1.0 - p);
                }
            }
            *bq += grad / hess;
        }
    }
    Rasch { theta, b }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_models_by_how_often_they_are_right() {
        // Model 0 answers 1 of 4 questions, model 1 answers 3, model 2 all four; model 2 has no
        // answer for the last question (skipped, not counted as wrong).
        let rows: Vec<Row> = vec![
            vec![Some(true), Some(true), Some(true)],
            vec![Some(false), Some(true), Some(true)],
            vec![Some(false), Some(true), Some(true)],
            vec![Some(false), Some(false), None],
        ];
        let r = fit(3, &rows);
        assert!(r.theta[0] < r.theta[1] && r.theta[1] < r.theta[2], "{:?}", r.theta);
        // The question everyone answered is the easiest.
        assert!(r.b[0] < r.b[1] && r.b[0] < r.b[3], "{:?}", r.b);
        // Deterministic.
        assert_eq!(r, fit(3, &rows));
    }
}
