//! `make train-jailbreak`: builds the jailbreak signal's classifier head — an MLP over the
//! all-MiniLM-L6-v2 sentence embedding — and measures it where it matters: false positives on
//! ordinary traffic and recall on injection sources it did not learn from.
//!
//! Candidates, compared on the same embeddings (ours: masked mean pooling, L2 norm, the runtime's
//! default 128 tokens) and scored as the signal scores them (short texts damped, see
//! `jailbreak::damped`):
//! - `own`: trained here with candle-nn (deterministic init, full-batch AdamW) on S-Labs train
//!   (every 3rd row), yanismiraoui and neuralchemy train (injections and their benign rows), plus
//!   ordinary requests as negatives (`tools/data/jailbreak-benign-train.jsonl`: SNIPS, NLU++,
//!   self-instruct seed tasks; `tools/data/jailbreak-benign-train-extra.jsonl`: IFBench prompts,
//!   HWU64, GPTeacher code and role-play tasks);
//! - `jailguard`: the published weights of the `jailguard` crate (MIT OR Apache-2.0);
//! - `mean`: both, their probabilities averaged (two members; the head shipped before);
//! - `embedding`: both, their logits averaged, folded into one MLP with an affine calibration of
//!   the logit (see [`fuse`]): on ordinary requests the head did not train on (two-fold
//!   cross-fit over both files) 0.5% reach the default threshold and 0.2% the recommended
//!   blocking threshold (the head shipped before the lexical member);
//! - `fused` (the default): the same with a third member, a logistic regression on hashed word
//!   n-grams of the text (`jailbreak::lexical`, [`train_lexical`]), the mean of the three
//!   members' logits calibrated the same way and folded into the MLP's last layer and the
//!   lexical weights (see [`with_lexical`]);
//! - `shipped`: the committed `crates/router/assets/jailbreak_head.safetensors` (`--head shipped`
//!   only measures it: `make eval-signals`).
//!
//! Measured on: `tests/data/benign-eval.jsonl` (1,182 ordinary prompts from five public sources
//! that no candidate trains on: support, short assistant requests, coding, writing), the
//! hand-written `tests/data/jailbreak-eval.jsonl`, and the S-Labs and neuralchemy test splits.
//! Recall on held-out sources is leave-one-source-out: for each injection source, `own` and the
//! lexical member are retrained without it and scored on it, alone and fused with the same
//! calibration. Each
//! candidate's table ends with a threshold sweep (ordinary FP, recall per injection set).
//!
//! Usage: cargo run -p llmsoup-tools --example train_jailbreak -- DATA_DIR MODEL_DIR OUT --head own|jailguard|mean|embedding|fused|shipped

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;

use anyhow::{Context, bail};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use llmsoup_models::SentenceEncoder;
use llmsoup_models::{candle_core, candle_nn};
use llmsoup_router::signals::jailbreak::lexical::{self, BUCKETS, LexicalModel};
use llmsoup_router::signals::jailbreak::{DEFAULT_THRESHOLD, JailbreakHead, RECOMMENDED_BLOCK_THRESHOLD, damped};

const HIDDEN: usize = 64;
const EPOCHS: usize = 300;
const WEIGHT_DECAY: f64 = 1e-3;
/// The runtime's default `embedding.max_tokens`.
const MAX_TOKENS: usize = 128;
/// Every n-th S-Labs row is used (a fixed, deterministic subset): embedding all 15k texts takes
/// too long on a shared 2-core machine.
const TRAIN_EVERY: usize = 3;
const TEST_EVERY: usize = 2;
const THRESHOLDS: [f32; 2] = [DEFAULT_THRESHOLD, RECOMMENDED_BLOCK_THRESHOLD];
/// Share of held-out ordinary requests allowed to reach the default and the recommended blocking
/// threshold: the calibration targets.
const CAL_FP: [f64; 2] = [0.005, 0.002];
const SWEEP: [f32; 8] = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95];
/// Weight of an ordinary request (`tools/data/jailbreak-benign-train.jsonl`) in the loss, relative
/// to a benign row of the injection corpora: a false positive on ordinary traffic refuses a real
/// user, and the injection corpora's benign rows are mostly statements, not requests.
const ORDINARY_WEIGHT: f32 = 4.0;

