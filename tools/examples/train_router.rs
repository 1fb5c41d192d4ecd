//! `make train-router`: trains the learned router (the `difficulty` signal) — a 2PL item-response
//! model `P(correct | x, θ_m) = σ(a(x)·(θ_m − b(x)))`, `b` and `a` linear heads on the
//! all-MiniLM-L6-v2 embedding plus cheap request features, `θ_m` one strength per model — on
//! per-question outcomes of 30 LLMs on MMLU-Pro questions (`../shared/data/routing/
//! mmlu-pro-outcomes`, kept out of the repository), with candle-nn.
//!
//! It first validates leave-one-source-out (train on two of the question sources — stemez,
//! TheoremQA, SciBench —, test on the third) and prints, per held-out source, APGR and CPT(50%)
//! (`llmsoup_router::eval`) of the learned router, prompt length, a random router and the
//! hand-weighted `complexity` score with the demo config's exemplars, on a weak/strong pair.
//! Then it trains on every question and writes the head (`crates/router/assets/
//! difficulty_head.json`, committed).
//!
//! Reproducible: full-batch training from zero weights, no sampling; run single-threaded
//! (`RAYON_NUM_THREADS=1`, as `scripts/train-router.sh` does) so sums come out in one order.
//! Embeddings of the questions are cached under `.cache/router/` (not committed).
//!
//! Usage: cargo run -p llmsoup-tools --example train_router -- DATA_DIR MODEL_DIR OUT.json

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use llmsoup_models::{SentenceEncoder, candle_core, candle_nn, cosine};
use llmsoup_router::eval::{Curve, Outcome};
use llmsoup_router::request::RequestView;
use llmsoup_router::signals::complexity;
use llmsoup_router::signals::difficulty::{self, DifficultyHead, FEATURE_NAMES, LinearHead};

/// Full-batch Adam steps.
const STEPS: usize = 500;
const LR: f64 = 0.05;
/// L2 penalty on the heads' weights (not the intercepts or strengths).
const L2: f64 = 1e-5;
/// Longest question, in tokens, as the sidecar embeds it (`embedding.max_tokens` default).
const MAX_TOKENS: usize = 128;
/// The weak/strong pairs the validation reports (RouteLLM's pair was GPT-4 / Mixtral-8x7B).
const PAIRS: [(&str, &str); 2] = [
    ("Mixtral-8x7B-Instruct-v0.1", "gpt-4o-2024-05-13"),
    ("Meta-Llama-3_1-8B-Instruct", "gpt-4o-2024-05-13"),
];
const RANDOM_SEEDS: u64 = 50;

struct Question {
    id: String,
    text: String,
    source: String,
}

struct Data {
    questions: Vec<Question>,
    models: Vec<String>,
    /// Per question, per model: 1 correct, 0 wrong, NaN no answer.
    outcomes: Vec<Vec<f32>>,
}

fn load(dir: &Path) -> anyhow::Result<Data> {
    let q_path = dir.join("questions.jsonl");
    let text = std::fs::read_to_string(&q_path).with_context(|| format!("reading {}", q_path.display()))?;
    let mut questions = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let field = |k: &str| {
            v[k].as_str()
                .map(str::to_string)
                .context(format!("question without `{k}`"))
        };
        let src = field("src")?;
        // Never MMLU's own test items (the data set already leaves them out; check anyway).
        if src.starts_with("ori_mmlu") {
            bail!(
                "{} holds an MMLU test item ({src}); refusing to train on it",
                q_path.display()
            );
        }
        questions.push(Question {
            id: field("question_id")?,
            text: field("question")?,
            source: src.split('-').next().unwrap_or(&src).to_string(),
        });
    }
    let o_path = dir.join("outcomes.csv");
    let csv = std::fs::read_to_string(&o_path).with_context(|| format!("reading {}", o_path.display()))?;
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().context("empty outcomes.csv")?.split(',').collect();
    let models: Vec<String> = header[1..].iter().map(|s| s.to_string()).collect();
    let mut by_id: HashMap<String, Vec<f32>> = HashMap::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(',').collect();
        let row = cells[1..]
            .iter()
            .map(|c| match c.trim() {
                "1" => 1.0,
                "0" => 0.0,
                _ => f32::NAN,
            })
            .collect();
        by_id.insert(cells[0].to_string(), row);
    }
    let outcomes = questions
        .iter()
        .map(|q| {
            by_id
                .remove(&q.id)
                .with_context(|| format!("no outcomes for question {}", q.id))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Data {
        questions,
        models,
        outcomes,
    })
}

