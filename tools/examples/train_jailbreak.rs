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
//!   self-instruct seed tasks);
//! - `jailguard`: the published weights of the `jailguard` crate (MIT OR Apache-2.0);
//! - `mean`: both, their probabilities averaged;
//! - `shipped`: the committed `crates/router/assets/jailbreak_head.safetensors` (`--head shipped`
//!   only measures it: `make eval-signals`).
//!
//! Measured on: `tests/data/benign-eval.jsonl` (1,182 ordinary prompts from five public sources
//! that no candidate trains on: support, short assistant requests, coding, writing), the
//! hand-written `tests/data/jailbreak-eval.jsonl`, and the S-Labs and neuralchemy test splits.
//! Recall on held-out sources is leave-one-source-out: for each injection source, `own` is
//! retrained without it and scored on it.
//!
//! Usage: cargo run -p llmsoup-tools --example train_jailbreak -- DATA_DIR MODEL_DIR OUT --head own|jailguard|mean|shipped

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;

use anyhow::{Context, bail};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use llmsoup_models::SentenceEncoder;
use llmsoup_models::{candle_core, candle_nn};
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
/// Weight of an ordinary request (`tools/data/jailbreak-benign-train.jsonl`) in the loss, relative
/// to a benign row of the injection corpora: a false positive on ordinary traffic refuses a real
/// user, and the injection corpora's benign rows are mostly statements, not requests.
const ORDINARY_WEIGHT: f32 = 4.0;

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
    let positives = attack.iter().filter(|a| **a).count();
    let pos_w = (attack.len() - positives) as f32 / positives.max(1) as f32;
    let y: Vec<f32> = attack.iter().map(|a| f32::from(u8::from(*a))).collect();
    let w: Vec<f32> = attack
        .iter()
        .zip(ordinary)
        .map(|(a, o)| match (a, o) {
            (true, _) => pos_w,
            (false, true) => ORDINARY_WEIGHT,
            (false, false) => 1.0,
        })
        .collect();
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
        .map(|(r, e)| damped(head.probability(e), &r.text))
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

fn report(name: &str, head: &JailbreakHead, benign: &Set, sets: &[Set], verbose: bool) {
    println!("\n== {name}: false positives on ordinary traffic (benign-eval.jsonl, no source in any training set)");
    println!("{:<22} {:>18} {:>18}", "source", "FP @0.5", "FP @0.8");
    let s = scores(head, &benign.rows, &benign.x);
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
    if verbose {
        let attacks: Vec<(&Row, f32)> = sets
            .iter()
            .flat_map(|set| set.rows.iter().zip(scores(head, &set.rows, &set.x)))
            .filter(|(r, _)| r.attack)
            .collect();
        for t in [0.5f32, 0.6, 0.7, 0.8, 0.9, 0.95] {
            let fp = s.iter().filter(|v| **v >= t).count();
            let tp = attacks.iter().filter(|(_, v)| *v >= t).count();
            println!(
                "  sweep: threshold {t:.2}: ordinary FP {}, attacks caught (all sets) {}",
                pct((fp, s.len())),
                pct((tp, attacks.len()))
            );
        }
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
        let s = scores(head, &set.rows, &set.x);
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
        bail!("usage: train_jailbreak DATA_DIR MODEL_DIR OUT.safetensors --head own|jailguard|mean|shipped");
    };
    if flag != "--head" || !matches!(choice.as_str(), "own" | "jailguard" | "mean" | "shipped") {
        bail!("--head must be `own`, `jailguard`, `mean` or `shipped`");
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
        report("shipped head, as the signal scores it", head, &benign, &sets, true);
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
    ];
    let train_without = |skip: Option<&str>| -> anyhow::Result<HashMap<String, Tensor>> {
        let (mut x, mut y, mut o) = (Vec::new(), Vec::new(), Vec::new());
        for s in train_sets.iter().filter(|s| Some(s.name.as_str()) != skip) {
            x.extend(s.x.iter());
            y.extend(s.rows.iter().map(|r| r.attack));
            o.extend(s.rows.iter().map(|_| s.name == "ordinary"));
        }
        train_own(&x, &y, &o, &dev)
    };
    let n: usize = train_sets.iter().map(|s| s.rows.len()).sum();
    let attacks: usize = train_sets.iter().flat_map(|s| &s.rows).filter(|r| r.attack).count();
    println!("own: {n} training texts ({attacks} attacks)");

    // Recall on an injection source the head never saw: retrain without it.
    println!("\n== own, leave one injection source out (recall on the held-out source's attacks)");
    println!(
        "{:<16} {:<34} {:>18} {:>18}",
        "held out", "scored on", "recall @0.5", "recall @0.8"
    );
    for (held, eval) in [("slabs", 1), ("neuralchemy", 2), ("yanismiraoui", 3)] {
        let head = head_of(&train_without(Some(held))?)?;
        let s = scores(&head, &sets[eval].rows, &sets[eval].x);
        let atk = |r: &Row| r.attack;
        println!(
            "{held:<16} {:<34} {:>18} {:>18}",
            sets[eval].name,
            pct(rate(&s, &sets[eval].rows, atk, THRESHOLDS[0])),
            pct(rate(&s, &sets[eval].rows, atk, THRESHOLDS[1]))
        );
    }

    let own = train_without(None)?;
    let jailguard = jailguard_tensors(&data.join("jailguard-0.1.2.json"), &dev)?;
    // The mean: jailguard as member 0, ours as member 1 (the head averages its members).
    let mut mean = jailguard.clone();
    mean.extend(own.iter().map(|(k, v)| (k.replacen("m0.", "m1.", 1), v.clone())));
    for (name, tensors) in [("own", &own), ("jailguard", &jailguard), ("mean", &mean)] {
        report(name, &head_of(tensors)?, &benign, &sets, name == choice.as_str());
    }
    let chosen = match choice.as_str() {
        "own" => own,
        "jailguard" => jailguard,
        _ => mean,
    };
    candle_core::safetensors::save(&chosen, out)?;
    println!("\nwrote {out} ({choice})");
    Ok(())
}