const LEX_EPOCHS: usize = 300;
const LEX_LR: f32 = 0.05;
/// L2 penalty on the lexical weights, added to the gradient (not decoupled): a rare n-gram's
/// weight settles where its small gradient equals the penalty, so the model cannot memorise
/// one-off phrasings of its training sources.
const LEX_L2: f32 = 1e-4;

/// Per-sample loss weights shared by both members: attacks weighted up to balance the classes,
/// ordinary requests by [`ORDINARY_WEIGHT`], the corpora's own benign rows by 1.
fn sample_weights(attack: &[bool], ordinary: &[bool]) -> Vec<f32> {
    let positives = attack.iter().filter(|a| **a).count();
    let pos_w = (attack.len() - positives) as f32 / positives.max(1) as f32;
    attack
        .iter()
        .zip(ordinary)
        .map(|(a, o)| match (a, o) {
            (true, _) => pos_w,
            (false, true) => ORDINARY_WEIGHT,
            (false, false) => 1.0,
        })
        .collect()
}

/// The lexical member: logistic regression on hashed word n-grams, full-batch Adam from zero
/// weights in a fixed order (deterministic), the same class balance and ordinary-request weight
/// as [`train_own`].
fn train_lexical(x: &[&Vec<(u32, f32)>], attack: &[bool], ordinary: &[bool]) -> LexicalModel {
    let sw = sample_weights(attack, ordinary);
    let total: f32 = sw.iter().sum();
    let (mut w, mut m, mut v) = (vec![0f32; BUCKETS], vec![0f32; BUCKETS], vec![0f32; BUCKETS]);
    let (mut b, mut mb, mut vb) = (0f32, 0f32, 0f32);
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let mut g = vec![0f32; BUCKETS];
    for epoch in 1..=LEX_EPOCHS {
        g.iter_mut().zip(&w).for_each(|(g, w)| *g = LEX_L2 * w);
        let mut gb = 0f32;
        for ((f, y), s) in x.iter().zip(attack).zip(&sw) {
            let z: f32 = f.iter().map(|(i, val)| w[*i as usize] * val).sum::<f32>() + b;
            let d = (1.0 / (1.0 + (-z).exp()) - f32::from(u8::from(*y))) * s / total;
            for (i, val) in f.iter() {
                g[*i as usize] += d * val;
            }
            gb += d;
        }
        let (c1, c2) = (1.0 - b1.powi(epoch as i32), 1.0 - b2.powi(epoch as i32));
        for i in 0..BUCKETS {
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            w[i] -= LEX_LR * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
        }
        mb = b1 * mb + (1.0 - b1) * gb;
        vb = b2 * vb + (1.0 - b2) * gb * gb;
        b -= LEX_LR * (mb / c1) / ((vb / c2).sqrt() + eps);
    }
    LexicalModel::new(w, b).expect("BUCKETS weights")
}

/// One labelled text and where it came from.
#[derive(Clone)]
struct Row {
    text: String,
    attack: bool,
    source: String,
}

fn read_jsonl(path: &Path, default_source: &str) -> anyhow::Result<Vec<Row>> {
    let data = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for line in data.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let (Some(t), Some(l)) = (v["text"].as_str(), v["label"].as_i64()) else {
            bail!("{}: every line needs `text` and an integer `label`", path.display());
        };
        out.push(Row {
            text: t.to_string(),
            attack: l == 1,
            source: v["source"].as_str().unwrap_or(default_source).to_string(),
        });
    }
    Ok(out)
}

fn every(rows: Vec<Row>, n: usize) -> Vec<Row> {
    rows.into_iter().step_by(n).collect()
}

