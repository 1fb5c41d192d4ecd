//! `llmsoup calibrate`: the thresholds that send a target share of the traffic in a decision log
//! to the strong model — the (1 − share) quantile of the logged scores (RouteLLM's calibration) —
//! and, with `--write`, those thresholds written back into the config file (comments kept), so a
//! restart or a deployment without live calibration starts where the traffic says.
//!
//! Which rules: with a config, those its decisions calibrate live (`target_share`,
//! `routing.target_strong_share`), else every `difficulty` rule and the complexity rule; without
//! one, whatever scores the log holds. Scores: the route lines' `difficulty` (any difficulty
//! rule: they share one score) and `complexity` (the first complexity rule's, so only a config
//! with one complexity rule gets a `hard_from`).

use std::fmt::Write as _;

use anyhow::{Context as _, bail};
use llmsoup_config::{Config, ScoreLeaf};

use crate::observe::decision_log;

/// One computed threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// `difficulty:<rule>`, `complexity:<rule>:hard`, or the bare score name without a config.
    pub condition: String,
    /// Where it goes in the config (`signals.difficulty[0]`), when known.
    pub item: Option<String>,
    /// The key there (`threshold`, `hard_from`).
    pub key: &'static str,
    /// The share it was computed for.
    pub share: f64,
    /// Scores it was computed from.
    pub samples: usize,
    /// The threshold.
    pub value: f64,
}

/// The route lines' scores of one field (`difficulty`, `complexity`).
pub fn scores(log: &str, field: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "route")
        .filter_map(|v| v[field].as_f64())
        .collect()
}

/// The thresholds for `log` (a decision log's text). `share` overrides the config's shares; one
/// of the two is required.
pub fn thresholds(log: &str, config: Option<&Config>, share: Option<f64>) -> anyhow::Result<Vec<Threshold>> {
    if let Some(s) = share
        && !(0.0..=1.0).contains(&s)
    {
        bail!("--strong-share must be between 0 and 1");
    }
    let difficulty = scores(log, "difficulty");
    let complexity = scores(log, "complexity");
    let compute = |condition: String, item: Option<String>, key, share: f64, scores: &[f64]| {
        decision_log::calibrate(scores, share).map(|value| Threshold {
            condition,
            item,
            key,
            share,
            samples: scores.len(),
            value,
        })
    };
    let Some(config) = config else {
        let share = share.context("--strong-share is required without --config")?;
        let out: Vec<Threshold> = [
            ("difficulty", "threshold", &difficulty),
            ("complexity", "hard_from", &complexity),
        ]
        .into_iter()
        .filter_map(|(name, key, s)| compute(name.to_string(), None, key, share, s))
        .collect();
        if out.is_empty() {
            bail!("no difficulty or complexity scores in the decision log");
        }
        return Ok(out);
    };
    let calibrated = config.calibrated_rules();
    let mut rules: Vec<(ScoreLeaf, Option<f64>)> = calibrated.iter().map(|c| (c.leaf.clone(), Some(c.share))).collect();
    if rules.is_empty() {
        rules.extend(
            config
                .signals
                .difficulty
                .iter()
                .map(|r| (ScoreLeaf::Difficulty(r.name.clone()), None)),
        );
        if let [r] = config.signals.complexity.as_slice() {
            rules.push((ScoreLeaf::ComplexityHard(r.name.clone()), None));
        }
    }
    let mut out = Vec::new();
    for (leaf, configured) in rules {
        let Some(share) = share.or(configured).or(config.routing.target_strong_share) else {
            bail!(
                "no share for `{}`: pass --strong-share or set routing.target_strong_share",
                leaf.label()
            );
        };
        let (item, key, s) = match &leaf {
            ScoreLeaf::Difficulty(name) => {
                let i = config.signals.difficulty.iter().position(|r| &r.name == name);
                (i.map(|i| format!("signals.difficulty[{i}]")), "threshold", &difficulty)
            }
            ScoreLeaf::ComplexityHard(name) => {
                if config.signals.complexity.len() != 1 {
                    // The log's complexity score is the first rule's: ambiguous with several.
                    continue;
                }
                let i = config.signals.complexity.iter().position(|r| &r.name == name);
                (i.map(|i| format!("signals.complexity[{i}]")), "hard_from", &complexity)
            }
        };
        if let Some(t) = compute(leaf.label(), item, key, share, s) {
            out.push(t);
        }
    }
    if out.is_empty() {
        bail!("the decision log holds no scores for the config's difficulty or complexity rules");
    }
    Ok(out)
}

/// The lines `calibrate` prints.
pub fn report(ts: &[Threshold]) -> String {
    let mut out = String::new();
    for t in ts {
        let _ = writeln!(
            out,
            "{}: {} requests with a score; for {:.0}% strong: {}: {:.4}",
            t.condition,
            t.samples,
            t.share * 100.0,
            t.key,
            t.value
        );
    }
    out
}

/// `text` (a config file's) with every threshold that has a place written in, comments kept.
pub fn write_back(text: &str, ts: &[Threshold]) -> anyhow::Result<String> {
    let mut text = text.to_string();
    for t in ts {
        let Some(item) = &t.item else { continue };
        text = llmsoup_config::edit::set_number(&text, item, t.key, t.value)
            .map_err(|e| anyhow::anyhow!("{}.{}: {e}", item, t.key))?;
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "\
providers: [{name: p, base_url: 'http://127.0.0.1:1/v1'}]
models: [{name: cheap, provider: p}, {name: strong, provider: p}]
signals:
  difficulty:
    # moved by calibrate --write
    - name: hard
      threshold: 0.5
decisions:
  - {name: d, rules: {type: difficulty, name: hard}, modelRefs: [{model: strong}]}
routing:
  default_model: cheap
  target_strong_share: 0.25
";

    fn log() -> String {
        (0..100)
            .map(|i| {
                format!(
                    "{{\"event\":\"route\",\"difficulty\":{},\"complexity\":0.5}}\n",
                    f64::from(i) / 100.0
                )
            })
            .collect()
    }

    #[test]
    fn the_configs_share_gives_the_threshold_and_it_is_written_back() {
        let cfg = llmsoup_config::load_str(CONFIG).unwrap();
        let ts = thresholds(&log(), Some(&cfg), None).unwrap();
        assert_eq!(ts.len(), 1);
        assert_eq!((ts[0].value, ts[0].samples, ts[0].share), (0.75, 100, 0.25));
        assert_eq!(ts[0].item.as_deref(), Some("signals.difficulty[0]"));
        assert!(report(&ts).contains("difficulty:hard: 100 requests"));
        let out = write_back(CONFIG, &ts).unwrap();
        assert!(
            out.contains("    # moved by calibrate --write\n    - name: hard\n      threshold: 0.75\n"),
            "{out}"
        );
        let back = llmsoup_config::load_str(&out).unwrap();
        assert_eq!(back.signals.difficulty[0].threshold, 0.75);
        // --strong-share overrides the config.
        let ts = thresholds(&log(), Some(&cfg), Some(0.5)).unwrap();
        assert_eq!(ts[0].value, 0.5);
    }

    #[test]
    fn without_a_config_every_score_in_the_log_is_calibrated() {
        let ts = thresholds(&log(), None, Some(0.1)).unwrap();
        let names: Vec<&str> = ts.iter().map(|t| t.condition.as_str()).collect();
        assert_eq!(names, ["difficulty", "complexity"]);
        assert!(thresholds(&log(), None, None).is_err());
        assert!(thresholds("", None, Some(0.3)).is_err());
        assert!(thresholds(&log(), None, Some(3.0)).is_err());
    }
}
