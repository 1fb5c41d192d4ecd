//! The wasm filter's local routing plan (`llmsoup.v1.LocalPlan`) compiled into this crate's
//! evaluators: the keyword matcher and the decisions the sidecar's engine builds from the same
//! configuration, so the filter's answer is the engine's.

use std::sync::Arc;

use llmsoup_contract::v1::{self, rule_node};

use crate::Match;
use crate::decision::{Decision, Decisions, Node, Strategy};
use crate::keyword::{Matcher, Operator, Rule};

/// The signal kinds a plan may reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `keyword` rules.
    Keyword,
}

impl Kind {
    /// The configured name (`x-llmsoup-signals` writes `kind:name`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Keyword => "keyword",
        }
    }
}

/// A compiled plan.
pub struct Planned {
    keywords: Matcher,
    decisions: Decisions<Kind, String>,
}

/// What the plan decided for one request text.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict<'a> {
    /// The winning decision and the model it selects (`None`: the default model).
    pub decision: Option<(&'a str, &'a str)>,
    /// Its confidence (0 without a decision).
    pub confidence: f64,
    /// Matched signals, `kind:name` comma-separated (the `x-llmsoup-signals` value).
    pub signals: String,
}

fn node(n: &v1::RuleNode) -> Result<Node<Kind>, String> {
    Ok(match n.node.as_ref().ok_or("empty rule node")? {
        rule_node::Node::Leaf(l) => match l.kind.as_str() {
            "keyword" => Node::Leaf(Kind::Keyword, l.name.as_str().into()),
            other => return Err(format!("signal kind `{other}` is not evaluated locally")),
        },
        rule_node::Node::And(c) => Node::And(c.nodes.iter().map(node).collect::<Result<_, _>>()?),
        rule_node::Node::Or(c) => Node::Or(c.nodes.iter().map(node).collect::<Result<_, _>>()?),
        rule_node::Node::Not(c) => Node::Not(Box::new(node(c)?)),
    })
}

impl Planned {
    /// Compiles a plan; an error means the plan cannot be used (every request then makes the
    /// Route call).
    pub fn new(plan: &v1::LocalPlan) -> Result<Self, String> {
        let keywords = Matcher::new(plan.keyword_rules.iter().map(|r| Rule {
            name: &r.name,
            operator: match r.operator() {
                v1::KeywordOperator::KeywordOr => Operator::Or,
                v1::KeywordOperator::KeywordAnd => Operator::And,
                v1::KeywordOperator::KeywordNor => Operator::Nor,
            },
            keywords: &r.keywords,
            regex: r.regex,
            case_sensitive: r.case_sensitive,
        }))?;
        let decisions = plan
            .decisions
            .iter()
            .map(|d| {
                let rule = d.rule.as_ref().map(node).transpose()?;
                // Keywords cannot fail, so what a failed signal does never matters.
                Ok(Decision::new(&d.name, d.priority, d.tier, false, rule, d.model.clone()))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let strategy = if plan.confidence_first {
            Strategy::Confidence
        } else {
            Strategy::Priority
        };
        Ok(Planned {
            keywords,
            decisions: Decisions::new(decisions, strategy),
        })
    }

    /// Routes a request's text (the request view's, `router::request`).
    pub fn decide(&self, text: &str) -> Verdict<'_> {
        let matches: Vec<Match<Kind>> = self
            .keywords
            .matched(text)
            .map(|name| Match {
                kind: Kind::Keyword,
                name: Arc::clone(name),
                confidence: 1.0,
            })
            .collect();
        let mut signals = String::new();
        for m in &matches {
            if !signals.is_empty() {
                signals.push(',');
            }
            signals.push_str(m.kind.as_str());
            signals.push(':');
            signals.push_str(&m.name);
        }
        match self.decisions.decide(&matches) {
            Some(w) => Verdict {
                decision: Some((&w.decision.name, &w.decision.data)),
                confidence: w.confidence,
                signals,
            },
            None => Verdict {
                decision: None,
                confidence: 0.0,
                signals,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(name: &str) -> v1::RuleNode {
        v1::RuleNode {
            node: Some(rule_node::Node::Leaf(v1::RuleLeaf {
                kind: "keyword".into(),
                name: name.into(),
            })),
        }
    }

    #[test]
    fn a_plan_routes_like_its_decisions() {
        let plan = v1::LocalPlan {
            keyword_rules: vec![
                v1::KeywordRule {
                    name: "code".into(),
                    keywords: vec!["python".into(), "c++".into()],
                    ..Default::default()
                },
                v1::KeywordRule {
                    name: "poem".into(),
                    keywords: vec!["haiku".into()],
                    ..Default::default()
                },
            ],
            decisions: vec![
                v1::LocalDecision {
                    name: "coding".into(),
                    priority: 20,
                    rule: Some(leaf("code")),
                    model: "coder".into(),
                    ..Default::default()
                },
                v1::LocalDecision {
                    name: "poetry".into(),
                    priority: 10,
                    rule: Some(leaf("poem")),
                    model: "writer".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let p = Planned::new(&plan).unwrap();
        let v = p.decide("a haiku about Python");
        assert_eq!(v.decision, Some(("coding", "coder")));
        assert_eq!((v.confidence, v.signals.as_str()), (1.0, "keyword:code,keyword:poem"));
        assert_eq!(p.decide("hello").decision, None);
        let mut bad = plan.clone();
        bad.decisions[0].rule.as_mut().unwrap().node = Some(rule_node::Node::Leaf(v1::RuleLeaf {
            kind: "pii".into(),
            name: "x".into(),
        }));
        assert!(Planned::new(&bad).is_err());
    }
}
