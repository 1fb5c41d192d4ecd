//! `make train-router`: trains the learned router (the `difficulty` signal) — two logistic heads,
//! the success of a cheap and of a strong reference model (Mixtral-8x7B-Instruct, GPT-4o), on
//! the all-MiniLM-L6-v2 embedding of the prompt (question and lettered options, as a benchmark
//! sends it) plus cheap request features (standardised, clipped to ±3 deviations; the embedding
//! weights shrunk harder than the feature weights) — on per-question outcomes of MMLU-Pro questions
//! (`../shared/data/routing/mmlu-pro-outcomes`, kept out of the repository), with candle-nn.
//! `difficulty` = P(weak fails and strong answers) = P_strong · (1 − P_weak).
//!
//! It first validates leave-one-source-out (train on two of the question sources — stemez,
//! TheoremQA, SciBench —, test on the third) and prints, per held-out source, APGR, CPT(50%) and
//! CPT(80%) (`llmsoup_router::eval`; with bootstrap standard errors for the learned router) of
//! the learned router, prompt length, a random router and the
//! hand-weighted `complexity` score with the demo config's exemplars, on weak/strong pairs (the
//! baselines scored on the question alone and on the whole prompt; the table shows the better).
//! Then it trains on every question and writes the head (`crates/router/assets/
//! difficulty_head.json`, committed).
//!
//! Reproducible: full-batch training from zero weights, no sampling; run single-threaded
//! (`RAYON_NUM_THREADS=1`, as `scripts/train-router.sh` does) so sums come out in one order;
//! `make check-train-router` retrains and compares byte for byte. Embeddings of the texts are
//! cached under `.cache/router/` (not committed).
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
use llmsoup_router::prediction::ReferenceStrengths;
use llmsoup_router::request::RequestView;
use llmsoup_router::signals::complexity;
use llmsoup_router::signals::difficulty::{self, DifficultyHead, FEATURE_NAMES, LinearHead, ReferencePair};
use llmsoup_tools::rasch;

/// Full-batch Adam steps per head.
const STEPS: usize = 300;
const LR: f64 = 0.05;
/// L2 penalties (weights, not intercepts), one for the 384 embedding weights and one for the 8
/// feature weights, chosen by leave-one-source-out. Strong on the embedding on purpose: the
/// direction it learns on two sources hardly transfers to the third (the embedding alone is
/// barely better than random on a held-out source; 1e-5 fitted the training sources' quirks and
/// lost to prompt length everywhere), while the few standardised features carry across sources
/// and need less shrinking.
const L2_EMBEDDING: f64 = 0.1;
const L2_FEATURES: f64 = 0.01;
/// Standardised features are clipped to ±this many standard deviations (in training and in the
/// sidecar): prompts unlike the training set (no options, a whole document) stay in range.
const FEATURE_CLIP: f32 = 3.0;
/// Bootstrap resamples of a held-out source for the learned router's standard errors.
const BOOTSTRAP: u64 = 200;
/// Longest question, in tokens, as the sidecar embeds it (`embedding.max_tokens` default).
const MAX_TOKENS: usize = 128;
/// The weak/strong pairs the validation reports (RouteLLM's pair was GPT-4 / Mixtral-8x7B).
const PAIRS: [(&str, &str); 2] = [
    ("Mixtral-8x7B-Instruct-v0.1", "gpt-4o-2024-05-13"),
    ("Meta-Llama-3_1-8B-Instruct", "gpt-4o-2024-05-13"),
];
const RANDOM_SEEDS: u64 = 50;
/// The text the router learns from: `"prompt"` (question and lettered options, as a benchmark
/// sends it) or `"question"`.
const INPUT: &str = "prompt";

/// One text variant of every question, with what the router and the baselines read from it.
struct Input {
    name: &'static str,
    texts: Vec<String>,
    emb: Vec<Vec<f32>>,
    views: Vec<RequestView>,
}

struct Question {
    id: String,
    text: String,
    options: Vec<String>,
    source: String,
}

