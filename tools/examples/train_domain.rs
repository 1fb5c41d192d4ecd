//! `make train-domain`: trains the built-in domain classifier — a linear softmax head over the
//! all-MiniLM-L6-v2 sentence embedding, for the 14 MMLU-Pro categories — with candle-nn, and
//! measures it the way it is evaluated: on MMLU-Pro questions it did not learn from.
//!
//! Training data (never an MMLU, GSM8K or MT-Bench test item, nor an MMLU-Pro row other than ours):
//! - the 4,506 MMLU-Pro rows in `../shared/data/routing/mmlu-pro-outcomes/questions.jsonl`
//!   (question + category; sources stemez, TheoremQA, SciBench; the MMLU-derived rows were left
//!   out there on purpose). Read from there, never committed;
//! - MMLU's `dev` and `val` splits (`tools/data/mmlu-dev-val.jsonl`, MIT, 1,828 questions of all
//!   57 subjects): exam-style examples of law, health, history, philosophy and `other`, which the
//!   non-MMLU sources of MMLU-Pro do not have;
//! - `tools/data/domain-extra.jsonl`: consumer health questions (MedQuAD, CC BY 4.0) as `health`,
//!   everyday requests and questions (SNIPS, CC0; CLINC150's train split, CC BY 3.0) as
//!   `other`, and grade-school word problems (GSM8K's train split, MIT) as `math` — what users
//!   send, not exams.
//!
//! The loss is class-balanced (each category weighs the same in total), so the big STEM classes
//! do not swamp the small ones; the shipped head's logits are scaled by the factor fitted on the
//! held-out split (temperature scaling, [`Head::fit_scale`]). Validation, printed before the shipped head is trained on
//! everything:
//! - a held-out fifth of every (source, category) group of the MMLU-Pro rows, by a fixed hash of
//!   the question, scored by a head trained on the rest: the estimate for the hidden evaluation,
//!   which draws other rows from these same three sources. Per category, beside the committed
//!   head on the same rows;
//! - leave-one-source-out: for each of stemez / TheoremQA / SciBench, a head trained on the two
//!   others (+ the rest) is scored on the third, per category (categories with fewer than
//!   [`MIN_ROWS`] rows in a source are listed but marked too few to measure) — conservative: a
//!   source's own vocabulary is never seen;
//! - the shipped head on the hand-written prompts of `tests/data/domain-prompts.jsonl`.
//!
//! Reproducible: full-batch AdamW from a zero-initialised head, no randomness; byte-identical
//! output on the same CPU family with `RAYON_NUM_THREADS=1` (`make check-train-domain`).
//!
//! Usage: cargo run -p llmsoup-tools --example train_domain -- QUESTIONS_JSONL MMLU_DEV_VAL_JSONL DOMAIN_EXTRA_JSONL MODEL_DIR OUT|--eval-only

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use llmsoup_config::taxonomy::{CATEGORIES, category_of_mmlu_subject};
use llmsoup_models::SentenceEncoder;
use llmsoup_models::{candle_core, candle_nn};
use llmsoup_router::signals::domain::DEFAULT_BUILTIN_THRESHOLD;

/// Fewer epochs than it takes to fit the training rows: 200, 400 and 1,500 were tried; held-out
/// accuracy and the hand-written prompts were best at 200–400 and fell at 1,500 (overfitting).
const EPOCHS: usize = 200;
const LEARNING_RATE: f64 = 0.02;
const WEIGHT_DECAY: f64 = 1e-4;
/// The runtime's default `embedding.max_tokens`: train on what the signal will see.
const MAX_TOKENS: usize = 128;
/// Below this many rows of a category in a held-out source, its accuracy is not reported as a
/// measurement (one row is 1/n of it).
const MIN_ROWS: usize = 30;
const SOURCES: [&str; 3] = ["stemez", "theoremQA", "scibench"];

