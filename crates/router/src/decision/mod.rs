//! The decision engine: rule trees over signal matches, and selection of the winning decision.
//! Semantics follow vLLM Semantic Router: AND = mean of child confidences, OR = best child,
//! NOT = exactly one child (confidence 1 when it does not match), empty rules = catch-all with
//! confidence 0; winners by tier, then priority → confidence → name (or confidence first).
//! The evaluation itself is `llmsoup_rules::decision`, shared with the wasm filter; this module
//! builds it from the configuration.

use std::collections::BTreeSet;
use std::sync::Arc;

use llmsoup_rules::decision as rules;

use crate::config::{Config, DecisionConfig, OnSignalError, RuleNode, RuleOperator, SignalKind, Strategy};
use crate::signals::Match;

/// A compiled rule tree.
pub type Node = rules::Node<SignalKind>;

/// Compiles a configured rule tree.
pub fn compile(rule: &RuleNode) -> Node {
    if let (Some(kind), Some(name)) = (rule.kind, &rule.name) {
        return Node::Leaf(kind, name.as_str().into());
    }
    let children: Vec<Node> = rule.conditions.iter().map(compile).collect();
    match rule.operator.unwrap_or(RuleOperator::Or) {
        RuleOperator::And => Node::And(children),
        RuleOperator::Or => Node::Or(children),
        // Validation guarantees exactly one child.
        RuleOperator::Not => Node::Not(Box::new(children.into_iter().next().unwrap_or(Node::Or(Vec::new())))),
    }
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

/// What the router keeps with a decision (reached from [`Decision`] through `Deref`).
#[derive(Debug, Clone)]
pub struct Selection {
    /// Candidate model names in preference order.
    pub model_refs: Vec<String>,
    /// How to choose among them.
    pub algorithm: crate::config::AlgorithmConfig,
    /// What a failed signal it references does to it.
    pub on_signal_error: OnSignalError,
}

/// A decision ready to evaluate.
pub type Decision = rules::Decision<SignalKind, Selection>;

/// The decision that won, with its confidence.
pub type Winner<'a> = rules::Winner<'a, SignalKind, Selection>;

/// The shared evaluator's strategy for the configured one.
pub fn strategy(strategy: Strategy) -> rules::Strategy {
    match strategy {
        Strategy::Priority => rules::Strategy::Priority,
        Strategy::Confidence => rules::Strategy::Confidence,
    }
}

/// Evaluates every decision against the signal matches and picks one.
#[derive(Debug, Clone)]
pub struct DecisionEngine {
    decisions: rules::Decisions<SignalKind, Selection>,
}

impl DecisionEngine {
    /// Compiles the configured decisions.
    pub fn new(decisions: &[DecisionConfig], strategy: Strategy) -> Self {
        let decisions = decisions
            .iter()
            .map(|d| {
                let on_signal_error = d.on_signal_error();
                Decision::new(
                    &d.name,
                    d.priority,
                    d.tier,
                    on_signal_error == OnSignalError::Block,
                    d.rules.as_ref().map(compile),
                    Selection {
                        model_refs: d.model_refs.iter().map(|r| r.model.clone()).collect(),
                        algorithm: d.algorithm.clone(),
                        on_signal_error,
                    },
                )
            })
            .collect();
        DecisionEngine {
            decisions: rules::Decisions::new(decisions, self::strategy(strategy)),
        }
    }

    /// Builds the engine of a whole config.
    pub fn from_config(config: &Config) -> Self {
        Self::new(&config.decisions, config.routing.strategy)
    }

    /// Every (kind, name) some decision references: the only signals worth evaluating.
    pub fn referenced_signals(&self) -> BTreeSet<(SignalKind, String)> {
        self.decisions.referenced_signals()
    }

    /// Every decision that matches, with its confidence, in configuration order.
    pub fn matching(&self, matches: &[Match]) -> Vec<Winner<'_>> {
        self.decisions.matching(matches)
    }

    /// The winning decision, if any matches.
    pub fn decide(&self, matches: &[Match]) -> Option<Winner<'_>> {
        self.decisions.decide(matches)
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
        let (winner, affected) = self.decisions.decide_degraded(matches, failed);
        let affected = affected
            .into_iter()
            .map(|a| SignalErrorVerdict {
                decision: a.decision.name.clone(),
                signals: a.signals,
                action: a.decision.on_signal_error,
            })
            .collect();
        (winner, affected)
    }
}

#[cfg(test)]
mod tests;
