//! `llmsoup eval`: routes a labelled set with a config and measures it.
//!
//! Input: JSON lines `{"text": ..., "outcomes": {"<model>": true|false|score, ...}, "cost":
//! {"<model>": usd, ...}}` (an outcome is right/wrong or a graded score such as a judge's 1–10,
//! one kind per file; `cost` optional; without it a model costs its `pricing.prompt_per_1m` for the
//! prompt's estimated tokens). For a weak/strong pair it sweeps the router's threshold (the
//! `difficulty` score when the config has a difficulty signal, else the `complexity` score) and
//! reports the quality–cost curve, APGR and CPT (`llmsoup_router::eval`) beside two baselines on
//! the same prompts — prompt length (longer = harder, the baseline a learned router has to beat)
//! and random routing —; for the config as written, the accuracy, the strong share and the cost of
//! the models it picks.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context as _, bail};
use llmsoup_config::{Config, SignalKind};
use llmsoup_router::engine::Engine;
use llmsoup_router::eval::{Curve, Outcome};
use llmsoup_router::request::RequestView;

/// One labelled prompt.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Item {
    /// The prompt.
    pub text: String,
    /// How well each model answered it: right or wrong, or a graded score.
    pub outcomes: BTreeMap<String, Quality>,
    /// What each model costs on it (USD), when known.
    #[serde(default)]
    pub cost: Option<BTreeMap<String, f64>>,
    /// Free-form fields (ids, sources) are allowed and ignored.
    #[serde(flatten)]
    _rest: BTreeMap<String, serde_json::Value>,
}

/// One model's answer to a prompt: `true`/`false` (1 and 0), or a graded score (a number).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quality(pub f64);

impl<'de> serde::Deserialize<'de> for Quality {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Right(bool),
            Score(f64),
        }
        match Wire::deserialize(d) {
            Ok(Wire::Right(ok)) => Ok(Quality(f64::from(u8::from(ok)))),
            Ok(Wire::Score(x)) if x.is_finite() => Ok(Quality(x)),
            _ => Err(serde::de::Error::custom(
                "an outcome is true, false or a finite number (a graded score)",
            )),
        }
    }
}

/// Parses JSON lines, naming the line of a bad one.
pub fn parse_items(text: &str) -> anyhow::Result<Vec<Item>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("line {}", i + 1)))
        .collect()
}

/// Which score the sweep orders prompts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Score {
    /// The learned router's `difficulty`.
    Difficulty,
    /// The hand-weighted `complexity` score.
    Complexity,
}

/// What `llmsoup eval` measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Prompts routed.
    pub n: usize,
    /// The pair the sweep routes between.
    pub weak: String,
    /// The pair's strong model.
    pub strong: String,
    /// The score swept.
    pub score: Score,
    /// Prompts with both pair outcomes (the sweep's set).
    pub curve: Curve,
    /// The same prompts ordered by their length in characters (longer = harder).
    pub length: Curve,
    /// The config as written: accuracy (mean quality) over prompts with an outcome for the
    /// chosen model.
    pub accuracy: f64,
    /// Some outcome is a graded score rather than right/wrong: qualities are printed as numbers,
    /// not percentages.
    pub graded: bool,
    /// Prompts whose chosen model has no outcome (left out of `accuracy`).
    pub unlabelled: usize,
    /// Share of prompts the config sends to the strong model.
    pub strong_share: f64,
    /// Total cost of the config's choices, and of weak-only and strong-only.
    pub cost: (f64, f64, f64),
    /// Prompts per chosen model.
    pub per_model: BTreeMap<String, usize>,
}

/// The pair when not given: the default model is weak, the first model of the first decision
/// whose rules use the score is strong.
fn default_pair(config: &Config, kind: SignalKind) -> Option<(String, String)> {
    fn uses(rule: &llmsoup_config::RuleNode, kind: SignalKind) -> bool {
        rule.kind == Some(kind) || rule.conditions.iter().any(|c| uses(c, kind))
    }
    let strong = config
        .decisions
        .iter()
        .find(|d| d.rules.as_ref().is_some_and(|r| uses(r, kind)))?
        .model_refs
        .first()?
        .model
        .clone();
    Some((config.default_model().name.clone(), strong))
}

