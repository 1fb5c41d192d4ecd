//! Rule trees over signal matches and the winning decision, with vLLM Semantic Router's
//! semantics: AND = mean of child confidences, OR = best child, NOT = exactly one child
//! (confidence 1 when it does not match), empty rules = catch-all with confidence 0; winners by
//! tier, then priority → confidence → name (or confidence first).
//!
//! Generic over the caller's signal kind `K` and over what a decision carries besides its rule
//! (`D`: the router's candidate models and algorithm, the filter's one model).

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::ops::Deref;
use std::sync::Arc;

use crate::Match;

/// A rule tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Node<K> {
    /// One signal rule, by kind and name.
    Leaf(K, Arc<str>),
    /// Every child (confidence: their mean; no children: catch-all, 0).
    And(Vec<Node<K>>),
    /// Any child (confidence: the best; no children: catch-all, 0).
    Or(Vec<Node<K>>),
    /// The child does not match (confidence 1).
    Not(Box<Node<K>>),
}

/// A rule's verdict when some signals failed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Truth {
    /// Matched, with this confidence.
    Yes(f64),
    /// Not matched.
    No,
    /// Depends on a signal that could not run.
    Unknown,
}

impl<K: Copy + Ord> Node<K> {
    /// Confidence when the node matches.
    pub fn eval(&self, matches: &[Match<K>]) -> Option<f64> {
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

    /// Three-valued evaluation when the signal kinds in `failed` could not run: a leaf of a
    /// failed kind is unknown, and unknown propagates (Kleene logic) only where it could change
    /// the verdict, so `AND(failed, not-matched)` is still a plain no.
    pub fn eval3(&self, matches: &[Match<K>], failed: &[K]) -> Truth {
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

    /// Adds every (kind, name) the tree references to `out`.
    pub fn leaves(&self, out: &mut BTreeSet<(K, String)>) {
        match self {
            Node::Leaf(k, n) => {
                out.insert((*k, n.to_string()));
            }
            Node::And(c) | Node::Or(c) => c.iter().for_each(|n| n.leaves(out)),
            Node::Not(c) => c.leaves(out),
        }
    }
}

/// How the winner is chosen among untiered decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Priority, then confidence, then name.
    #[default]
    Priority,
    /// Confidence, then priority, then name.
    Confidence,
}

/// A decision ready to evaluate: its rule, its rank, and the caller's data `D` (reachable
/// through `Deref`).
#[derive(Debug, Clone)]
pub struct Decision<K, D> {
    /// Decision name.
    pub name: Arc<str>,
    /// Priority (higher wins).
    pub priority: i64,
    /// Tier (lower wins when > 0).
    pub tier: u32,
    /// When a signal its verdict hinges on failed: `true` counts it as matched with confidence
    /// 1 (`on_signal_error: block`), `false` as not matched (`skip`).
    pub block_on_error: bool,
    rule: Option<Node<K>>,
    /// Signal kinds its rule references.
    kinds: Vec<K>,
    /// What the caller keeps with the decision.
    pub data: D,
}

impl<K: Copy + Ord, D> Decision<K, D> {
    /// A decision; `rule: None` matches every request with confidence 0.
    pub fn new(name: &str, priority: i64, tier: u32, block_on_error: bool, rule: Option<Node<K>>, data: D) -> Self {
        let mut leaves = BTreeSet::new();
        if let Some(r) = &rule {
            r.leaves(&mut leaves);
        }
        let mut kinds: Vec<K> = leaves.into_iter().map(|(k, _)| k).collect();
        kinds.dedup();
        Decision {
            name: name.into(),
            priority,
            tier,
            block_on_error,
            rule,
            kinds,
            data,
        }
    }

    /// Its rule tree.
    pub fn rule(&self) -> Option<&Node<K>> {
        self.rule.as_ref()
    }
}

impl<K, D> Deref for Decision<K, D> {
    type Target = D;
    fn deref(&self) -> &D {
        &self.data
    }
}

/// The decision that won, with its confidence.
#[derive(Debug)]
pub struct Winner<'a, K, D> {
    /// The winning decision.
    pub decision: &'a Decision<K, D>,
    /// Its rule-tree confidence.
    pub confidence: f64,
}

impl<K, D> Clone for Winner<'_, K, D> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, D> Copy for Winner<'_, K, D> {}

/// A decision whose verdict depended on a signal that could not run.
#[derive(Debug)]
pub struct Affected<'a, K, D> {
    /// The decision (its `block_on_error` says what was done).
    pub decision: &'a Decision<K, D>,
    /// The failed signal kinds it references.
    pub signals: Vec<K>,
}

/// What [`Decisions::decide_degraded`] returns: the winner, and the decisions a failed signal
/// affected.
pub type Degraded<'a, K, D> = (Option<Winner<'a, K, D>>, Vec<Affected<'a, K, D>>);

