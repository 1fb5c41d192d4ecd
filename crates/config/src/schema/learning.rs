//! What routing learns from the sidecar's own traffic: live threshold calibration
//! (`routing.target_strong_share`, `decisions[].target_share`, `routing.calibration`) and
//! feedback-driven quality estimates (`routing.feedback`).

use super::*;

/// Live calibration of score thresholds (`routing.calibration`): how many recent scores the
/// quantile is taken over, and how many are needed before it replaces the configured threshold.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CalibrationConfig {
    /// Recent scores kept per calibrated decision (a sliding window; 10–100000, default 2000).
    #[serde(default = "default_window")]
    pub window: usize,
    /// Scores needed before the live quantile replaces the configured threshold (1..=window,
    /// default 100).
    #[serde(default = "default_warmup")]
    pub warmup: usize,
}

fn default_window() -> usize {
    2000
}
fn default_warmup() -> usize {
    100
}

impl Default for CalibrationConfig {
    fn default() -> Self {
        CalibrationConfig {
            window: default_window(),
            warmup: default_warmup(),
        }
    }
}

/// Quality estimates learned from `POST /v1/feedback` (`routing.feedback`): per decision and
/// model, the configured `models[].quality` blended with the exponentially decayed mean of the
/// feedback scores, which the `cost` algorithm reads instead of the configured value.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackConfig {
    /// How many feedback scores the configured quality weighs like (> 0, default 5): the
    /// estimate is `(prior_weight·quality + Σ wᵢ·scoreᵢ) / (prior_weight + Σ wᵢ)`.
    #[serde(default = "default_prior_weight")]
    pub prior_weight: f64,
    /// Seconds after which a feedback score counts half (≥ 1, default 86400: a day), so old
    /// feedback fades and the estimate returns to the configured quality.
    #[serde(default = "default_half_life_s")]
    pub half_life_s: u64,
}

fn default_prior_weight() -> f64 {
    5.0
}
fn default_half_life_s() -> u64 {
    86_400
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        FeedbackConfig {
            prior_weight: default_prior_weight(),
            half_life_s: default_half_life_s(),
        }
    }
}

/// The score a calibrated decision's threshold applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ScoreLeaf {
    /// A `difficulty` rule (its `threshold` is what calibration moves).
    Difficulty(String),
    /// A complexity rule's `<rule>:hard` level (its `hard_from` is what calibration moves).
    ComplexityHard(String),
}

impl ScoreLeaf {
    /// `difficulty:<rule>` or `complexity:<rule>:hard`, as the leaf is written in decisions.
    pub fn label(&self) -> String {
        match self {
            ScoreLeaf::Difficulty(r) => format!("difficulty:{r}"),
            ScoreLeaf::ComplexityHard(r) => format!("complexity:{r}:hard"),
        }
    }
}

/// A score rule whose threshold is calibrated live.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibrated {
    /// Share of routed requests (0–1) whose score should clear the threshold.
    pub share: f64,
    /// The score rule.
    pub leaf: ScoreLeaf,
    /// The decisions that asked for it (their one score condition is this rule).
    pub decisions: Vec<String>,
}

impl RuleNode {
    /// Every score condition (`difficulty` rules, complexity `:hard` levels) in the tree, with
    /// whether it sits under a NOT.
    pub fn score_leaves(&self) -> Vec<(ScoreLeaf, bool)> {
        fn walk(n: &RuleNode, negated: bool, out: &mut Vec<(ScoreLeaf, bool)>) {
            if let (Some(kind), Some(name)) = (n.kind, &n.name) {
                match kind {
                    SignalKind::Difficulty => out.push((ScoreLeaf::Difficulty(name.clone()), negated)),
                    SignalKind::Complexity => {
                        if let Some(rule) = name.strip_suffix(":hard") {
                            out.push((ScoreLeaf::ComplexityHard(rule.to_string()), negated));
                        }
                    }
                    _ => {}
                }
                return;
            }
            let not = n.operator == Some(RuleOperator::Not);
            for c in &n.conditions {
                walk(c, negated ^ not, out);
            }
        }
        let mut out = Vec::new();
        walk(self, false, &mut out);
        out
    }
}