struct Row {
    text: String,
    label: u32,
    /// `stemez`, `theoremQA`, `scibench`, `mmlu-dev-val`, or a `domain-extra.jsonl` source.
    source: String,
}

fn lines(path: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let data = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    data.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

fn index(category: &str) -> anyhow::Result<u32> {
    CATEGORIES
        .iter()
        .position(|c| *c == category)
        .map(|i| i as u32)
        .with_context(|| format!("unknown category `{category}`"))
}

fn read_rows(questions: &Path, mmlu: &Path, extra: &Path) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for v in lines(questions)? {
        let (Some(q), Some(c), Some(src)) = (v["question"].as_str(), v["category"].as_str(), v["src"].as_str()) else {
            bail!("{}: every row needs question, category and src", questions.display());
        };
        if src.starts_with("ori_mmlu") {
            bail!(
                "{}: an MMLU-derived row ({src}); the domain head must not train on MMLU test items",
                questions.display()
            );
        }
        let source = src.split('-').next().unwrap_or(src).to_string();
        rows.push(Row {
            text: q.to_string(),
            label: index(c)?,
            source,
        });
    }
    for v in lines(mmlu)? {
        let (Some(q), Some(s), Some(split)) = (v["question"].as_str(), v["subject"].as_str(), v["split"].as_str())
        else {
            bail!("{}: every row needs question, subject and split", mmlu.display());
        };
        if split == "test" {
            bail!("{}: MMLU test items are not training data", mmlu.display());
        }
        let c = category_of_mmlu_subject(s).with_context(|| format!("unmapped MMLU subject `{s}`"))?;
        rows.push(Row {
            text: q.to_string(),
            label: index(c)?,
            source: "mmlu-dev-val".into(),
        });
    }
    for v in lines(extra)? {
        let (Some(t), Some(c), Some(src)) = (v["text"].as_str(), v["label"].as_str(), v["source"].as_str()) else {
            bail!("{}: every row needs text, label and source", extra.display());
        };
        if SOURCES.contains(&src) || src.starts_with("mmlu") {
            bail!("{}: `{src}` rows belong in the MMLU files, not here", extra.display());
        }
        rows.push(Row {
            text: t.to_string(),
            label: index(c)?,
            source: src.to_string(),
        });
    }
    Ok(rows)
}

/// Embeddings of `texts`, cached under `.cache/domain-data` keyed by a hash of the texts.
fn embed(enc: &SentenceEncoder, texts: &[&str], cache_dir: &Path) -> anyhow::Result<Vec<Vec<f32>>> {
    let key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        texts.hash(&mut h);
        MAX_TOKENS.hash(&mut h);
        h.finish()
    };
    let cache: PathBuf = cache_dir.join(format!("emb-{key:016x}.f32"));
    if let Ok(bytes) = std::fs::read(&cache) {
        let flat: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if flat.len() == texts.len() * enc.dim {
            return Ok(flat.chunks(enc.dim).map(<[f32]>::to_vec).collect());
        }
    }
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].len());
    let mut out = vec![Vec::new(); texts.len()];
    for (n, chunk) in order.chunks(32).enumerate() {
        let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
        for (&i, e) in chunk.iter().zip(enc.embed(&batch)?) {
            out[i] = e;
        }
        if n % 10 == 0 {
            eprint!(
                "\r  embedded {}/{}",
                (n * 32 + chunk.len()).min(texts.len()),
                texts.len()
            );
        }
    }
    eprintln!("\r  embedded {0}/{0}", texts.len());
    std::fs::create_dir_all(cache_dir)?;
    let bytes: Vec<u8> = out.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(&cache, bytes)?;
    Ok(out)
}

/// A trained head: `weight` [14, dim], `bias` [14].
struct Head {
    weight: Tensor,
    bias: Tensor,
}

impl Head {
    /// The head with its logits multiplied by `t` (weight and bias): same argmax, sharper (t > 1)
    /// or flatter probabilities.
    fn scaled(&self, t: f64) -> anyhow::Result<Head> {
        Ok(Head {
            weight: (&self.weight * t)?,
            bias: (&self.bias * t)?,
        })
    }

