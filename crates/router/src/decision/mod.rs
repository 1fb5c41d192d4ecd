//! The decision engine: rule trees over signal matches, and selection of the winning decision.
//! Semantics follow vLLM Semantic Router: AND = mean of child confidences, OR = best child,
//! NOT = exactly one child (confidence 1 when it does not match), empty rules = catch-all with
//! confidence 0; winners by tier, then priority → confidence → name (or confidence first).

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::Arc;

use crate::config::{Config, DecisionConfig, OnSignalError, RuleNode, RuleOperator, SignalKind, Strategy};
use crate::signals::Match;

/// A compiled rule tree.
#[derive(Debug, Clone)]
enum Node {
    Leaf(SignalKind, Arc<str>),
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
}

impl Node {
    fn compile(rule: &RuleNode) -> Node {
        if let (Some(kind), Some(name)) = (rule.kind, &rule.name) {
            return Node::Leaf(kind, name.as_str().into());
        }
        let children: Vec<Node> = rule.conditions.iter().map(Node::compile).collect();
        match rule.operator.unwrap_or(RuleOperator::Or) {
            RuleOperator::And => Node::And(children),
            RuleOperator::Or => Node::Or(children),
            // Validation guarantees exactly one child.
            RuleOperator::Not => Node::Not(Box::new(children.into_iter().next().unwrap_or(Node::Or(Vec::new())))),
        }
    }

    /// Three-valued evaluation when some signal kinds could not run: a leaf of a failed kind is
    /// unknown, and unknown propagates (Kleene logic) only where it could change the verdict, so
    /// `AND(failed, not-matched)` is still a plain no.
    fn eval3(&self, matches: &[Match], failed: &[SignalKind]) -> Truth {
        match self {
            Node::Leaf(kind, _) if failed.contains(kind) => Truth::Unknown,
            Node::Leaf(..) => self.eval(matches).map_or(Truth::No, Truth::Yes),
            Node::And(children) if children.is_empty() => Truth::Yes(0.0),
            Node::And(children) => {
                let (mut sum, mut unknown) = (0.0, false);
                for c in children {
                    match c.eval3(matches, failed) {
                        Truth::No => return Truth::No,
                        Truth::Unknown => unknown = true,
                        Truth::Yes(v) => sum += v,
                    }
                }
                if unknown {
                    Truth::Unknown
                } else {
                    Truth::Yes(sum / children.len() as f64)
                }
            }
            Node::Or(children) if children.is_empty() => Truth::Yes(0.0),
            Node::Or(children) => {
                let (mut best, mut unknown) = (None::<f64>, false);
                for c in children {
                    match c.eval3(matches, failed) {
                        Truth::No => {}
                        Truth::Unknown => unknown = true,
                        Truth::Yes(v) => best = Some(best.map_or(v, |b| b.max(v))),
                    }
                }
                match (best, unknown) {
                    (Some(v), _) => Truth::Yes(v),
                    (None, true) => Truth::Unknown,
                    (None, false) => Truth::No,
                }
            }
            Node::Not(child) => match child.eval3(matches, failed) {
                Truth::Yes(_) => Truth::No,
                Truth::No => Truth::Yes(1.0),
                Truth::Unknown => Truth::Unknown,
            },
        }
    }

    /// Confidence when the node matches.
    fn eval(&self, matches: &[Match]) -> Option<f64> {
        match self {
            Node::Leaf(kind, name) => matches
                .iter()
                .find(|m| m.kind == *kind && m.name == *name)
                .map(|m| m.confidence),
            Node::And(children) if children.is_empty() => Some(0.0),
            Node::And(children) => {
                let mut sum = 0.0;
                for c in children {
                    sum += c.eval(matches)?;
                }
                Some(sum / children.len() as f64)
            }
            Node::Or(children) if children.is_empty() => Some(0.0),
            Node::Or(children) => children
                .iter()
                .filter_map(|c| c.eval(matches))
                .max_by(|a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal)),
            Node::Not(child) => match child.eval(matches) {
                Some(_) => None,
                None => Some(1.0),
            },
        }
    }

    fn leaves(&self, out: &mut BTreeSet<(SignalKind, String)>) {
        match self {
            Node::Leaf(k, n) => {
                out.insert((*k, n.to_string()));
            }
            Node::And(c) | Node::Or(c) => c.iter().for_each(|n| n.leaves(out)),
            Node::Not(c) => c.leaves(out),
        }
    }
}

/// A rule's verdict when some signals failed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Truth {
    Yes(f64),
    No,
    /// Depends on a signal that could not run.
    Unknown,
}

/// A decision whose verdict depended on a signal that could not run, and what was done about it.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalErrorVerdict {
    /// The decision.
    pub decision: Arc<str>,
    /// The failed signal kinds it references.
    pub signals: Vec<SignalKind>,
    /// `block`: treated as matched; `skip`: as not matched.
    pub action: OnSignalError,
}

/// A decision ready to evaluate.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Decision name.
    pub name: Arc<str>,
    /// Priority (higher wins).
    pub priority: i64,
    /// Tier (lower wins when > 0).
    pub tier: u32,
    /// Candidate model names in preference order.
    pub model_refs: Vec<String>,
    /// How to choose among them.
    pub algorithm: crate::config::AlgorithmConfig,
    /// What a failed signal it references does to it.
    pub on_signal_error: OnSignalError,
    rule: Option<Node>,
    /// Signal kinds its rule references.
    kinds: Vec<SignalKind>,
}

