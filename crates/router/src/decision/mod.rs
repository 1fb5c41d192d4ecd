//! The decision engine: rule trees over signal matches, and selection of the winning decision.
//! Semantics follow vLLM Semantic Router: AND = mean of child confidences, OR = best child,
//! NOT = exactly one child (confidence 1 when it does not match), empty rules = catch-all with
//! confidence 0; winners by tier, then priority → confidence → name (or confidence first).

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::Arc;

use crate::config::{Config, DecisionConfig, RuleNode, RuleOperator, SignalKind, Strategy};
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
    rule: Option<Node>,
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
                .map(|d| Decision {
                    name: d.name.as_str().into(),
                    priority: d.priority,
                    tier: d.tier,
                    model_refs: d.model_refs.iter().map(|r| r.model.clone()).collect(),
                    algorithm: d.algorithm.clone(),
                    rule: d.rules.as_ref().map(Node::compile),
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
        let candidates = self.matching(matches);
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