impl Config {
    /// The live calibration decision `i` asks for, if any: its own `target_share`, else
    /// `routing.target_strong_share` when its rules hold exactly one score condition (not under
    /// NOT). `validate` guarantees a decision's own `target_share` has such a condition.
    pub fn decision_calibration(&self, i: usize) -> Option<(ScoreLeaf, f64)> {
        let d = self.decisions.get(i)?;
        let share = d.target_share.or(self.routing.target_strong_share)?;
        let leaves = d.rules.as_ref()?.score_leaves();
        match leaves.as_slice() {
            [(leaf, false)] => Some((leaf.clone(), share)),
            _ => None,
        }
    }

    /// Every score rule calibrated live, with its share and the decisions that asked for it.
    /// The rule's threshold moves for every decision that references it.
    pub fn calibrated_rules(&self) -> Vec<Calibrated> {
        let mut out: Vec<Calibrated> = Vec::new();
        for (i, d) in self.decisions.iter().enumerate() {
            let Some((leaf, share)) = self.decision_calibration(i) else {
                continue;
            };
            match out.iter_mut().find(|c| c.leaf == leaf) {
                Some(c) => c.decisions.push(d.name.clone()),
                None => out.push(Calibrated {
                    share,
                    leaf,
                    decisions: vec![d.name.clone()],
                }),
            }
        }
        out
    }