fn cost_of(config: &Config, item: &Item, model: &str, tokens: u64) -> f64 {
    if let Some(c) = item.cost.as_ref().and_then(|c| c.get(model)) {
        return *c;
    }
    config
        .model(model)
        .and_then(|m| m.pricing.as_ref())
        .map_or(0.0, |p| p.prompt_per_1m * tokens as f64 / 1e6)
}

/// Routes every item with `engine` and measures the pair (`weak`, `strong`, or the config's).
pub async fn run(
    engine: &Engine,
    config: &Config,
    items: &[Item],
    pair: Option<(String, String)>,
) -> anyhow::Result<Report> {
    if items.is_empty() {
        bail!("no items to evaluate");
    }
    let mut scores: Vec<Option<f64>> = Vec::with_capacity(items.len());
    let mut chosen = Vec::with_capacity(items.len());
    let mut has_difficulty = false;
    for item in items {
        let view = RequestView::from_text(&item.text);
        let routed = engine.route(&view).await.map_err(|e| anyhow::anyhow!(e.message))?;
        if let Some(p) = view.difficulty.get() {
            has_difficulty = true;
            scores.push(Some(p.difficulty()));
        } else {
            scores.push(view.complexity.get().copied());
        }
        chosen.push((routed.model, view.prompt_tokens));
    }
    let score = if has_difficulty {
        Score::Difficulty
    } else {
        Score::Complexity
    };
    let kind = match score {
        Score::Difficulty => SignalKind::Difficulty,
        Score::Complexity => SignalKind::Complexity,
    };
    let (weak, strong) = match pair {
        Some(p) => p,
        None => default_pair(config, kind).with_context(|| {
            format!("no decision uses a {kind} signal to infer the strong model: pass --weak and --strong")
        })?,
    };
    let (mut sweep, mut by_length) = (Vec::new(), Vec::new());
    let (mut correct, mut labelled, mut to_strong) = (0.0, 0usize, 0usize);
    let mut cost = (0.0, 0.0, 0.0);
    let mut per_model = BTreeMap::new();
    for ((item, score), (model, tokens)) in items.iter().zip(&scores).zip(&chosen) {
        let Some(score) = score else {
            bail!(
                "the config computes no difficulty or complexity score for `{}`",
                truncate(&item.text)
            );
        };
        if let (Some(w), Some(s)) = (item.outcomes.get(&weak), item.outcomes.get(&strong)) {
            sweep.push(Outcome {
                score: *score,
                weak: w.0,
                strong: s.0,
            });
            by_length.push(Outcome {
                score: item.text.chars().count() as f64,
                weak: w.0,
                strong: s.0,
            });
        }
        if let Some(q) = item.outcomes.get(model) {
            labelled += 1;
            correct += q.0;
        }
        to_strong += usize::from(*model == strong);
        *per_model.entry(model.clone()).or_insert(0) += 1;
        cost.0 += cost_of(config, item, model, *tokens);
        cost.1 += cost_of(config, item, &weak, *tokens);
        cost.2 += cost_of(config, item, &strong, *tokens);
    }
    let curve = Curve::new(&sweep).with_context(|| format!("no item has outcomes for both `{weak}` and `{strong}`"))?;
    let length = Curve::new(&by_length).context("prompt lengths are numbers")?;
    Ok(Report {
        n: items.len(),
        weak,
        strong,
        score,
        curve,
        length,
        accuracy: if labelled == 0 {
            f64::NAN
        } else {
            correct / labelled as f64
        },
        graded: items
            .iter()
            .flat_map(|i| i.outcomes.values())
            .any(|q| q.0 != 0.0 && q.0 != 1.0),
        unlabelled: items.len() - labelled,
        strong_share: to_strong as f64 / items.len() as f64,
        cost,
        per_model,
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

/// A quality as the outcomes give it: a percentage of right answers, or a graded mean.
fn quality(graded: bool, q: f64) -> String {
    if graded {
        format!("{q:.3}")
    } else {
        format!("{:.1}%", q * 100.0)
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or("n/a (the models tie)".into(), |x| format!("{:.1}%", x * 100.0))
}

/// APGR / CPT(50%) / CPT(80%) on one line.
fn summary(c: &Curve) -> String {
    format!(
        "{} / {} / {}",
        c.apgr().map_or("n/a".into(), |a| format!("{a:.3}")),
        pct(c.cpt(0.5)),
        pct(c.cpt(0.8))
    )
}

/// A curve's APGR and CPTs as JSON.
fn summary_json(c: &Curve) -> serde_json::Value {
    serde_json::json!({"apgr": c.apgr(), "cpt50": c.cpt(0.5), "cpt80": c.cpt(0.8)})
}

impl Report {
    /// The human-readable report.
    pub fn text(&self) -> String {
        let c = &self.curve;
        let mut out = String::new();
        let score = match self.score {
            Score::Difficulty => "difficulty",
            Score::Complexity => "complexity",
        };
        let _ = writeln!(
            out,
            "{} prompts; pair: weak `{}` ({}{}), strong `{}` ({}); sweeping `{score}`",
            self.n,
            self.weak,
            quality(self.graded, c.weak),
            if self.graded { " mean score" } else { " correct" },
            self.strong,
            quality(self.graded, c.strong)
        );
        let _ = writeln!(out, "\nstrong share  quality  PGR");
        for step in 0..=10 {
            let share = f64::from(step) / 10.0;
            let q = c.quality_at(share);
            let pgr = c.pgr(q).map_or("n/a".into(), |p| format!("{:.3}", p));
            let _ = writeln!(out, "{:>11.0}%  {:>7}  {pgr}", share * 100.0, quality(self.graded, q));
        }
        let _ = writeln!(
            out,
            "\nAPGR: {}",
            c.apgr().map_or("n/a (the models tie)".into(), |a| format!("{a:.3}"))
        );
        let _ = writeln!(out, "CPT(50%): {}", pct(c.cpt(0.5)));
        let _ = writeln!(out, "CPT(80%): {}", pct(c.cpt(0.8)));
        // A random router's expected curve is the straight line: PGR(c) = c.
        let _ = writeln!(
            out,
            "\nsame prompts, APGR / CPT(50%) / CPT(80%):\n  `{score}`: {}\n  prompt length (longer = harder): {}\n  random (expected): 0.500 / 50.0% / 80.0%",
            summary(c),
            summary(&self.length)
        );
        let _ = writeln!(
            out,
            "\nconfig as written: {} {}{}, strong share {:.1}%, cost {:.6} (weak only {:.6}, strong only {:.6})",
            if self.graded { "mean score" } else { "accuracy" },
            quality(self.graded, self.accuracy),
            if self.unlabelled > 0 {
                format!(" ({} prompts whose model has no outcome left out)", self.unlabelled)
            } else {
                String::new()
            },
            self.strong_share * 100.0,
            self.cost.0,
            self.cost.1,
            self.cost.2
        );
        for (m, n) in &self.per_model {
            let _ = writeln!(out, "  {m}: {n}");
        }
        out
    }

    /// The report as one JSON object (`--json`).
    pub fn json(&self) -> serde_json::Value {
        let c = &self.curve;
        serde_json::json!({
            "n": self.n,
            "weak": self.weak,
            "strong": self.strong,
            "weak_quality": c.weak,
            "strong_quality": c.strong,
            "apgr": c.apgr(),
            "cpt50": c.cpt(0.5),
            "cpt80": c.cpt(0.8),
            "baselines": {
                "prompt_length": summary_json(&self.length),
                "random": {"apgr": 0.5, "cpt50": 0.5, "cpt80": 0.8},
            },
            "curve": (0..=20).map(|s| {
                let share = f64::from(s) / 20.0;
                serde_json::json!({"strong_share": share, "quality": c.quality_at(share)})
            }).collect::<Vec<_>>(),
            "config": {
                "accuracy": self.accuracy,
                "strong_share": self.strong_share,
                "cost": self.cost.0,
                "weak_only_cost": self.cost.1,
                "strong_only_cost": self.cost.2,
                "per_model": self.per_model,
            },
        })
    }

    /// The quality–cost curve as an SVG: the router's curve, the random line between the two
    /// models, and the config's operating point.
    pub fn svg(&self) -> String {
        const W: f64 = 640.0;
        const H: f64 = 420.0;
        const L: f64 = 70.0;
        const R: f64 = 20.0;
        const T: f64 = 40.0;
        const B: f64 = 60.0;
        let c = &self.curve;
        let qualities = || c.points.iter().chain(&self.length.points).map(|p| p.1);
        let lo = qualities().fold(f64::MAX, f64::min).min(c.weak);
        let hi = qualities().fold(f64::MIN, f64::max).max(c.strong);
        let pad = ((hi - lo) * 0.08).max(0.01);
        let (lo, hi) = (lo - pad, hi + pad);
        let x = |share: f64| L + share * (W - L - R);
        let y = |q: f64| T + (hi - q) / (hi - lo) * (H - T - B);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let title = format!(
            "Quality vs strong share: {} / {} (APGR {}, n={})",
            esc(&self.weak),
            esc(&self.strong),
            c.apgr().map_or("n/a".into(), |a| format!("{a:.3}")),
            self.n
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{title}</text>"#,
            W / 2.0
        );
        // Axes and grid.
        for step in 0..=10 {
            let share = f64::from(step) / 10.0;
            let _ = writeln!(
                s,
                r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="#eee"/><text x="{0:.1}" y="{3:.1}" text-anchor="middle">{4:.0}%</text>"##,
                x(share),
                T,
                H - B,
                H - B + 16.0,
                share * 100.0
            );
        }
        for step in 0..=5 {
            let q = lo + (hi - lo) * f64::from(step) / 5.0;
            let _ = writeln!(
                s,
                r##"<line x1="{L}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#eee"/><text x="{2:.1}" y="{3:.1}" text-anchor="end">{4}</text>"##,
                y(q),
                W - R,
                L - 6.0,
                y(q) + 4.0,
                quality(self.graded, q)
            );
        }
        let _ = writeln!(
            s,
            r##"<rect x="{L}" y="{T}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
            W - L - R,
            H - T - B
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">share of requests sent to the strong model</text>"#,
            (L + W - R) / 2.0,
            H - 20.0
        );
        let _ = writeln!(
            s,
            r#"<text x="16" y="{0}" text-anchor="middle" transform="rotate(-90 16 {0})">{1}</text>"#,
            (T + H - B) / 2.0,
            if self.graded {
                "quality (mean score)"
            } else {
                "quality (share correct)"
            }
        );
        // Random router: the straight line between the two models.
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999" stroke-dasharray="6 4"/>"##,
            x(0.0),
            y(c.weak),
            x(1.0),
            y(c.strong)
        );
        let path: Vec<String> = c
            .points
            .iter()
            .map(|(share, q)| format!("{:.1},{:.1}", x(*share), y(*q)))
            .collect();
        let _ = writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#1f77b4" stroke-width="2"/>"##,
            path.join(" ")
        );
        let length: Vec<String> = self
            .length
            .points
            .iter()
            .map(|(share, q)| format!("{:.1},{:.1}", x(*share), y(*q)))
            .collect();
        let _ = writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#ff7f0e" stroke-width="1.5"/>"##,
            length.join(" ")
        );
        if self.accuracy.is_finite() {
            let _ = writeln!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="5" fill="#d62728"/>"##,
                x(self.strong_share),
                y(self.accuracy)
            );
        }
        let _ = writeln!(
            s,
            r##"<text x="{0}" y="{1}" fill="#1f77b4">— router (threshold sweep)</text><text x="{0}" y="{2}" fill="#ff7f0e">— prompt length</text><text x="{0}" y="{3}" fill="#999">- - random</text><text x="{0}" y="{4}" fill="#d62728">● config as written</text>"##,
            L + 10.0,
            T + 16.0,
            T + 32.0,
            T + 48.0,
            T + 64.0
        );
        s.push_str("</svg>\n");
        s
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_parse_and_name_bad_lines() {
        let items = parse_items(
            "{\"text\":\"a\",\"outcomes\":{\"w\":true},\"id\":7}\n\n{\"text\":\"b\",\"outcomes\":{},\"cost\":{\"w\":0.1}}\n",
        )
        .unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].cost.as_ref().unwrap()["w"], 0.1);
        let graded = parse_items("{\"text\":\"a\",\"outcomes\":{\"w\":7.5,\"s\":false}}").unwrap();
        assert_eq!(graded[0].outcomes["w"], Quality(7.5));
        assert_eq!(graded[0].outcomes["s"], Quality(0.0));
        let err = parse_items("{\"text\":\"a\",\"outcomes\":{\"w\":\"yes\"}}").unwrap_err();
        assert!(format!("{err:#}").contains("true, false or a finite number"), "{err:#}");
        let err = parse_items("{\"text\":\"a\",\"outcomes\":{}}\n{\"text\":1}").unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
    }
}