/// Every decision of a configuration and how the winner is picked.
#[derive(Debug, Clone)]
pub struct Decisions<K, D> {
    decisions: Vec<Decision<K, D>>,
    strategy: Strategy,
}

impl<K: Copy + Ord, D> Decisions<K, D> {
    /// The decisions, in configuration order (the order of `matching`).
    pub fn new(decisions: Vec<Decision<K, D>>, strategy: Strategy) -> Self {
        Decisions { decisions, strategy }
    }

    /// The decisions, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &Decision<K, D>> {
        self.decisions.iter()
    }

    /// Every (kind, name) some decision references: the only signals worth evaluating.
    pub fn referenced_signals(&self) -> BTreeSet<(K, String)> {
        let mut out = BTreeSet::new();
        for d in &self.decisions {
            if let Some(r) = &d.rule {
                r.leaves(&mut out);
            }
        }
        out
    }

    /// Every decision that matches, with its confidence, in configuration order.
    pub fn matching(&self, matches: &[Match<K>]) -> Vec<Winner<'_, K, D>> {
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
    pub fn decide(&self, matches: &[Match<K>]) -> Option<Winner<'_, K, D>> {
        self.pick(self.matching(matches))
    }

    /// [`Decisions::decide`] when the signal kinds in `failed` could not run. A decision whose
    /// verdict hinges on a failed signal counts as matched with confidence 1 when it blocks on
    /// errors (a blocking decision must not fail open silently), else as not matched. Returns
    /// the winner and every decision so affected.
    pub fn decide_degraded(&self, matches: &[Match<K>], failed: &[K]) -> Degraded<'_, K, D> {
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
                    affected.push(Affected {
                        decision: d,
                        signals: d.kinds.iter().copied().filter(|k| failed.contains(k)).collect(),
                    });
                    if d.block_on_error {
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

    fn pick<'a>(&self, candidates: Vec<Winner<'a, K, D>>) -> Option<Winner<'a, K, D>> {
        let tiered = candidates.iter().any(|w| w.decision.tier > 0);
        let by_conf =
            |a: &Winner<K, D>, b: &Winner<K, D>| b.confidence.partial_cmp(&a.confidence).unwrap_or(Ordering::Equal);
        let by_prio = |a: &Winner<K, D>, b: &Winner<K, D>| b.decision.priority.cmp(&a.decision.priority);
        let by_name = |a: &Winner<K, D>, b: &Winner<K, D>| a.decision.name.cmp(&b.decision.name);
        let tier = |w: &Winner<K, D>| {
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
mod tests {
    use super::*;

    fn m(kind: u8, name: &str, confidence: f64) -> Match<u8> {
        Match {
            kind,
            name: name.into(),
            confidence,
        }
    }

    fn leaf(kind: u8, name: &str) -> Option<Node<u8>> {
        Some(Node::Leaf(kind, name.into()))
    }

    #[test]
    fn tiers_then_priority_then_confidence_then_name() {
        let d = |name, priority, tier, rule| Decision::new(name, priority, tier, false, rule, ());
        let e = Decisions::new(
            vec![
                d("b", 10, 0, leaf(1, "x")),
                d("a", 10, 0, leaf(1, "x")),
                d("strong", 10, 0, leaf(0, "k")),
                d("low", 1, 0, leaf(0, "k")),
            ],
            Strategy::Priority,
        );
        assert_eq!(
            &*e.decide(&[m(1, "x", 0.6), m(0, "k", 1.0)]).unwrap().decision.name,
            "strong"
        );
        assert_eq!(&*e.decide(&[m(1, "x", 0.6)]).unwrap().decision.name, "a");
        assert!(e.decide(&[]).is_none());
        let e = Decisions::new(
            vec![d("untiered", 100, 0, leaf(0, "k")), d("tier2", 0, 2, leaf(0, "k"))],
            Strategy::Priority,
        );
        assert_eq!(&*e.decide(&[m(0, "k", 1.0)]).unwrap().decision.name, "tier2");
    }

    #[test]
    fn degraded_blocks_only_where_the_verdict_hinges_on_the_failure() {
        let e = Decisions::new(
            vec![
                Decision::new("block", 10, 0, true, leaf(2, "jb"), ()),
                Decision::new(
                    "and",
                    5,
                    0,
                    true,
                    Some(Node::And(vec![leaf(0, "k").unwrap(), leaf(2, "jb").unwrap()])),
                    (),
                ),
            ],
            Strategy::Priority,
        );
        let (w, affected) = e.decide_degraded(&[], &[2]);
        assert_eq!((&*w.unwrap().decision.name, affected.len()), ("block", 1));
        assert_eq!(affected[0].signals, [2]);
    }
}