    /// Checks `routing.target_strong_share`, `routing.calibration`, `routing.feedback` and
    /// every `decisions[].target_share`.
    pub(crate) fn validate_learning(&self) -> Result<(), ConfigError> {
        let r = &self.routing;
        if let Some(s) = r.target_strong_share
            && !(0.0..=1.0).contains(&s)
        {
            return Err(ConfigError::invalid(
                "routing.target_strong_share",
                "a share is between 0 and 1",
            ));
        }
        let c = &r.calibration;
        if !(10..=100_000).contains(&c.window) {
            return Err(ConfigError::invalid("routing.calibration.window", "must be 10..100000"));
        }
        if !(1..=c.window).contains(&c.warmup) {
            return Err(ConfigError::invalid(
                "routing.calibration.warmup",
                "must be between 1 and routing.calibration.window",
            ));
        }
        let f = &r.feedback;
        if !(f.prior_weight.is_finite() && f.prior_weight > 0.0) {
            return Err(ConfigError::invalid(
                "routing.feedback.prior_weight",
                "must be a positive number",
            ));
        }
        if f.half_life_s == 0 {
            return Err(ConfigError::invalid(
                "routing.feedback.half_life_s",
                "must be at least 1",
            ));
        }
        let mut shares: Vec<(ScoreLeaf, f64, &str)> = Vec::new();
        for (i, d) in self.decisions.iter().enumerate() {
            if let Some((leaf, share)) = self.decision_calibration(i) {
                if let Some((_, other, by)) = shares.iter().find(|(l, s, _)| *l == leaf && *s != share) {
                    return Err(ConfigError::invalid(
                        format!("decisions[{i}].target_share"),
                        format!(
                            "`{}` is already calibrated to a share of {other} by decision `{by}`; one rule has one threshold",
                            leaf.label()
                        ),
                    ));
                }
                shares.push((leaf, share, d.name.as_str()));
            }
            let Some(share) = d.target_share else { continue };
            let at = format!("decisions[{i}].target_share");
            if !(0.0..=1.0).contains(&share) {
                return Err(ConfigError::invalid(at, "a share is between 0 and 1"));
            }
            let leaves = d.rules.as_ref().map(RuleNode::score_leaves).unwrap_or_default();
            if !matches!(leaves.as_slice(), [(_, false)]) {
                return Err(ConfigError::invalid(
                    at,
                    format!(
                        "a calibrated decision needs exactly one `difficulty` or complexity `<rule>:hard` condition, not under NOT (found {})",
                        leaves.len()
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{ScoreLeaf, load_str_with_env};

    fn load(decisions: &str, routing: &str) -> Result<crate::Config, String> {
        let text = format!(
            "
providers: [{{name: p, base_url: 'http://127.0.0.1:1/v1'}}]
models: [{{name: cheap, provider: p}}, {{name: strong, provider: p}}]
signals:
  keywords: [{{name: k, keywords: [x]}}]
  difficulty: [{{name: hard}}, {{name: harder}}]
  complexity: [{{name: task}}]
decisions:
{decisions}
routing:
  default_model: cheap
{routing}"
        );
        load_str_with_env(&text, &|_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn the_routing_share_calibrates_decisions_with_one_score_condition() {
        let cfg = load(
            "  - {name: a, rules: {type: difficulty, name: hard}, modelRefs: [{model: strong}]}
  - {name: b, rules: {operator: AND, conditions: [{type: keyword, name: k}, {type: complexity, name: 'task:hard'}]}, modelRefs: [{model: strong}]}
  - {name: c, rules: {operator: NOT, conditions: [{type: difficulty, name: harder}]}, modelRefs: [{model: cheap}]}
  - {name: d, rules: {type: keyword, name: k}, modelRefs: [{model: strong}]}
  - {name: e, rules: {type: complexity, name: 'task:easy'}, modelRefs: [{model: cheap}]}",
            "  target_strong_share: 0.2",
        )
        .unwrap();
        let rules = cfg.calibrated_rules();
        let leaves: Vec<&ScoreLeaf> = rules.iter().map(|c| &c.leaf).collect();
        assert_eq!(
            leaves,
            [
                &ScoreLeaf::Difficulty("hard".into()),
                &ScoreLeaf::ComplexityHard("task".into())
            ]
        );
        assert!(rules.iter().all(|c| c.share == 0.2));
        assert_eq!(rules[1].decisions, ["b"]);
    }

    #[test]
    fn bad_calibration_keys_are_refused_by_name() {
        let no_score = load(
            "  - {name: a, rules: {type: keyword, name: k}, modelRefs: [{model: strong}], target_share: 0.3}",
            "",
        )
        .unwrap_err();
        assert!(
            no_score.contains("decisions[0].target_share") && no_score.contains("exactly one"),
            "{no_score}"
        );
        let negated = load(
            "  - {name: a, rules: {operator: NOT, conditions: [{type: difficulty, name: hard}]}, modelRefs: [{model: cheap}], target_share: 0.3}",
            "",
        )
        .unwrap_err();
        assert!(negated.contains("not under NOT"), "{negated}");
        let clash = load(
            "  - {name: a, rules: {type: difficulty, name: hard}, modelRefs: [{model: strong}], target_share: 0.3}
  - {name: b, rules: {type: difficulty, name: hard}, modelRefs: [{model: strong}], target_share: 0.4}",
            "",
        )
        .unwrap_err();
        assert!(
            clash.contains("decisions[1].target_share") && clash.contains("`a`"),
            "{clash}"
        );
        for (routing, key) in [
            ("  target_strong_share: 1.5", "routing.target_strong_share"),
            ("  calibration: {window: 5}", "routing.calibration.window"),
            (
                "  calibration: {window: 100, warmup: 101}",
                "routing.calibration.warmup",
            ),
            ("  feedback: {prior_weight: 0}", "routing.feedback.prior_weight"),
            ("  feedback: {half_life_s: 0}", "routing.feedback.half_life_s"),
        ] {
            let e = load("  - {name: a, modelRefs: [{model: strong}]}", routing).unwrap_err();
            assert!(e.contains(key), "{routing}: {e}");
        }
    }
}