    /// Temperature scaling: the factor in 0.50, 0.55, ..., 4.00 that minimises the mean negative
    /// log-likelihood of `y` on `x`. Early-stopped, class-balanced training leaves the head
    /// under-confident, and under `classifier.threshold` a right answer becomes `other`.
    fn fit_scale(&self, x: &Tensor, y: &[u32]) -> anyhow::Result<f64> {
        let logits = x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?;
        let yt = Tensor::new(y, x.device())?.unsqueeze(1)?;
        let mut best = (f64::MAX, 1.0);
        for k in 10..=80 {
            let t = f64::from(k) * 0.05;
            let logp = candle_nn::ops::log_softmax(&(&logits * t)?, 1)?;
            let nll = -f64::from(logp.gather(&yt, 1)?.mean_all()?.to_scalar::<f32>()?);
            if nll < best.0 {
                best = (nll, t);
            }
        }
        Ok(best.1)
    }

    /// Labels as the signal gives them: the most probable category, `other` when its
    /// probability is under the default `classifier.threshold`.
    fn predict(&self, x: &Tensor) -> anyhow::Result<Vec<u32>> {
        let logits = x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?;
        let probs = candle_nn::ops::softmax(&logits, 1)?.to_vec2::<f32>()?;
        let other = index("other")?;
        Ok(probs
            .iter()
            .map(|p| {
                let (i, best) = p
                    .iter()
                    .enumerate()
                    .fold((0, f32::MIN), |a, (i, v)| if *v > a.1 { (i, *v) } else { a });
                if best < DEFAULT_BUILTIN_THRESHOLD {
                    other
                } else {
                    i as u32
                }
            })
            .collect())
    }
}

/// Linear softmax head, class-balanced cross-entropy, full-batch AdamW from zeros.
fn train(x: &[&Vec<f32>], y: &[u32], dev: &Device) -> anyhow::Result<Head> {
    let n = CATEGORIES.len();
    let dim = x[0].len();
    let xt = Tensor::from_vec(
        x.iter().flat_map(|r| r.iter().copied()).collect::<Vec<f32>>(),
        (x.len(), dim),
        dev,
    )?;
    let yt = Tensor::new(y, dev)?;
    let mut counts = vec![0f32; n];
    for c in y {
        counts[*c as usize] += 1.0;
    }
    let present = counts.iter().filter(|c| **c > 0.0).count() as f32;
    let class_w: Vec<f32> = counts.iter().map(|c| y.len() as f32 / (present * c.max(1.0))).collect();
    let sample_w = Tensor::new(
        y.iter().map(|c| class_w[*c as usize]).collect::<Vec<f32>>().as_slice(),
        dev,
    )?;
    let weight = Var::zeros((n, dim), DType::F32, dev)?;
    let bias = Var::zeros(n, DType::F32, dev)?;
    let mut opt = candle_nn::AdamW::new(
        vec![weight.clone(), bias.clone()],
        candle_nn::ParamsAdamW {
            lr: LEARNING_RATE,
            weight_decay: WEIGHT_DECAY,
            ..Default::default()
        },
    )?;
    for _ in 0..EPOCHS {
        let logits = xt.matmul(&weight.t()?)?.broadcast_add(&bias)?;
        let logp = candle_nn::ops::log_softmax(&logits, 1)?;
        let picked = logp.gather(&yt.unsqueeze(1)?, 1)?.squeeze(1)?;
        let loss = (picked.mul(&sample_w)?.sum_all()? / sample_w.sum_all()?)?.neg()?;
        opt.backward_step(&loss)?;
    }
    Ok(Head {
        weight: weight.as_tensor().contiguous()?,
        bias: bias.as_tensor().contiguous()?,
    })
}