/// Embeddings of `rows`, cached in DATA_DIR keyed by a hash of the texts and the token window.
fn embed(enc: &SentenceEncoder, rows: &[Row], dir: &Path) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for r in rows {
        r.text.hash(&mut h);
    }
    MAX_TOKENS.hash(&mut h);
    let cache = dir.join(format!("emb-{:016x}.f32", h.finish()));
    if let Ok(bytes) = std::fs::read(&cache) {
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
    order.sort_by_key(|&i| rows[i].text.len());
    let mut out = vec![Vec::new(); rows.len()];
    for (n, chunk) in order.chunks(32).enumerate() {
        let texts: Vec<&str> = chunk.iter().map(|&i| rows[i].text.as_str()).collect();
        for (&i, e) in chunk.iter().zip(enc.embed(&texts)?) {
            out[i] = e;
        }
        eprint!("\r  embedded {}/{}", (n * 32 + chunk.len()).min(rows.len()), rows.len());
    }
    eprintln!();
    let bytes: Vec<u8> = out.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(&cache, bytes)?;
    Ok(out)
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

/// Own head: 384 → 64 (ReLU) → 1, class-balanced binary cross-entropy.
fn train_own(
    x: &[&Vec<f32>],
    attack: &[bool],
    ordinary: &[bool],
    dev: &Device,
) -> anyhow::Result<HashMap<String, Tensor>> {
    let dim = x[0].len();
    let xt = Tensor::from_vec(
        x.iter().flat_map(|r| r.iter().copied()).collect::<Vec<f32>>(),
        (x.len(), dim),
        dev,
    )?;
    let y: Vec<f32> = attack.iter().map(|a| f32::from(u8::from(*a))).collect();
    let w = sample_weights(attack, ordinary);
    let (y, sample_w) = (Tensor::new(y.as_slice(), dev)?, Tensor::new(w.as_slice(), dev)?);
    let mut seed = 0x6a61_696c_6272_6561u64;
    let w0 = init(HIDDEN, dim, &mut seed, dev)?;
    let b0 = Var::zeros(HIDDEN, DType::F32, dev)?;
    let w1 = init(1, HIDDEN, &mut seed, dev)?;
    let b1 = Var::zeros(1, DType::F32, dev)?;
    let mut opt = candle_nn::AdamW::new(
        vec![w0.clone(), b0.clone(), w1.clone(), b1.clone()],
        candle_nn::ParamsAdamW {
            lr: 0.01,
            weight_decay: WEIGHT_DECAY,
            ..Default::default()
        },
    )?;
    for _ in 0..EPOCHS {
        let h = xt.matmul(&w0.t()?)?.broadcast_add(&b0)?.relu()?;
        let logits = h.matmul(&w1.t()?)?.broadcast_add(&b1)?.squeeze(1)?;
        // BCE with logits: softplus(z) - y·z, written stably as max(z,0) - y·z + log(1 + e^-|z|).
        let stable = (logits.relu()? - logits.mul(&y)? + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
        let loss = (stable.mul(&sample_w)?.sum_all()? / sample_w.sum_all()?)?;
        opt.backward_step(&loss)?;
    }
    Ok(HashMap::from([
        ("m0.layer0.weight".to_string(), w0.as_tensor().contiguous()?),
        ("m0.layer0.bias".to_string(), b0.as_tensor().contiguous()?),
        ("m0.layer1.weight".to_string(), w1.as_tensor().contiguous()?),
        ("m0.layer1.bias".to_string(), b1.as_tensor().contiguous()?),
    ]))
}

/// The jailguard crate's JSON (`w_h1` [256][384] ... `b_out` [1]) as our safetensors layout.
fn jailguard_tensors(path: &Path, dev: &Device) -> anyhow::Result<HashMap<String, Tensor>> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let mat = |k: &str| -> anyhow::Result<Tensor> {
        let rows: Vec<Vec<f32>> = serde_json::from_value(v[k].clone()).with_context(|| format!("jailguard `{k}`"))?;
        let dim = rows.first().map_or(0, Vec::len);
        Ok(Tensor::from_vec(rows.concat(), (rows.len(), dim), dev)?)
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

/// The logit mean of jailguard (384 → 256 → 128 → 1) and ours (384 → H → 1) as one MLP, with an
/// affine calibration of the logit folded into its last layer:
/// `p = σ(scale · (z_jailguard + z_own) / 2 + shift)`. Our hidden layer passes through the middle
/// layer unchanged (identity weights: ReLU of a non-negative value is the value), so the runtime
/// evaluates one plain MLP (384 → 256+H → 128+H → 1) and needs no code for the combination.
fn fuse(
    jailguard: &HashMap<String, Tensor>,
    own: &HashMap<String, Tensor>,
    scale: f32,
    shift: f32,
    dev: &Device,
) -> anyhow::Result<HashMap<String, Tensor>> {
    let m = |t: &HashMap<String, Tensor>, k: &str| -> anyhow::Result<Vec<Vec<f32>>> {
        Ok(t[&format!("m0.{k}.weight")].to_vec2::<f32>()?)
    };
    let b = |t: &HashMap<String, Tensor>, k: &str| -> anyhow::Result<Vec<f32>> {
        Ok(t[&format!("m0.{k}.bias")].to_vec1::<f32>()?)
    };
    let (j0, j1, j2) = (
        m(jailguard, "layer0")?,
        m(jailguard, "layer1")?,
        m(jailguard, "layer2")?,
    );
    let (o0, o1) = (m(own, "layer0")?, m(own, "layer1")?);
    let (h1, h2, h) = (j0.len(), j1.len(), o0.len());
    // Layer 0: both first layers stacked.
    let w0: Vec<Vec<f32>> = j0.iter().chain(&o0).cloned().collect();
    let b0: Vec<f32> = b(jailguard, "layer0")?.into_iter().chain(b(own, "layer0")?).collect();
    // Layer 1: jailguard's second layer on its block, identity on ours.
    let mut w1 = vec![vec![0f32; h1 + h]; h2 + h];
    for (r, row) in j1.iter().enumerate() {
        w1[r][..h1].copy_from_slice(row);
    }
    for i in 0..h {
        w1[h2 + i][h1 + i] = 1.0;
    }
    let b1: Vec<f32> = b(jailguard, "layer1")?
        .into_iter()
        .chain(std::iter::repeat_n(0.0, h))
        .collect();
    // Layer 2: half of each output layer, times the calibration scale.
    let w2: Vec<f32> = j2[0].iter().chain(&o1[0]).map(|w| w * 0.5 * scale).collect();
    let b2 = (b(jailguard, "layer2")?[0] + b(own, "layer1")?[0]) * 0.5 * scale + shift;
    let mat = |v: Vec<Vec<f32>>| -> anyhow::Result<Tensor> {
        let (r, c) = (v.len(), v[0].len());
        Ok(Tensor::from_vec(v.concat(), (r, c), dev)?)
    };
    Ok(HashMap::from([
        ("m0.layer0.weight".into(), mat(w0)?),
        ("m0.layer0.bias".into(), Tensor::new(b0.as_slice(), dev)?),
        ("m0.layer1.weight".into(), mat(w1)?),
        ("m0.layer1.bias".into(), Tensor::new(b1.as_slice(), dev)?),
        ("m0.layer2.weight".into(), Tensor::from_vec(w2, (1, h2 + h), dev)?),
        ("m0.layer2.bias".into(), Tensor::new(&[b2], dev)?),
    ]))
}

/// Share of the embedding members in the fused logit: `(2·z_embedding + z_lexical) / 3`, where
/// `z_embedding` is already the mean of jailguard's and ours, i.e. the plain mean of the three
/// members' logits (fixed before any evaluation; 1/2 was also measured, see README).
const EMBEDDING_SHARE: f32 = 2.0 / 3.0;

fn lexical_mean(z_embedding: f32, z_lexical: f32) -> f32 {
    EMBEDDING_SHARE * z_embedding + (1.0 - EMBEDDING_SHARE) * z_lexical
}

/// Adds the lexical member to a one-MLP head, its weights and bias times `factor` (its share of
/// the fused logit times the calibration scale), so the runtime adds the two logits as they are.
fn with_lexical(
    mut tensors: HashMap<String, Tensor>,
    lex: &LexicalModel,
    factor: f32,
    dev: &Device,
) -> anyhow::Result<HashMap<String, Tensor>> {
    let w: Vec<f32> = lex.weights().iter().map(|w| w * factor).collect();
    tensors.insert("lexical.weight".into(), Tensor::from_vec(w, BUCKETS, dev)?);
    tensors.insert("lexical.bias".into(), Tensor::new(&[lex.bias() * factor], dev)?);
    Ok(tensors)
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

fn logit(p: f32) -> f32 {
    let p = p.clamp(1e-7, 1.0 - 1e-7);
    (p / (1.0 - p)).ln()
}

/// The `q`-quantile (0..1) of `v` (nearest rank).
fn quantile(v: &[f32], q: f64) -> f32 {
    let mut v = v.to_vec();
    v.sort_by(f32::total_cmp);
    v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

fn head_of(tensors: &HashMap<String, Tensor>) -> anyhow::Result<JailbreakHead> {
    let file = std::env::temp_dir().join(format!("jailbreak-head-{}.safetensors", std::process::id()));
    candle_core::safetensors::save(tensors, &file)?;
    let bytes = std::fs::read(&file)?;
    std::fs::remove_file(&file)?;
    Ok(JailbreakHead::from_safetensors(&bytes)?)
}

/// Scores as the signal computes them: the head's probability, damped for very short texts.
fn scores(head: &JailbreakHead, rows: &[Row], x: &[Vec<f32>]) -> Vec<f32> {
    rows.iter()
        .zip(x)
        .map(|(r, e)| damped(head.score(e, &r.text), &r.text))
        .collect()
}

/// `hits/n` at each threshold, as a percentage, over rows selected by `keep`.
fn rate(s: &[f32], rows: &[Row], keep: impl Fn(&Row) -> bool, t: f32) -> (usize, usize) {
    let sel: Vec<f32> = s.iter().zip(rows).filter(|(_, r)| keep(r)).map(|(s, _)| *s).collect();
    (sel.iter().filter(|s| **s >= t).count(), sel.len())
}

fn pct((k, n): (usize, usize)) -> String {
    format!("{:.1}% ({k}/{n})", 100.0 * k as f64 / n.max(1) as f64)
}

/// One evaluation set with its embeddings.
struct Set {
    name: String,
    rows: Vec<Row>,
    x: Vec<Vec<f32>>,
}

/// How a candidate scores one text from its embedding (the signal's probability, damped).
type Scorer<'a> = dyn Fn(&Row, &[f32]) -> f32 + 'a;

fn head_scorer(head: &JailbreakHead) -> impl Fn(&Row, &[f32]) -> f32 + '_ {
    move |r, e| damped(head.score(e, &r.text), &r.text)
}

fn scores_with(scorer: &Scorer, rows: &[Row], x: &[Vec<f32>]) -> Vec<f32> {
    rows.iter().zip(x).map(|(r, e)| scorer(r, e)).collect()
}

fn report(name: &str, scorer: &Scorer, benign: &Set, sets: &[Set], verbose: bool) {
    println!("\n== {name}: false positives on ordinary traffic (benign-eval.jsonl, no source in any training set)");
    println!("{:<22} {:>18} {:>18}", "source", "FP @0.5", "FP @0.8");
    let s = scores_with(scorer, &benign.rows, &benign.x);
    let mut sources: Vec<&str> = benign.rows.iter().map(|r| r.source.as_str()).collect();
    sources.dedup();
    for src in &sources {
        let keep = |r: &Row| r.source == *src;
        println!(
            "{src:<22} {:>18} {:>18}",
            pct(rate(&s, &benign.rows, keep, THRESHOLDS[0])),
            pct(rate(&s, &benign.rows, keep, THRESHOLDS[1]))
        );
    }
    println!(
        "{:<22} {:>18} {:>18}",
        "all",
        pct(rate(&s, &benign.rows, |_| true, THRESHOLDS[0])),
        pct(rate(&s, &benign.rows, |_| true, THRESHOLDS[1]))
    );
    println!(
        "  threshold sweep: {:>9} {:>10} {:>10} {:>10} {:>10}",
        "ordinary FP", "hand-written", "S-Labs", "neuralchemy", "yanismiraoui"
    );
    for t in SWEEP {
        let recall = |set: &Set| {
            let s = scores_with(scorer, &set.rows, &set.x);
            let (k, n) = rate(&s, &set.rows, |r: &Row| r.attack, t);
            100.0 * k as f64 / n.max(1) as f64
        };
        let fp = s.iter().filter(|v| **v >= t).count();
        println!(
            "  threshold {t:.2}: {:>9.1}% {:>11.1}% {:>9.1}% {:>10.1}% {:>11.1}%",
            100.0 * fp as f64 / s.len() as f64,
            recall(&sets[0]),
            recall(&sets[1]),
            recall(&sets[2]),
            recall(&sets[3])
        );
    }
    if verbose {
        for (r, v) in benign.rows.iter().zip(&s).filter(|(_, v)| **v >= THRESHOLDS[0]) {
            println!(
                "  FP {v:.2} [{}] {}",
                r.source,
                r.text.replace('\n', " ").chars().take(110).collect::<String>()
            );
        }
    }
    println!(
        "{:<40} {:>18} {:>18} {:>18} {:>18}",
        "injection set", "recall @0.5", "recall @0.8", "FP @0.5", "FP @0.8"
    );
    for set in sets {
        let s = scores_with(scorer, &set.rows, &set.x);
        let atk = |r: &Row| r.attack;
        let ben = |r: &Row| !r.attack;
        println!(
            "{:<40} {:>18} {:>18} {:>18} {:>18}",
            set.name,
            pct(rate(&s, &set.rows, atk, THRESHOLDS[0])),
            pct(rate(&s, &set.rows, atk, THRESHOLDS[1])),
            pct(rate(&s, &set.rows, ben, THRESHOLDS[0])),
            pct(rate(&s, &set.rows, ben, THRESHOLDS[1]))
        );
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [data, model, out, flag, choice] = args.as_slice() else {
        bail!(
            "usage: train_jailbreak DATA_DIR MODEL_DIR OUT.safetensors --head own|jailguard|mean|embedding|fused|shipped"
        );
    };
    if flag != "--head"
        || !matches!(
            choice.as_str(),
            "own" | "jailguard" | "mean" | "embedding" | "fused" | "shipped"
        )
    {
        bail!("--head must be `own`, `jailguard`, `mean`, `embedding`, `fused` or `shipped`");
    }
    let data = Path::new(data);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dev = Device::Cpu;
    let enc = SentenceEncoder::load(Path::new(model), MAX_TOKENS, dev.clone())?;
    let set = |name: &str, rows: Vec<Row>| -> anyhow::Result<Set> {
        let x = embed(&enc, &rows, data)?;
        Ok(Set {
            name: name.to_string(),
            rows,
            x,
        })
    };
    let benign = set(
        "benign-eval",
        read_jsonl(&repo.join("tests/data/benign-eval.jsonl"), "benign-eval")?,
    )?;
    let sets = vec![
        set(
            "jailbreak-eval.jsonl (hand-written)",
            read_jsonl(&repo.join("tests/data/jailbreak-eval.jsonl"), "hand-written")?,
        )?,
        set(
            "S-Labs test (every 2nd row)",
            every(read_jsonl(&data.join("slabs-test.jsonl"), "slabs")?, TEST_EVERY),
        )?,
        set(
            "neuralchemy test",
            read_jsonl(&data.join("neuralchemy-test.jsonl"), "neuralchemy")?,
        )?,
        set(
            "yanismiraoui (all; own: LOSO)",
            read_jsonl(&data.join("yanismiraoui.jsonl"), "yanismiraoui")?,
        )?,
    ];
    if choice == "shipped" {
        let head = JailbreakHead::builtin().map_err(anyhow::Error::msg)?;
        report(
            "shipped head, as the signal scores it",
            &head_scorer(head),
            &benign,
            &sets,
            true,
        );
        return Ok(());
    }

    let train_sets = [
        set(
            "slabs",
            every(read_jsonl(&data.join("slabs-train.jsonl"), "slabs")?, TRAIN_EVERY),
        )?,
        set(
            "yanismiraoui",
            read_jsonl(&data.join("yanismiraoui.jsonl"), "yanismiraoui")?,
        )?,
        set(
            "neuralchemy",
            read_jsonl(&data.join("neuralchemy-train.jsonl"), "neuralchemy")?,
        )?,
        set(
            "ordinary",
            read_jsonl(&repo.join("tools/data/jailbreak-benign-train.jsonl"), "ordinary")?,
        )?,
        set(
            "ordinary-extra",
            read_jsonl(&repo.join("tools/data/jailbreak-benign-train-extra.jsonl"), "ordinary")?,
        )?,
    ];
    // `skip`: a training set left out; `fold`: the ordinary requests with `index % 2 == fold` left out.
    let train_without = |skip: Option<&str>, fold: Option<usize>| -> anyhow::Result<HashMap<String, Tensor>> {
        let (mut x, mut y, mut o) = (Vec::new(), Vec::new(), Vec::new());
        for s in train_sets.iter().filter(|s| Some(s.name.as_str()) != skip) {
            let ordinary = s.name.starts_with("ordinary");
            for (i, (r, e)) in s.rows.iter().zip(&s.x).enumerate() {
                if ordinary && fold == Some(i % 2) {
                    continue;
                }
                x.push(e);
                y.push(r.attack);
                o.push(ordinary);
            }
        }
        train_own(&x, &y, &o, &dev)
    };
    let n: usize = train_sets.iter().map(|s| s.rows.len()).sum();
    let attacks: usize = train_sets.iter().flat_map(|s| &s.rows).filter(|r| r.attack).count();
    println!("own: {n} training texts ({attacks} attacks)");
    let own = train_without(None, None)?;
    let jailguard = jailguard_tensors(&data.join("jailguard-0.1.2.json"), &dev)?;
    let feats: Vec<Vec<Vec<(u32, f32)>>> = train_sets
        .iter()
        .map(|s| s.rows.iter().map(|r| lexical::features(&r.text)).collect())
        .collect();
    let lex_without = |skip: Option<&str>, fold: Option<usize>| -> LexicalModel {
        let (mut x, mut y, mut o) = (Vec::new(), Vec::new(), Vec::new());
        for (s, f) in train_sets
            .iter()
            .zip(&feats)
            .filter(|(s, _)| Some(s.name.as_str()) != skip)
        {
            let ordinary = s.name.starts_with("ordinary");
            for (i, (r, e)) in s.rows.iter().zip(f).enumerate() {
                if ordinary && fold == Some(i % 2) {
                    continue;
                }
                x.push(e);
                y.push(r.attack);
                o.push(ordinary);
            }
        }
        train_lexical(&x, &y, &o)
    };
    let lex = lex_without(None, None);

    // Calibration, on ordinary requests the head did not learn from (two-fold cross-fitting): our
    // members are retrained without half of the ordinary requests and the fused logit is taken on
    // that half's texts of 5 words or more (shorter ones are damped anyway). The 99.5th percentile
    // maps to the default threshold, the 99.8th to the recommended blocking threshold (the 99th
    // put 1.4% of the benign evaluation set, whose sources differ, above 0.5). Done twice: for
    // the embedding members alone (`embedding`, the head shipped before) and with the lexical
    // member (`fused`).
    let (mut held_emb, mut held_lex) = (Vec::new(), Vec::new());
    for fold in 0..2 {
        let head = head_of(&fuse(&jailguard, &train_without(None, Some(fold))?, 1.0, 0.0, &dev)?)?;
        let lex = lex_without(None, Some(fold));
        for set in train_sets.iter().filter(|s| s.name.starts_with("ordinary")) {
            for (_, (r, e)) in set
                .rows
                .iter()
                .zip(&set.x)
                .enumerate()
                .filter(|(i, (r, _))| i % 2 == fold && damped(1.0, &r.text) >= 1.0)
            {
                let z = logit(head.probability(e));
                held_emb.push(z);
                held_lex.push(lexical_mean(z, lex.logit(&r.text)));
            }
        }
    }
    let calibrate = |held: &[f32], what: &str| -> (f32, f32) {
        let (q_default, q_block) = (quantile(held, 1.0 - CAL_FP[0]), quantile(held, 1.0 - CAL_FP[1]));
        let scale = ((logit(THRESHOLDS[1]) - logit(THRESHOLDS[0])) / (q_block - q_default).max(1e-3)).clamp(0.25, 4.0);
        let shift = logit(THRESHOLDS[0]) - scale * q_default;
        println!(
            "calibration ({what}) on {} held-out ordinary requests: logit quantiles {q_default:.3} (FP {}) and {q_block:.3} (FP {}) → scale {scale:.4}, shift {shift:.4}",
            held.len(),
            CAL_FP[0],
            CAL_FP[1]
        );
        (scale, shift)
    };
    let (scale, shift) = calibrate(&held_emb, "embedding members");
    let (scale_lex, shift_lex) = calibrate(&held_lex, "with the lexical member");
    let fused_with = |own: &HashMap<String, Tensor>, lex: &LexicalModel| -> anyhow::Result<HashMap<String, Tensor>> {
        with_lexical(
            fuse(&jailguard, own, scale_lex * EMBEDDING_SHARE, shift_lex, &dev)?,
            lex,
            scale_lex * (1.0 - EMBEDDING_SHARE),
            &dev,
        )
    };

    // Recall on an injection source the head never saw: our members retrained without it.
    println!("\n== leave one injection source out (recall on the held-out source's attacks)");
    println!(
        "{:<14} {:>14} {:>14} {:>14} {:>14} {:>14} {:>14} {:>14} {:>14}",
        "held out",
        "own @0.5",
        "own @0.8",
        "lexical @0.5",
        "lexical @0.8",
        "embedding @0.5",
        "embedding @0.8",
        "fused @0.5",
        "fused @0.8"
    );
    for (held, eval) in [("slabs", 1), ("neuralchemy", 2), ("yanismiraoui", 3)] {
        let own_loso = train_without(Some(held), None)?;
        let lex_loso = lex_without(Some(held), None);
        let atk = |r: &Row| r.attack;
        let set = &sets[eval];
        let s_own = scores(&head_of(&own_loso)?, &set.rows, &set.x);
        let lex_alone = |r: &Row, _: &[f32]| damped(sigmoid(lex_loso.logit(&r.text)), &r.text);
        let s_lex = scores_with(&lex_alone, &set.rows, &set.x);
        let s_emb = scores(
            &head_of(&fuse(&jailguard, &own_loso, scale, shift, &dev)?)?,
            &set.rows,
            &set.x,
        );
        let s_fused = scores(&head_of(&fused_with(&own_loso, &lex_loso)?)?, &set.rows, &set.x);
        print!("{held:<14}");
        for s in [&s_own, &s_lex, &s_emb, &s_fused] {
            for t in THRESHOLDS {
                print!(" {:>14}", pct(rate(s, &set.rows, atk, t)));
            }
        }
        println!("   ({})", set.name);
    }

    // The mean: jailguard as member 0, ours as member 1 (the head averages their probabilities).
    let mut mean = jailguard.clone();
    mean.extend(own.iter().map(|(k, v)| (k.replacen("m0.", "m1.", 1), v.clone())));
    let embedding = fuse(&jailguard, &own, scale, shift, &dev)?;
    let fused = fused_with(&own, &lex)?;
    let lex_alone = |r: &Row, _: &[f32]| damped(sigmoid(lex.logit(&r.text)), &r.text);
    report("lexical alone (uncalibrated)", &lex_alone, &benign, &sets, false);
    for (name, tensors) in [
        ("own", &own),
        ("jailguard", &jailguard),
        ("mean", &mean),
        ("embedding", &embedding),
        ("fused", &fused),
    ] {
        let head = head_of(tensors)?;
        report(name, &head_scorer(&head), &benign, &sets, name == choice.as_str());
    }
    let fused_head = head_of(&fused)?;
    let chosen = match choice.as_str() {
        "own" => own,
        "jailguard" => jailguard,
        "mean" => mean,
        "embedding" => embedding,
        _ => fused,
    };
    // Request-time cost of the lexical member: its logit for a ~2K-token prompt (8,000 bytes of
    // ordinary text; the featuriser reads at most 2,048 words) next to the MLP's for one embedding.
    let mut long = String::new();
    for r in benign.rows.iter().cycle() {
        if long.len() >= 8_000 {
            break;
        }
        long.push_str(&r.text);
        long.push_str("\n\n");
    }
    let timed = |f: &dyn Fn() -> f32| -> f64 {
        let mut runs: Vec<f64> = (0..7)
            .map(|_| {
                let t = std::time::Instant::now();
                let mut acc = 0f32;
                for _ in 0..200 {
                    acc += f();
                }
                std::hint::black_box(acc);
                t.elapsed().as_secs_f64() * 1e6 / 200.0
            })
            .collect();
        runs.sort_by(f64::total_cmp);
        runs[3]
    };
    println!(
        "\nrequest-time cost (median of 7×200): lexical logit of {} bytes / {} words: {:.1} µs; MLP on one embedding: {:.1} µs",
        long.len(),
        long.split_whitespace().count(),
        timed(&|| lex.logit(std::hint::black_box(&long))),
        timed(&|| fused_head.probability(std::hint::black_box(&benign.x[0])))
    );
    candle_core::safetensors::save(&chosen, out)?;
    println!("\nwrote {out} ({choice})");
    Ok(())
}
