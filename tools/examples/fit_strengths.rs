//! `make fit-strengths`: the learned default of `models[].strength` — every model's ability on one
//! logit scale, fitted to the per-question outcomes of 30 LLMs on MMLU-Pro questions
//! (`../shared/data/routing/mmlu-pro-outcomes`, kept out of the repository) with a Rasch model
//! (one-parameter item response theory):
//!
//! ```text
//! P(model m answers question q) = σ(θ_m − b_q)
//! ```
//!
//! `θ_m` is the model's strength, `b_q` the question's difficulty. θ = 0 is a model that answers
//! an average question of this set half the time; one unit more multiplies its odds by e. The
//! learned router (`signals::difficulty`) predicts, per prompt, the success of two reference
//! models whose strengths come from this table, and reads the success of any other strength off
//! the logit line through them (`Prediction::success_at`).
//!
//! Fit: joint maximum likelihood, alternating one Newton step per model and one per question,
//! with Gaussian priors (θ ~ N(0, 3²), b ~ N(0, 2²): a question every model got right or wrong
//! would otherwise run off to ±∞), a fixed number of rounds from zero, no sampling: the output
//! is the same on every run. Missing outcomes (a model without an answer) are skipped.
//!
//! Writes `crates/config/assets/model_strengths.json` (committed): per model its strength, its
//! accuracy and how many questions it answered.
//!
//! Usage: cargo run -p llmsoup-tools --example fit_strengths -- DATA_DIR OUT.json

use std::path::Path;

use anyhow::{Context, bail};

/// Newton rounds (the fit has converged to 1e-9 long before).
const ROUNDS: usize = 200;
/// Prior precisions (1/σ²).
const THETA_PRECISION: f64 = 1.0 / 9.0;
const B_PRECISION: f64 = 1.0 / 4.0;

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// One question's outcomes, per model: `Some(correct)` or `None` (no answer).
type Row = Vec<Option<bool>>;

/// Models (column order) and one row per question.
fn load(dir: &Path) -> anyhow::Result<(Vec<String>, Vec<Row>)> {
    let path = dir.join("outcomes.csv");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines();
    let header = lines.next().context("empty outcomes.csv")?;
    let models: Vec<String> = header.split(',').skip(1).map(str::to_string).collect();
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').skip(1).collect();
        if cells.len() != models.len() {
            bail!(
                "outcomes.csv line {}: {} cells, expected {}",
                i + 2,
                cells.len(),
                models.len()
            );
        }
        let row = cells
            .iter()
            .map(|c| match c.trim() {
                "1" => Ok(Some(true)),
                "0" => Ok(Some(false)),
                "" => Ok(None),
                other => bail!("outcomes.csv line {}: `{other}` is not 0, 1 or empty", i + 2),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        rows.push(row);
    }
    Ok((models, rows))
}

/// The Rasch fit: (θ per model, b per question).
fn fit(models: usize, rows: &[Row]) -> (Vec<f64>, Vec<f64>) {
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
                    // d/db of log-likelihood: −(y − p).
                    grad -= f64::from(u8::from(*y)) - p;
                    hess += p * (1.0 - p);
                }
            }
            *bq += grad / hess;
        }
    }
    (theta, b)
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [data, out] = args.as_slice() else {
        bail!("usage: fit_strengths DATA_DIR OUT.json");
    };
    let (models, rows) = load(Path::new(data))?;
    let (theta, b) = fit(models.len(), &rows);
    let mean_b = b.iter().sum::<f64>() / b.len() as f64;
    let mut table = serde_json::Map::new();
    let mut order: Vec<usize> = (0..models.len()).collect();
    order.sort_by(|x, y| theta[*x].total_cmp(&theta[*y]).then(models[*x].cmp(&models[*y])));
    for m in order {
        let answered: Vec<bool> = rows.iter().filter_map(|r| r[m]).collect();
        let accuracy = answered.iter().filter(|y| **y).count() as f64 / answered.len().max(1) as f64;
        println!(
            "{:<30} strength {:>7.3}  accuracy {:.3}  ({} answered)",
            models[m],
            theta[m],
            accuracy,
            answered.len()
        );
        table.insert(
            models[m].clone(),
            serde_json::json!({
                "strength": round4(theta[m]),
                "accuracy": round4(accuracy),
                "answered": answered.len(),
            }),
        );
    }
    let doc = serde_json::json!({
        "scale": "Rasch (1PL) ability in logits: P(correct) = sigmoid(strength - b_question); 0 answers an average question of the set half the time",
        "data": "MMLU-Pro per-question outcomes of 30 LLMs (TIGER-AI-Lab/MMLU-Pro eval_results; MMLU-sourced rows excluded): stemez, TheoremQA, SciBench",
        "questions": rows.len(),
        "mean_question_difficulty": round4(mean_b),
        "fit": format!("joint maximum likelihood, {ROUNDS} alternating Newton rounds, priors strength ~ N(0, 3^2), difficulty ~ N(0, 2^2) (tools/examples/fit_strengths.rs)"),
        "models": table,
    });
    let mut text = serde_json::to_string_pretty(&doc)?;
    text.push('\n');
    std::fs::write(out, text).with_context(|| format!("writing {out}"))?;
    println!("wrote {out}");
    Ok(())
}