/// The questions' embeddings, from `.cache/router/` when this exact text list was embedded before.
fn embeddings(enc: &SentenceEncoder, model_dir: &Path, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (texts, MAX_TOKENS, model_dir.file_name()).hash(&mut h);
    let dir = PathBuf::from(".cache/router");
    let path = dir.join(format!("embeddings-{:016x}.f32", h.finish()));
    let dim = enc.dim;
    if let Ok(bytes) = std::fs::read(&path)
        && bytes.len() == texts.len() * dim * 4
    {
        eprintln!("  embeddings from {}", path.display());
        let floats: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        return Ok(floats.chunks(dim).map(<[f32]>::to_vec).collect());
    }
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(32) {
        out.extend(enc.embed(chunk)?);
        eprint!("\r  embedded {}/{}", out.len(), texts.len());
    }
    eprintln!();
    std::fs::create_dir_all(&dir)?;
    let bytes: Vec<u8> = out.iter().flatten().flat_map(|f| f.to_le_bytes()).collect();
    std::fs::write(&path, bytes)?;
    Ok(out)
}

struct Fitted {
    head: DifficultyHead,
    strengths: Vec<f32>,
}

/// Fits the IRT model on the rows `train` (full batch, zero start: deterministic).
fn fit(
    emb: &[Vec<f32>],
    feats: &[[f32; FEATURE_NAMES.len()]],
    data: &Data,
    train: &[usize],
    quiet: bool,
) -> anyhow::Result<Fitted> {
    let dev = Device::Cpu;
    let k = FEATURE_NAMES.len();
    let dim = emb[0].len();
    let width = dim + k;
    // Standardise features on the training rows.
    let n = train.len() as f32;
    let mean: Vec<f32> = (0..k)
        .map(|j| train.iter().map(|&i| feats[i][j]).sum::<f32>() / n)
        .collect();
    let scale: Vec<f32> = (0..k)
        .map(|j| {
            let var = train.iter().map(|&i| (feats[i][j] - mean[j]).powi(2)).sum::<f32>() / n;
            if var > 1e-12 { var.sqrt() } else { 1.0 }
        })
        .collect();
    let mut x = Vec::with_capacity(train.len() * width);
    let mut y = Vec::with_capacity(train.len() * data.models.len());
    let mut mask = Vec::with_capacity(y.capacity());
    for &i in train {
        x.extend_from_slice(&emb[i]);
        x.extend((0..k).map(|j| (feats[i][j] - mean[j]) / scale[j]));
        for &o in &data.outcomes[i] {
            y.push(if o.is_nan() { 0.0 } else { o });
            mask.push(if o.is_nan() { 0.0f32 } else { 1.0 });
        }
    }
    let m = data.models.len();
    let x = Tensor::from_vec(x, (train.len(), width), &dev)?;
    let y = Tensor::from_vec(y, (train.len(), m), &dev)?;
    let mask = Tensor::from_vec(mask, (train.len(), m), &dev)?;
    let observed = mask.sum_all()?;

    let w_b = Var::zeros((width, 1), DType::F32, &dev)?;
    let c_b = Var::zeros(1, DType::F32, &dev)?;
    let w_a = Var::zeros((width, 1), DType::F32, &dev)?;
    // softplus(ln(e − 1)) = 1: every prompt starts equally discriminating.
    let c_a = Var::from_tensor(&Tensor::new(&[(std::f32::consts::E - 1.0).ln()], &dev)?)?;
    let theta = Var::zeros((1, m), DType::F32, &dev)?;
    let vars = vec![w_b.clone(), c_b.clone(), w_a.clone(), c_a.clone(), theta.clone()];
    let mut opt = candle_nn::AdamW::new(
        vars,
        candle_nn::ParamsAdamW {
            lr: LR,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    for step in 0..STEPS {
        let b = x.matmul(w_b.as_tensor())?.broadcast_add(c_b.as_tensor())?;
        let a_raw = x.matmul(w_a.as_tensor())?.broadcast_add(c_a.as_tensor())?;
        let a = (a_raw.exp()? + 1.0)?.log()?;
        let logits = a.broadcast_mul(&theta.as_tensor().broadcast_sub(&b)?)?;
        // Binary cross-entropy with logits, stable form: max(l, 0) − l·y + ln(1 + e^−|l|).
        let bce = ((logits.relu()? - logits.mul(&y)?)? + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
        let data_loss = (bce.mul(&mask)?.sum_all()? / &observed)?;
        let penalty = ((w_b.as_tensor().sqr()?.sum_all()? + w_a.as_tensor().sqr()?.sum_all()?)? * L2)?;
        let loss = (data_loss.clone() + penalty)?;
        opt.backward_step(&loss)?;
        if !quiet && (step % 100 == 0 || step + 1 == STEPS) {
            println!("  step {step:>3}: loss {:.4}", data_loss.to_scalar::<f32>()?);
        }
    }
    let col = |v: &Var| -> anyhow::Result<Vec<f32>> { Ok(v.as_tensor().flatten_all()?.to_vec1::<f32>()?) };
    let strengths = col(&theta)?;
    let reference = strengths.iter().sum::<f32>() / strengths.len() as f32;
    let head = DifficultyHead {
        encoder: "all-MiniLM-L6-v2".into(),
        dim,
        features: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        feature_mean: mean,
        feature_scale: scale,
        difficulty: LinearHead {
            weight: col(&w_b)?,
            bias: col(&c_b)?[0],
        },
        discrimination: LinearHead {
            weight: col(&w_a)?,
            bias: col(&c_a)?[0],
        },
        reference_strength: reference,
        strengths: data.models.iter().cloned().zip(strengths.iter().copied()).collect(),
        trained: serde_json::Value::Null,
    };
    Ok(Fitted { head, strengths })
}

/// APGR and CPT(50%) of `score` on the rows `rows` for one pair (rows where either model has no
/// answer are left out).
fn metrics(data: &Data, rows: &[usize], pair: (usize, usize), score: &dyn Fn(usize) -> f64) -> (f64, f64) {
    let items: Vec<Outcome> = rows
        .iter()
        .filter(|&&i| !data.outcomes[i][pair.0].is_nan() && !data.outcomes[i][pair.1].is_nan())
        .map(|&i| Outcome {
            score: score(i),
            weak: data.outcomes[i][pair.0] > 0.5,
            strong: data.outcomes[i][pair.1] > 0.5,
        })
        .collect();
    let curve = Curve::new(&items).expect("scores are numbers");
    (curve.apgr().unwrap_or(f64::NAN), curve.cpt(0.5).unwrap_or(f64::NAN))
}

/// A deterministic pseudo-random score per (question, seed).
fn random_score(id: &str, seed: u64) -> f64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (id, seed).hash(&mut h);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [data_dir, model_dir, out] = args.as_slice() else {
        bail!("usage: train_router DATA_DIR MODEL_DIR OUT.json");
    };
    let data = load(Path::new(data_dir))?;
    println!(
        "{} questions × {} models from {data_dir}",
        data.questions.len(),
        data.models.len()
    );
    let dev = Device::Cpu;
    let enc = SentenceEncoder::load(Path::new(model_dir), MAX_TOKENS, dev)?;
    let texts: Vec<&str> = data.questions.iter().map(|q| q.text.as_str()).collect();
    let emb = embeddings(&enc, Path::new(model_dir), &texts)?;
    let views: Vec<RequestView> = texts.iter().map(|t| RequestView::from_text(t)).collect();
    let feats: Vec<[f32; FEATURE_NAMES.len()]> = views.iter().map(difficulty::features).collect();

    // The hand-weighted complexity score with the demo config's exemplars, as the sidecar computes it.
    let demo_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/llmsoup.yaml");
    let demo = llmsoup_config::load_file(&demo_path)?;
    let rule = demo
        .signals
        .complexity
        .first()
        .context("the demo config has a complexity rule")?;
    let hard = enc.embed(&rule.hard.candidates.iter().map(String::as_str).collect::<Vec<_>>())?;
    let easy = enc.embed(&rule.easy.candidates.iter().map(String::as_str).collect::<Vec<_>>())?;
    let complexity_scores: Vec<f64> = emb
        .iter()
        .zip(&views)
        .map(|(q, view)| {
            let best = |v: &Vec<Vec<f32>>| v.iter().map(|c| cosine(q, c)).fold(0.0f32, f32::max);
            complexity::blend(
                Some(complexity::semantic_score(best(&hard), best(&easy))),
                complexity::Features::of(view).score(),
            )
        })
        .collect();

    let model_index = |name: &str| {
        data.models
            .iter()
            .position(|m| m == name)
            .context(format!("no model {name}"))
    };
    let pairs: Vec<(usize, usize)> = PAIRS
        .iter()
        .map(|(w, s)| Ok((model_index(w)?, model_index(s)?)))
        .collect::<anyhow::Result<_>>()?;
    let mut sources: Vec<String> = data.questions.iter().map(|q| q.source.clone()).collect();
    sources.sort();
    sources.dedup();

    // Leave one source out.
    let mut report = BTreeMap::new();
    let mut folds = Vec::new();
    for held in &sources {
        let (train, test): (Vec<usize>, Vec<usize>) =
            (0..data.questions.len()).partition(|&i| &data.questions[i].source != held);
        let fitted = fit(&emb, &feats, &data, &train, true)?;
        folds.push((held, test, fitted));
    }
    for (p, &(weak, strong)) in pairs.iter().enumerate() {
        println!(
            "\nleave-one-source-out, weak {} / strong {}: APGR / CPT(50%)",
            PAIRS[p].0, PAIRS[p].1
        );
        println!(
            "| held-out source (n) | learned (difficulty) | learned (pair gain) | prompt length | random (mean of {RANDOM_SEEDS}) | complexity (demo) |"
        );
        println!("|---|---|---|---|---|---|");
        for (held, test, fitted) in &folds {
            let test = test.as_slice();
            let preds: HashMap<usize, difficulty::Prediction> = test
                .iter()
                .map(|&i| (i, fitted.head.predict(&emb[i], &feats[i])))
                .collect();
            let learned = metrics(&data, test, (weak, strong), &|i| preds[&i].difficulty());
            let gain = metrics(&data, test, (weak, strong), &|i| {
                let pr = &preds[&i];
                pr.success(f64::from(fitted.strengths[strong])) - pr.success(f64::from(fitted.strengths[weak]))
            });
            let length = metrics(&data, test, (weak, strong), &|i| texts[i].chars().count() as f64);
            let (mut ra, mut rc) = (0.0, 0.0);
            for seed in 0..RANDOM_SEEDS {
                let (a, c) = metrics(&data, test, (weak, strong), &|i| {
                    random_score(&data.questions[i].id, seed)
                });
                ra += a / RANDOM_SEEDS as f64;
                rc += c / RANDOM_SEEDS as f64;
            }
            let cx = metrics(&data, test, (weak, strong), &|i| complexity_scores[i]);
            let cell = |(a, c): (f64, f64)| format!("{a:.3} / {:.0}%", c * 100.0);
            println!(
                "| {held} ({}) | {} | {} | {} | {} | {} |",
                test.len(),
                cell(learned),
                cell(gain),
                cell(length),
                cell((ra, rc)),
                cell(cx)
            );
            report.insert(
                format!("{}/{}: held out {held}", PAIRS[p].0, PAIRS[p].1),
                serde_json::json!({
                    "n": test.len(),
                    "learned": {"apgr": learned.0, "cpt50": learned.1},
                    "prompt_length": {"apgr": length.0, "cpt50": length.1},
                    "random": {"apgr": ra, "cpt50": rc},
                    "complexity": {"apgr": cx.0, "cpt50": cx.1},
                }),
            );
        }
    }

    println!("\ntraining on all {} questions", data.questions.len());
    let all: Vec<usize> = (0..data.questions.len()).collect();
    let mut fitted = fit(&emb, &feats, &data, &all, false)?;
    let mut ranked: Vec<(&String, &f32)> = fitted.head.strengths.iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(a.1));
    println!("strengths θ (set `models[].strength` from these):");
    for (m, t) in ranked {
        println!("  {t:>7.3}  {m}");
    }
    println!("reference strength θ_ref: {:.3}", fitted.head.reference_strength);
    fitted.head.trained = serde_json::json!({
        "data": "MMLU-Pro per-question outcomes of 30 LLMs (TIGER-AI-Lab/MMLU-Pro eval_results; MMLU-sourced rows excluded)",
        "questions": data.questions.len(),
        "steps": STEPS, "lr": LR, "l2": L2, "max_tokens": MAX_TOKENS,
        "leave_one_source_out": report,
    });
    let mut text = serde_json::to_string_pretty(&fitted.head)?;
    text.push('\n');
    std::fs::write(out, text).with_context(|| format!("writing {out}"))?;
    // What the sidecar will load must parse back.
    DifficultyHead::from_json(&std::fs::read_to_string(out)?).map_err(anyhow::Error::msg)?;
    println!("wrote {out}");
    Ok(())
}