impl Question {
    /// The prompt as a benchmark sends it to a model (and so as the router sees it): the question,
    /// then one lettered line per option (MMLU's format).
    fn prompt(&self) -> String {
        let mut p = self.text.clone();
        for (i, o) in self.options.iter().enumerate() {
            p.push_str(&format!("\n{}. {o}", (b'A' + i as u8) as char));
        }
        p
    }
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
            options: v["options"]
                .as_array()
                .context("question without `options`")?
                .iter()
                .map(|o| o.as_str().map(str::to_string).context("an option is not a string"))
                .collect::<anyhow::Result<_>>()?,
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

/// Fits the two logistic heads on the rows `train` (full batch, zero start: deterministic).
fn fit(
    emb: &[Vec<f32>],
    feats: &[[f32; FEATURE_NAMES.len()]],
    data: &Data,
    pair: (usize, usize),
    train: &[usize],
    quiet: bool,
) -> anyhow::Result<DifficultyHead> {
    let dev = Device::Cpu;
    let k = FEATURE_NAMES.len();
    let dim = emb[0].len();
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
    let mut xe = Vec::with_capacity(train.len() * dim);
    let mut xf = Vec::with_capacity(train.len() * k);
    for &i in train {
        xe.extend_from_slice(&emb[i]);
        xf.extend(difficulty::standardise(&feats[i], &mean, &scale, FEATURE_CLIP));
    }
    let xe = Tensor::from_vec(xe, (train.len(), dim), &dev)?;
    let xf = Tensor::from_vec(xf, (train.len(), k), &dev)?;
    let mut heads = Vec::new();
    for (name, model) in [("weak", pair.0), ("strong", pair.1)] {
        let (mut y, mut mask) = (Vec::new(), Vec::new());
        for &i in train {
            let o = data.outcomes[i][model];
            y.push(if o.is_nan() { 0.0 } else { o });
            mask.push(if o.is_nan() { 0.0f32 } else { 1.0 });
        }
        let y = Tensor::from_vec(y, (train.len(), 1), &dev)?;
        let mask = Tensor::from_vec(mask, (train.len(), 1), &dev)?;
        let observed = mask.sum_all()?;
        let we = Var::zeros((dim, 1), DType::F32, &dev)?;
        let wf = Var::zeros((k, 1), DType::F32, &dev)?;
        let c = Var::zeros(1, DType::F32, &dev)?;
        let mut opt = candle_nn::AdamW::new(
            vec![we.clone(), wf.clone(), c.clone()],
            candle_nn::ParamsAdamW {
                lr: LR,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        for step in 0..STEPS {
            let logits = (xe.matmul(we.as_tensor())? + xf.matmul(wf.as_tensor())?)?.broadcast_add(c.as_tensor())?;
            // Binary cross-entropy with logits, stable form: max(l, 0) − l·y + ln(1 + e^−|l|).
            let bce = ((logits.relu()? - logits.mul(&y)?)? + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
            let data_loss = (bce.mul(&mask)?.sum_all()? / &observed)?;
            let penalty = ((we.as_tensor().sqr()?.sum_all()? * L2_EMBEDDING)?
                + (wf.as_tensor().sqr()?.sum_all()? * L2_FEATURES)?)?;
            let loss = (data_loss.clone() + penalty)?;
            opt.backward_step(&loss)?;
            if !quiet && (step % 100 == 0 || step + 1 == STEPS) {
                println!("  {name} step {step:>3}: loss {:.4}", data_loss.to_scalar::<f32>()?);
            }
        }
        let mut weight = we.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        weight.extend(wf.as_tensor().flatten_all()?.to_vec1::<f32>()?);
        heads.push(LinearHead {
            weight,
            bias: c.as_tensor().to_vec1::<f32>()?[0],
        });
    }
    let strong = heads.pop().context("two heads")?;
    let weak = heads.pop().context("two heads")?;
    Ok(DifficultyHead {
        encoder: "all-MiniLM-L6-v2".into(),
        dim,
        features: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        feature_mean: mean,
        feature_scale: scale,
        feature_clip: FEATURE_CLIP,
        reference: ReferencePair {
            weak: data.models[pair.0].clone(),
            strong: data.models[pair.1].clone(),
        },
        weak,
        strong,
        trained: serde_json::Value::Null,
    })
}

/// A router's quality on one held-out source and pair.
#[derive(Clone, Copy)]
struct Metrics {
    apgr: f64,
    cpt50: f64,
    cpt80: f64,
}

impl Metrics {
    fn of(items: &[Outcome]) -> Metrics {
        let curve = Curve::new(items).expect("scores are numbers");
        Metrics {
            apgr: curve.apgr().unwrap_or(f64::NAN),
            cpt50: curve.cpt(0.5).unwrap_or(f64::NAN),
            cpt80: curve.cpt(0.8).unwrap_or(f64::NAN),
        }
    }

    /// The mean over several routers (the random seeds).
    fn mean(all: &[Metrics]) -> Metrics {
        let n = all.len() as f64;
        Metrics {
            apgr: all.iter().map(|m| m.apgr).sum::<f64>() / n,
            cpt50: all.iter().map(|m| m.cpt50).sum::<f64>() / n,
            cpt80: all.iter().map(|m| m.cpt80).sum::<f64>() / n,
        }
    }

    /// The better value of each metric over a baseline's text variants (higher APGR, lower CPTs,
    /// each taken separately: generous to the baseline).
    fn best(all: &[Metrics]) -> Metrics {
        Metrics {
            apgr: all.iter().map(|m| m.apgr).fold(f64::MIN, f64::max),
            cpt50: all.iter().map(|m| m.cpt50).fold(f64::MAX, f64::min),
            cpt80: all.iter().map(|m| m.cpt80).fold(f64::MAX, f64::min),
        }
    }

    fn cell(&self) -> String {
        format!(
            "{:.3} / {:.1}% / {:.1}%",
            self.apgr,
            self.cpt50 * 100.0,
            self.cpt80 * 100.0
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({"apgr": self.apgr, "cpt50": self.cpt50, "cpt80": self.cpt80})
    }
}

/// The outcomes of `score` on the rows `rows` for one pair (rows where either model has no
/// answer are left out).
fn outcomes(data: &Data, rows: &[usize], pair: (usize, usize), score: &dyn Fn(usize) -> f64) -> Vec<Outcome> {
    rows.iter()
        .filter(|&&i| !data.outcomes[i][pair.0].is_nan() && !data.outcomes[i][pair.1].is_nan())
        .map(|&i| Outcome::binary(score(i), data.outcomes[i][pair.0] > 0.5, data.outcomes[i][pair.1] > 0.5))
        .collect()
}

fn metrics(data: &Data, rows: &[usize], pair: (usize, usize), score: &dyn Fn(usize) -> f64) -> Metrics {
    Metrics::of(&outcomes(data, rows, pair, score))
}

/// splitmix64: a fixed, portable pseudo-random sequence (the bootstrap must not depend on the
/// standard library's hasher).
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Bootstrap standard errors of APGR and CPT(50%) over the held-out questions: how much of a
/// difference between two routers on one source is noise. Resampled rows with tied scores are
/// separated by a tiny index offset so the curve does not merge copies into one block.
fn bootstrap_se(items: &[Outcome]) -> (f64, f64) {
    let mut state = 0x5eed_u64;
    let (mut a, mut c) = (Vec::new(), Vec::new());
    for _ in 0..BOOTSTRAP {
        let sample: Vec<Outcome> = (0..items.len())
            .map(|j| {
                let o = items[(splitmix(&mut state) % items.len() as u64) as usize];
                Outcome {
                    score: o.score + j as f64 * 1e-12,
                    ..o
                }
            })
            .collect();
        let m = Metrics::of(&sample);
        a.push(m.apgr);
        c.push(m.cpt50);
    }
    let sd = |v: &[f64]| {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
    };
    (sd(&a), sd(&c))
}

/// A deterministic pseudo-random score per (question, seed).
fn random_score(id: &str, seed: u64) -> f64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (id, seed).hash(&mut h);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Area under the ROC curve of `pred` for the outcomes `y` (Mann–Whitney, tied predictions
/// counted half); NaN when `y` is all one value.
fn auc(pred: &[f64], y: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..pred.len()).collect();
    order.sort_by(|a, b| pred[*a].total_cmp(&pred[*b]));
    // Mid-ranks (1-based) over blocks of equal predictions.
    let mut rank = vec![0.0; pred.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && pred[order[j + 1]] == pred[order[i]] {
            j += 1;
        }
        for &k in &order[i..=j] {
            rank[k] = (i + j) as f64 / 2.0 + 1.0;
        }
        i = j + 1;
    }
    let pos = y.iter().filter(|v| **v).count() as f64;
    let neg = y.len() as f64 - pos;
    let rank_sum: f64 = rank.iter().zip(y).filter(|(_, v)| **v).map(|(r, _)| r).sum();
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// How well the success estimate (`Prediction::success_at`, the logit line through the pair's
/// heads) predicts the *other* models' per-question correctness on a held-out source, with every
/// model's strength refitted (Rasch) on the training sources only: per model, the held-out
/// accuracy, the mean predicted success, the AUC and the Brier score against the constant
/// "this model's accuracy on the training sources".
struct SuccessCheck {
    model: String,
    strength: f64,
    accuracy: f64,
    predicted: f64,
    auc: f64,
    brier: f64,
    brier_constant: f64,
}

fn success_check(
    data: &Data,
    train: &[usize],
    test: &[usize],
    pair: (usize, usize),
    preds: &HashMap<usize, difficulty::Prediction>,
) -> Vec<SuccessCheck> {
    let rows: Vec<rasch::Row> = train
        .iter()
        .map(|&i| {
            data.outcomes[i]
                .iter()
                .map(|o| (!o.is_nan()).then_some(*o > 0.5))
                .collect()
        })
        .collect();
    let fit = rasch::fit(data.models.len(), &rows);
    let reference = ReferenceStrengths {
        weak: fit.theta[pair.0],
        strong: fit.theta[pair.1],
    };
    let mut out = Vec::new();
    for m in (0..data.models.len()).filter(|m| *m != pair.0 && *m != pair.1) {
        let answered: Vec<usize> = test
            .iter()
            .copied()
            .filter(|&i| !data.outcomes[i][m].is_nan())
            .collect();
        let trained: Vec<f32> = train
            .iter()
            .map(|&i| data.outcomes[i][m])
            .filter(|o| !o.is_nan())
            .collect();
        if answered.len() < 50 || trained.is_empty() {
            continue;
        }
        let constant = trained.iter().map(|o| f64::from(*o)).sum::<f64>() / trained.len() as f64;
        let y: Vec<bool> = answered.iter().map(|&i| data.outcomes[i][m] > 0.5).collect();
        let pred: Vec<f64> = answered
            .iter()
            .map(|i| preds[i].success_at(fit.theta[m], reference))
            .collect();
        let n = y.len() as f64;
        let brier = |p: &dyn Fn(usize) -> f64| {
            y.iter()
                .enumerate()
                .map(|(k, v)| (p(k) - f64::from(u8::from(*v))).powi(2))
                .sum::<f64>()
                / n
        };
        out.push(SuccessCheck {
            model: data.models[m].clone(),
            strength: fit.theta[m],
            accuracy: y.iter().filter(|v| **v).count() as f64 / n,
            predicted: pred.iter().sum::<f64>() / n,
            auc: auc(&pred, &y),
            brier: brier(&|k| pred[k]),
            brier_constant: brier(&|_| constant),
        });
    }
    out
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
    // Two texts per question: the question alone, and the prompt (question and lettered options)
    // as a benchmark sends it. The router learns from `INPUT`; the baselines are scored on both,
    // and the table shows the better of the two for each.
    let questions: Vec<String> = data.questions.iter().map(|q| q.text.clone()).collect();
    let prompts: Vec<String> = data.questions.iter().map(Question::prompt).collect();
    let variants = [("question", &questions), ("prompt", &prompts)];
    let mut inputs = Vec::new();
    for (name, texts) in variants {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let emb = embeddings(&enc, Path::new(model_dir), &refs)?;
        let views: Vec<RequestView> = refs.iter().map(|t| RequestView::from_text(t)).collect();
        inputs.push(Input {
            name,
            texts: texts.clone(),
            emb,
            views,
        });
    }
    let input = inputs
        .iter()
        .find(|i| i.name == INPUT)
        .context("INPUT names a text variant")?;
    let emb = &input.emb;
    let feats: Vec<[f32; FEATURE_NAMES.len()]> = input.views.iter().map(difficulty::features).collect();

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
    let complexity_of = |inp: &Input| -> Vec<f64> {
        inp.emb
            .iter()
            .zip(&inp.views)
            .map(|(q, view)| {
                let best = |v: &Vec<Vec<f32>>| v.iter().map(|c| cosine(q, c)).fold(0.0f32, f32::max);
                complexity::blend(
                    Some(complexity::semantic_score(best(&hard), best(&easy))),
                    complexity::Features::of(view).score(),
                )
            })
            .collect()
    };
    // Baselines per text variant: (name, scores).
    let baselines: Vec<(&str, Vec<f64>, Vec<f64>)> = inputs
        .iter()
        .map(|inp| {
            let length = inp.texts.iter().map(|t| t.chars().count() as f64).collect();
            (inp.name, length, complexity_of(inp))
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
    let mut beats_all = true;
    let mut losses = Vec::new();
    let mut success_rows = Vec::new();
    let mut success_report = BTreeMap::new();
    let mut success_detail = Vec::new();
    for (p, &(weak, strong)) in pairs.iter().enumerate() {
        println!(
            "\nleave-one-source-out, weak {} / strong {}: APGR / CPT(50%) / CPT(80%) (baselines: the better of question / prompt text)",
            PAIRS[p].0, PAIRS[p].1
        );
        println!(
            "| held-out source (n) | learned `difficulty` | ± bootstrap SE (APGR, CPT50) | prompt length | random (mean of {RANDOM_SEEDS}) | `complexity` (demo exemplars) |"
        );
        println!("|---|---|---|---|---|---|");
        for held in &sources {
            let (train, test): (Vec<usize>, Vec<usize>) =
                (0..data.questions.len()).partition(|&i| &data.questions[i].source != held);
            let head = fit(emb, &feats, &data, (weak, strong), &train, true)?;
            let test = test.as_slice();
            let preds: HashMap<usize, difficulty::Prediction> =
                test.iter().map(|&i| (i, head.predict(&emb[i], &feats[i]))).collect();
            let learned_items = outcomes(&data, test, (weak, strong), &|i| preds[&i].difficulty());
            let learned = Metrics::of(&learned_items);
            let se = bootstrap_se(&learned_items);
            let mut lengths = Vec::new();
            let mut complexities = Vec::new();
            for (_, length, cx) in &baselines {
                lengths.push(metrics(&data, test, (weak, strong), &|i| length[i]));
                complexities.push(metrics(&data, test, (weak, strong), &|i| cx[i]));
            }
            let randoms: Vec<Metrics> = (0..RANDOM_SEEDS)
                .map(|seed| {
                    metrics(&data, test, (weak, strong), &|i| {
                        random_score(&data.questions[i].id, seed)
                    })
                })
                .collect();
            let random = Metrics::mean(&randoms);
            let (length, cx) = (Metrics::best(&lengths), Metrics::best(&complexities));
            let mut wins = true;
            for (name, b) in [("prompt length", length), ("random", random), ("complexity", cx)] {
                if learned.apgr <= b.apgr {
                    wins = false;
                    if p == 0 {
                        losses.push(format!("{held}: APGR {:.3} vs {name} {:.3}", learned.apgr, b.apgr));
                    }
                }
                if learned.cpt50 >= b.cpt50 {
                    wins = false;
                    if p == 0 {
                        losses.push(format!(
                            "{held}: CPT(50%) {:.1}% vs {name} {:.1}%",
                            learned.cpt50 * 100.0,
                            b.cpt50 * 100.0
                        ));
                    }
                }
            }
            if p == 0 {
                beats_all &= wins;
                let checks = success_check(&data, &train, test, (weak, strong), &preds);
                let mean = |f: &dyn Fn(&SuccessCheck) -> f64| checks.iter().map(f).sum::<f64>() / checks.len() as f64;
                success_rows.push(format!(
                    "| {held} | {} | {:.3} | {:.4} / {:.4} | {}/{} | {:.3} |",
                    checks.len(),
                    mean(&|c| c.auc),
                    mean(&|c| c.brier),
                    mean(&|c| c.brier_constant),
                    checks.iter().filter(|c| c.brier < c.brier_constant).count(),
                    checks.len(),
                    mean(&|c| c.predicted - c.accuracy),
                ));
                let round4 = |x: f64| (x * 1e4).round() / 1e4;
                success_report.insert(
                    held.clone(),
                    serde_json::json!({
                        "models": checks.len(),
                        "mean_auc": round4(mean(&|c| c.auc)),
                        "brier": round4(mean(&|c| c.brier)),
                        "brier_constant_training_accuracy": round4(mean(&|c| c.brier_constant)),
                        "estimate_better": checks.iter().filter(|c| c.brier < c.brier_constant).count(),
                        "mean_bias": round4(mean(&|c| c.predicted - c.accuracy)),
                    }),
                );
                success_detail.extend(checks.iter().map(|c| {
                    format!(
                        "  {held} {:<32} strength {:>6.2}  held-out accuracy {:.3}  predicted {:.3}  AUC {:.3}  Brier {:.4} (constant {:.4})",
                        c.model, c.strength, c.accuracy, c.predicted, c.auc, c.brier, c.brier_constant
                    )
                }));
            }
            println!(
                "| {held} ({}) | {}{} | ±{:.3} / ±{:.1} pts | {} | {} | {} |",
                test.len(),
                learned.cell(),
                if wins { " (beats all)" } else { "" },
                se.0,
                se.1 * 100.0,
                length.cell(),
                random.cell(),
                cx.cell()
            );
            let variants = |v: &[Metrics]| {
                baselines
                    .iter()
                    .zip(v)
                    .map(|((name, ..), m)| (name.to_string(), m.json()))
                    .collect::<serde_json::Map<_, _>>()
            };
            report.insert(
                format!("{}/{}: held out {held}", PAIRS[p].0, PAIRS[p].1),
                serde_json::json!({
                    "n": test.len(),
                    "learned": learned.json(),
                    "learned_bootstrap_se": {"apgr": se.0, "cpt50": se.1},
                    "prompt_length": variants(&lengths),
                    "random": random.json(),
                    "complexity": variants(&complexities),
                }),
            );
        }
    }
    println!(
        "\nthe success estimate for the {} other models (strengths refitted without the held-out source; AUC and Brier per model, averaged; bias = mean predicted − held-out accuracy)",
        data.models.len() - 2
    );
    println!(
        "| held-out source | models | mean AUC | Brier: estimate / constant training accuracy | estimate better | mean bias |"
    );
    println!("|---|---|---|---|---|---|");
    for row in success_rows.iter().chain(&success_detail) {
        println!("{row}");
    }

    if beats_all {
        println!(
            "\nthe learned router beats prompt length, random and complexity on APGR and CPT(50%) on every held-out source"
        );
    } else {
        println!(
            "\nthe learned router does NOT beat every baseline on every held-out source ({}):",
            PAIRS[0].1
        );
        for l in &losses {
            println!("  loses {l}");
        }
    }

    println!("\ntraining on all {} questions", data.questions.len());
    let all: Vec<usize> = (0..data.questions.len()).collect();
    let mut head = fit(emb, &feats, &data, pairs[0], &all, false)?;
    head.trained = serde_json::json!({
        "data": "MMLU-Pro per-question outcomes of 30 LLMs (TIGER-AI-Lab/MMLU-Pro eval_results; MMLU-sourced rows excluded)",
        "questions": data.questions.len(),
        "input": INPUT,
        "steps": STEPS, "lr": LR, "l2_embedding": L2_EMBEDDING, "l2_features": L2_FEATURES,
        "feature_clip": FEATURE_CLIP,
        "max_tokens": MAX_TOKENS,
        "leave_one_source_out": report,
        "success_estimate_other_models": success_report,
    });
    let mut text = serde_json::to_string_pretty(&head)?;
    text.push('\n');
    std::fs::write(out, text).with_context(|| format!("writing {out}"))?;
    // What the sidecar will load must parse back.
    DifficultyHead::from_json(&std::fs::read_to_string(out)?).map_err(anyhow::Error::msg)?;
    println!("wrote {out}");
    Ok(())
}