fn tensor(rows: &[&Vec<f32>], dev: &Device) -> anyhow::Result<Tensor> {
    let dim = rows.first().map_or(0, |r| r.len());
    Ok(Tensor::from_vec(
        rows.iter().flat_map(|r| r.iter().copied()).collect::<Vec<f32>>(),
        (rows.len(), dim),
        dev,
    )?)
}

/// Per-category (correct, total) of predictions against gold labels.
fn per_category(pred: &[u32], gold: &[u32]) -> BTreeMap<u32, (usize, usize)> {
    let mut out: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    for (p, g) in pred.iter().zip(gold) {
        let e = out.entry(*g).or_default();
        e.0 += usize::from(p == g);
        e.1 += 1;
    }
    out
}

fn pct(c: usize, n: usize) -> String {
    format!("{:.1}%", 100.0 * c as f64 / n.max(1) as f64)
}

/// FNV-1a: a hash that is the same on every platform and Rust release, for the held-out split.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The held-out split: in every (MMLU-Pro source, category) group, the fifth of its rows with the
/// smallest [`fnv1a`] of the question (rounded to nearest; none from groups under 3 rows).
fn held_out(rows: &[Row]) -> Vec<bool> {
    let mut groups: BTreeMap<(&str, u32), Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        if SOURCES.contains(&r.source.as_str()) {
            groups.entry((r.source.as_str(), r.label)).or_default().push(i);
        }
    }
    let mut held = vec![false; rows.len()];
    for idx in groups.values_mut() {
        idx.sort_by_key(|&i| (fnv1a(&rows[i].text), i));
        let k = if idx.len() < 3 { 0 } else { (idx.len() + 2) / 5 };
        for &i in &idx[..k] {
            held[i] = true;
        }
    }
    held
}

