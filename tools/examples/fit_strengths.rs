//! `make fit-strengths`: the learned default of `models[].strength` — every model's ability on one
//! logit scale, fitted to the per-question outcomes of 30 LLMs on MMLU-Pro questions
//! (`../shared/data/routing/mmlu-pro-outcomes`, kept out of the repository) with a Rasch model
//! (one-parameter item response theory):
//!
//! ```text
//! P(model m answers question q) = σ(θ_m − b_q)
//! ```
//!
//! `θ_m` is the model's strength, `b_q` the question's difficulty (the fit: `llmsoup_tools::rasch`).
//! The learned router (`signals::difficulty`) predicts, per prompt, the success of two reference
//! models whose strengths come from this table, and reads the success of any other strength off
//! the logit line through them (`Prediction::success_at`).
//!
//! Writes `crates/config/assets/model_strengths.json` (committed): per model its strength, its
//! accuracy and how many questions it answered.
//!
//! Usage: cargo run -p llmsoup-tools --example fit_strengths -- DATA_DIR OUT.json

use std::path::Path;

use anyhow::{Context, bail};
use llmsoup_tools::rasch::{self, ROUNDS, Row};

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

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [data, out] = args.as_slice() else {
        bail!("usage: fit_strengths DATA_DIR OUT.json");
    };
    let (models, rows) = load(Path::new(data))?;
    let rasch::Rasch { theta, b } = rasch::fit(models.len(), &rows);
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