/// The decision that won, with its confidence.
#[derive(Debug, Clone)]
pub struct Winner<'a> {
    /// The winning decision.
    pub decision: &'a Decision,
    /// Its rule-tree confidence.
    pub confidence: f64,
}

/// Evaluates every decision against the signal matches and picks one.
#[derive(Debug, Clone)]
pub struct DecisionEngine {
    decisions: Vec<Decision>,
    strategy: Strategy,
}

impl DecisionEngine {
    /// Compiles the configured decisions.
    pub fn new(decisions: &[DecisionConfig], strategy: Strategy) -> Self {
        DecisionEngine {
            decisions: decisions
                .iter()
                .map(|d| {
                    let rule = d.rules.as_ref().map(Node::compile);
                    let mut leaves = BTreeSet::new();
                    if let Some(r) = &rule {
                        r.leaves(&mut leaves);
                    }
                    let mut kinds: Vec<SignalKind> = leaves.into_iter().map(|(k, _)| k).collect();
                    kinds.dedup();
                    Decision {
                        name: d.name.as_str().into(),
                        priority: d.priority,
                        tier: d.tier,
                        model_refs: d.model_refs.iter().map(|r| r.model.clone()).collect(),
                        algorithm: d.algorithm.clone(),
                        on_signal_error: d.on_signal_error(),
                        rule,
                        kinds,
                    }
                })
                .collect(),
            strategy,
        }
    }

    /// Builds the engine of a whole config.
    pub fn from_config(config: &Config) -> Self {
        Self::new(&config.decisions, config.routing.strategy)
    }

    /// Every (kind, name) some decision references: the only signals worth evaluating.
    pub fn referenced_signals(&self) -> BTreeSet<(SignalKind, String)> {
        let mut out = BTreeSet::new();
        for d in &self.decisions {
            if let Some(r) = &d.rule {
                r.leaves(&mut out);
            }
        }
        out
    }

    /// Every decision that matches, with its confidence, in configuration order.
    pub fn matching(&self, matches: &[Match]) -> Vec<Winner<'_>> {
        self.decisions
            .iter()
            .filter_map(|d| {
                let confidence = match &d.rule {
                    None => Some(0.0),
                    Some(r) => r.eval(matches),
                }?;
                Some(Winner {
                    decision: d,
                    confidence,
                })
            })
            .collect()
    }

    /// The winning decision, if any matches.
    pub fn decide(&self, matches: &[Match]) -> Option<Winner<'_>> {
        self.pick(self.matching(matches))
    }

    /// [`DecisionEngine::decide`] when the signal kinds in `failed` could not run. A decision
    /// whose verdict hinges on a failed signal follows its `on_signal_error`: `block` counts it
    /// as matched with confidence 1 (a blocking decision must not fail open silently), `skip` as
    /// not matched. Returns the winner and every decision so affected.
    pub fn decide_degraded(
        &self,
        matches: &[Match],
        failed: &[SignalKind],
    ) -> (Option<Winner<'_>>, Vec<SignalErrorVerdict>) {
        if failed.is_empty() {
            return (self.decide(matches), Vec::new());
        }
        let mut candidates = Vec::new();
        let mut affected = Vec::new();
        for d in &self.decisions {
            let truth = match &d.rule {
                None => Truth::Yes(0.0),
                Some(r) => r.eval3(matches, failed),
            };
            match truth {
                Truth::Yes(confidence) => candidates.push(Winner {
                    decision: d,
                    confidence,
                }),
                Truth::No => {}
                Truth::Unknown => {
                    affected.push(SignalErrorVerdict {
                        decision: d.name.clone(),
                        signals: d.kinds.iter().copied().filter(|k| failed.contains(k)).collect(),
                        action: d.on_signal_error,
                    });
                    if d.on_signal_error == OnSignalError::Block {
                        candidates.push(Winner {
                            decision: d,
                            confidence: 1.0,
                        });
                    }
                }
            }
        }
        (self.pick(candidates), affected)
    }

    fn pick<'a>(&self, candidates: Vec<Winner<'a>>) -> Option<Winner<'a>> {
        let tiered = candidates.iter().any(|w| w.decision.tier > 0);
        let by_conf = |a: &Winner, b: &Winner| b.confidence.partial_cmp(&a.confidence).unwrap_or(Ordering::Equal);
        let by_prio = |a: &Winner, b: &Winner| b.decision.priority.cmp(&a.decision.priority);
        let by_name = |a: &Winner, b: &Winner| a.decision.name.cmp(&b.decision.name);
        let tier = |w: &Winner| {
            if w.decision.tier == 0 {
                u32::MAX
            } else {
                w.decision.tier
            }
        };
        candidates.into_iter().min_by(|a, b| {
            let tier_order = if tiered { tier(a).cmp(&tier(b)) } else { Ordering::Equal };
            let rest = match (tiered, self.strategy) {
                (true, _) | (false, Strategy::Confidence) => by_conf(a, b).then(by_prio(a, b)),
                (false, Strategy::Priority) => by_prio(a, b).then(by_conf(a, b)),
            };
            tier_order.then(rest).then(by_name(a, b))
        })
    }
}

#[cfg(test)]
mod tests;