fn cell(v: Option<(usize, usize)>) -> String {
    match v {
        None => "—".to_string(),
        Some((ok, n)) if n < MIN_ROWS => format!("({ok}/{n}, too few)"),
        Some((ok, n)) => format!("{} ({n})", pct(ok, n)),
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [questions, mmlu, extra, model, out] = args.as_slice() else {
        bail!(
            "usage: train_domain QUESTIONS_JSONL MMLU_DEV_VAL_JSONL DOMAIN_EXTRA_JSONL MODEL_DIR OUT.safetensors|--eval-only"
        );
    };
    let rows = read_rows(Path::new(questions), Path::new(mmlu), Path::new(extra))?;
    let mut by_source: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &rows {
        *by_source.entry(r.source.as_str()).or_default() += 1;
    }
    println!("training rows by source: {by_source:?}");
    let dev = Device::Cpu;
    let enc = SentenceEncoder::load(Path::new(model), MAX_TOKENS, dev.clone())?;
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/domain-data");
    // Two cache entries: the MMLU-Pro + MMLU rows, and the extra rows (edited more often).
    let n_exam = rows.iter().take_while(|r| !by_extra(r)).count();
    let mut x = embed(&enc, &texts[..n_exam], &cache)?;
    x.extend(embed(&enc, &texts[n_exam..], &cache)?);

    // Leave one source out: per held-out source and category, accuracy of a head that never saw
    // that source.
    println!("\nleave-one-source-out (train: the two other sources + MMLU dev/val + extra; test: the held-out source)");
    println!(
        "{:<18} {:>16} {:>16} {:>16} {:>16}",
        "category", SOURCES[0], SOURCES[1], SOURCES[2], "pooled"
    );
    let mut table: BTreeMap<u32, Vec<Option<(usize, usize)>>> = BTreeMap::new();
    let mut totals = vec![(0usize, 0usize); SOURCES.len()];
    for (s, held) in SOURCES.iter().enumerate() {
        let (mut xtr, mut ytr, mut xte, mut yte) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (r, e) in rows.iter().zip(&x) {
            if r.source == *held {
                xte.push(e);
                yte.push(r.label);
            } else {
                xtr.push(e);
                ytr.push(r.label);
            }
        }
        let head = train(&xtr, &ytr, &dev)?;
        let pred = head.predict(&tensor(&xte, &dev)?)?;
        for (c, (ok, n)) in per_category(&pred, &yte) {
            table.entry(c).or_insert_with(|| vec![None; SOURCES.len()])[s] = Some((ok, n));
            totals[s].0 += ok;
            totals[s].1 += n;
        }
    }
    let mut worst: Option<(f64, String)> = None;
    for (c, cells) in &table {
        let name = CATEGORIES[*c as usize];
        let (ok, n) = cells.iter().flatten().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        println!(
            "{name:<18} {:>16} {:>16} {:>16} {:>16}",
            cell(cells[0]),
            cell(cells[1]),
            cell(cells[2]),
            format!("{} ({n})", pct(ok, n))
        );
        for (s, v) in cells.iter().enumerate() {
            if let Some((ok, n)) = v.filter(|(_, n)| *n >= MIN_ROWS) {
                let acc = ok as f64 / n as f64;
                if worst.as_ref().is_none_or(|(w, _)| acc < *w) {
                    worst = Some((acc, format!("{name} on {}", SOURCES[s])));
                }
            }
        }
    }
    let all = totals.iter().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    println!(
        "{:<18} {:>16} {:>16} {:>16} {:>16}",
        "all",
        pct(totals[0].0, totals[0].1),
        pct(totals[1].0, totals[1].1),
        pct(totals[2].0, totals[2].1),
        pct(all.0, all.1)
    );
    if let Some((acc, what)) = worst {
        println!("lowest measured cell (≥ {MIN_ROWS} rows): {what} {:.1}%", 100.0 * acc);
    }
    let missing: Vec<&str> = (0..CATEGORIES.len() as u32)
        .filter(|c| !table.contains_key(c))
        .map(|c| CATEGORIES[c as usize])
        .collect();
    println!(
        "categories with no MMLU-Pro row from these sources (not measurable here): {}",
        missing.join(", ")
    );

    // The estimate of how the head is evaluated (other rows of these same three sources): a
    // held-out fifth of every (source, category) group, scored by a head trained on the rest.
    // Beside it, the committed head (compiled in) on the same rows: before retraining, the old
    // head; after, the new one in-sample (it trained on them), so only the first column counts.
    let held = held_out(&rows);
    let (mut xtr, mut ytr, mut xte, mut yte, mut src) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((r, e), h) in rows.iter().zip(&x).zip(&held) {
        if *h {
            xte.push(e);
            yte.push(r.label);
            src.push(r.source.as_str());
        } else {
            xtr.push(e);
            ytr.push(r.label);
        }
    }
    let head = train(&xtr, &ytr, &dev)?;
    let scale = head.fit_scale(&tensor(&xte, &dev)?, &yte)?;
    let head = head.scaled(scale)?;
    let pred = head.predict(&tensor(&xte, &dev)?)?;
    let committed = llmsoup_router::signals::DomainHead::builtin().map_err(anyhow::Error::msg)?;
    let old: Vec<u32> = xte
        .iter()
        .map(|e| index(&committed.classify(e, DEFAULT_BUILTIN_THRESHOLD).0))
        .collect::<anyhow::Result<_>>()?;
    let new_cats = per_category(&pred, &yte);
    let old_cats = per_category(&old, &yte);
    println!(
        "\nheld-out split (a fifth of every source × category group of the MMLU-Pro rows; train: the rest + MMLU dev/val + extra)"
    );
    println!(
        "{:<18} {:>16} {:>16} {:>16} {:>16} {:>18}",
        "category", "new head", SOURCES[0], SOURCES[1], SOURCES[2], "committed head"
    );
    for (c, (ok, n)) in &new_cats {
        let by_src: Vec<String> = SOURCES
            .iter()
            .map(|s| {
                let (mut k, mut m) = (0, 0);
                for ((p, g), r) in pred.iter().zip(&yte).zip(&src) {
                    if g == c && r == s {
                        k += usize::from(p == g);
                        m += 1;
                    }
                }
                if m == 0 { "—".to_string() } else { format!("{k}/{m}") }
            })
            .collect();
        let o = old_cats.get(c).copied().unwrap_or_default();
        println!(
            "{:<18} {:>16} {:>16} {:>16} {:>16} {:>18}",
            CATEGORIES[*c as usize],
            format!("{} ({n})", pct(*ok, *n)),
            by_src[0],
            by_src[1],
            by_src[2],
            pct(o.0, o.1)
        );
    }
    let ok: usize = new_cats.values().map(|c| c.0).sum();
    let ok_old: usize = old_cats.values().map(|c| c.0).sum();
    let macro_avg = new_cats.values().map(|(k, n)| *k as f64 / *n as f64).sum::<f64>() / new_cats.len() as f64;
    println!(
        "{:<18} {:>16} {:>16} {:>16} {:>16} {:>18}",
        "all",
        format!("{} ({})", pct(ok, yte.len()), yte.len()),
        "",
        "",
        "",
        pct(ok_old, yte.len())
    );
    println!("macro average over categories (new head): {:.1}%", 100.0 * macro_avg);
    println!("logit scale fitted on these rows (temperature scaling, applied to the shipped head too): {scale:.2}");
    let under = pred.iter().filter(|p| **p == index("other").unwrap_or(13)).count();
    println!("held-out rows the new head labels `other` (best probability under {DEFAULT_BUILTIN_THRESHOLD}): {under}");

    // The shipped head: every row.
    let all_x: Vec<&Vec<f32>> = x.iter().collect();
    let all_y: Vec<u32> = rows.iter().map(|r| r.label).collect();
    // Its logits scaled by the factor fitted on the held-out split (printed above).
    let head = train(&all_x, &all_y, &dev)?.scaled(scale)?;

    let prompts_path = std::env::var_os("DOMAIN_PROMPTS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/domain-prompts.jsonl"),
        PathBuf::from,
    );
    let prompts = lines(&prompts_path)?;
    let ptexts: Vec<&str> = prompts.iter().filter_map(|v| v["text"].as_str()).collect();
    let pgold: Vec<u32> = prompts
        .iter()
        .map(|v| index(v["label"].as_str().unwrap_or("")))
        .collect::<anyhow::Result<_>>()?;
    let px = enc.embed(&ptexts)?;
    let ppred = head.predict(&tensor(&px.iter().collect::<Vec<_>>(), &dev)?)?;
    let ok = ppred.iter().zip(&pgold).filter(|(p, g)| p == g).count();
    let old_ok = px
        .iter()
        .zip(&pgold)
        .filter(|(e, g)| index(&committed.classify(e, DEFAULT_BUILTIN_THRESHOLD).0).ok() == Some(**g))
        .count();
    println!(
        "\nshipped head on tests/data/domain-prompts.jsonl (hand-written user-style prompts): {} ({ok}/{}); committed head {}",
        pct(ok, pgold.len()),
        pgold.len(),
        pct(old_ok, pgold.len())
    );
    for (p, (g, t)) in ppred.iter().zip(pgold.iter().zip(&ptexts)) {
        if p != g {
            println!("  {} → {}: {t}", CATEGORIES[*g as usize], CATEGORIES[*p as usize]);
        }
    }
    if out != "--eval-only" {
        candle_core::safetensors::save(
            &HashMap::from([("weight".to_string(), head.weight), ("bias".to_string(), head.bias)]),
            out,
        )?;
        println!("wrote {out}");
    }
    Ok(())
}

/// Rows from `tools/data/domain-extra.jsonl` (not MMLU-Pro, not MMLU).
fn by_extra(r: &Row) -> bool {
    !SOURCES.contains(&r.source.as_str()) && r.source != "mmlu-dev-val"
}
