//! `make train-router`: trains the learned router (the `difficulty` signal) — two logistic heads,
//! the success of a cheap and of a strong reference model (Mixtral-8x7B-Instruct, GPT-4o), on
//! the all-MiniLM-L6-v2 embedding of the prompt (question and lettered options, as a benchmark
//! sends it) plus cheap request features — on per-question outcomes of MMLU-Pro questions
//! (`../shared/data/routing/mmlu-pro-outcomes`, kept out of the repository), with candle-nn.
//! `difficulty` = P(weak fails and strong answers) = P_strong · (1 − P_weak).
//!
//! It first validates leave-one-source-out (train on two of the question sources — stemez,
//! TheoremQA, SciBench —, test on the third) and prints, per held-out source, APGR and CPT(50%)
//! (`llmsoup_router::eval`) of the learned router, prompt length, a random router and the
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
use llmsoup_router::request::RequestView;
use llmsoup_router::signals::complexity;
use llmsoup_router::signals::difficulty::{self, DifficultyHead, FEATURE_NAMES, LinearHead, ReferencePair};

/// Full-batch Adam steps per head.
const STEPS: usize = 300;
const LR: f64 = 0.05;
/// L2 penalty on the weights (not the intercepts). Strong on purpose: what transfers to a source
/// the head never saw is the broad direction, not the training sources' quirks (1e-5 fitted them
/// and lost to prompt length on every held-out source).
const L2: f64 = 0.03;
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
    for &i in train {
        x.extend_from_slice(&emb[i]);
        x.extend((0..k).map(|j| (feats[i][j] - mean[j]) / scale[j]));
    }
    let x = Tensor::from_vec(x, (train.len(), width), &dev)?;
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
        let w = Var::zeros((width, 1), DType::F32, &dev)?;
        let c = Var::zeros(1, DType::F32, &dev)?;
        let mut opt = candle_nn::AdamW::new(
            vec![w.clone(), c.clone()],
            candle_nn::ParamsAdamW {
                lr: LR,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        for step in 0..STEPS {
            let logits = x.matmul(w.as_tensor())?.broadcast_add(c.as_tensor())?;
            // Binary cross-entropy with logits, stable form: max(l, 0) − l·y + ln(1 + e^−|l|).
            let bce = ((logits.relu()? - logits.mul(&y)?)? + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
            let data_loss = (bce.mul(&mask)?.sum_all()? / &observed)?;
            let loss = (data_loss.clone() + (w.as_tensor().sqr()?.sum_all()? * L2)?)?;
            opt.backward_step(&loss)?;
            if !quiet && (step % 100 == 0 || step + 1 == STEPS) {
                println!("  {name} step {step:>3}: loss {:.4}", data_loss.to_scalar::<f32>()?);
            }
        }
        heads.push(LinearHead {
            weight: w.as_tensor().flatten_all()?.to_vec1::<f32>()?,
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
        reference: ReferencePair {
            weak: data.models[pair.0].clone(),
            strong: data.models[pair.1].clone(),
        },
        weak,
        strong,
        trained: serde_json::Value::Null,
    })
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
    let cell = |(a, c): (f64, f64)| format!("{a:.3} / {:.1}%", c * 100.0);
    // The better of a baseline's two variants: higher APGR, and separately lower CPT.
    let best = |v: &[(f64, f64)]| {
        (
            v.iter().map(|x| x.0).fold(f64::MIN, f64::max),
            v.iter().map(|x| x.1).fold(f64::MAX, f64::min),
        )
    };
    let mut beats_all = true;
    for (p, &(weak, strong)) in pairs.iter().enumerate() {
        println!(
            "\nleave-one-source-out, weak {} / strong {}: APGR / CPT(50%) (baselines: the better of question / prompt text)",
            PAIRS[p].0, PAIRS[p].1
        );
        println!(
            "| held-out source (n) | learned `difficulty` | prompt length | random (mean of {RANDOM_SEEDS}) | `complexity` (demo exemplars) |"
        );
        println!("|---|---|---|---|---|");
        for held in &sources {
            let (train, test): (Vec<usize>, Vec<usize>) =
                (0..data.questions.len()).partition(|&i| &data.questions[i].source != held);
            let head = fit(emb, &feats, &data, (weak, strong), &train, true)?;
            let test = test.as_slice();
            let preds: HashMap<usize, difficulty::Prediction> =
                test.iter().map(|&i| (i, head.predict(&emb[i], &feats[i]))).collect();
            let learned = metrics(&data, test, (weak, strong), &|i| preds[&i].difficulty());
            let mut lengths = Vec::new();
            let mut complexities = Vec::new();
            for (_, length, cx) in &baselines {
                lengths.push(metrics(&data, test, (weak, strong), &|i| length[i]));
                complexities.push(metrics(&data, test, (weak, strong), &|i| cx[i]));
            }
            let (mut ra, mut rc) = (0.0, 0.0);
            for seed in 0..RANDOM_SEEDS {
                let (a, c) = metrics(&data, test, (weak, strong), &|i| {
                    random_score(&data.questions[i].id, seed)
                });
                ra += a / RANDOM_SEEDS as f64;
                rc += c / RANDOM_SEEDS as f64;
            }
            let (length, cx) = (best(&lengths), best(&complexities));
            let wins = [length, (ra, rc), cx]
                .iter()
                .all(|&(a, c)| learned.0 > a && learned.1 < c);
            if p == 0 {
                beats_all &= wins;
            }
            println!(
                "| {held} ({}) | {}{} | {} | {} | {} |",
                test.len(),
                cell(learned),
                if wins { " (beats all)" } else { "" },
                cell(length),
                cell((ra, rc)),
                cell(cx)
            );
            let variants = |v: &[(f64, f64)]| {
                baselines
                    .iter()
                    .zip(v)
                    .map(|((name, ..), (a, c))| (name.to_string(), serde_json::json!({"apgr": a, "cpt50": c})))
                    .collect::<serde_json::Map<_, _>>()
            };
            report.insert(
                format!("{}/{}: held out {held}", PAIRS[p].0, PAIRS[p].1),
                serde_json::json!({
                    "n": test.len(),
                    "learned": {"apgr": learned.0, "cpt50": learned.1},
                    "prompt_length": variants(&lengths),
                    "random": {"apgr": ra, "cpt50": rc},
                    "complexity": variants(&complexities),
                }),
            );
        }
    }
    println!(
        "\n{}",
        if beats_all {
            "the learned router beats prompt length, random and complexity on every held-out source"
        } else {
            "the learned router does NOT beat every baseline on every held-out source"
        }
    );

    println!("\ntraining on all {} questions", data.questions.len());
    let all: Vec<usize> = (0..data.questions.len()).collect();
    let mut head = fit(emb, &feats, &data, pairs[0], &all, false)?;
    head.trained = serde_json::json!({
        "data": "MMLU-Pro per-question outcomes of 30 LLMs (TIGER-AI-Lab/MMLU-Pro eval_results; MMLU-sourced rows excluded)",
        "questions": data.questions.len(),
        "input": INPUT,
        "steps": STEPS, "lr": LR, "l2": L2,
        "max_tokens": MAX_TOKENS,
        "leave_one_source_out": report,
    });
    let mut text = serde_json::to_string_pretty(&head)?;
    text.push('\n');
    std::fs::write(out, text).with_context(|| format!("writing {out}"))?;
    // What the sidecar will load must parse back.
    DifficultyHead::from_json(&std::fs::read_to_string(out)?).map_err(anyhow::Error::msg)?;
    println!("wrote {out}");
    Ok(())
}
