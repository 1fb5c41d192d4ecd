use super::*;
use crate::config::{ModelRef, RuleNode};

fn leaf(kind: SignalKind, name: &str) -> RuleNode {
    RuleNode {
        kind: Some(kind),
        name: Some(name.into()),
        ..Default::default()
    }
}

fn group(op: RuleOperator, conditions: Vec<RuleNode>) -> RuleNode {
    RuleNode {
        operator: Some(op),
        conditions,
        ..Default::default()
    }
}

fn decision(name: &str, priority: i64, tier: u32, rules: Option<RuleNode>) -> DecisionConfig {
    DecisionConfig {
        name: name.into(),
        description: None,
        priority,
        tier,
        rules,
        model_refs: vec![ModelRef::new(format!("{name}-model"))],
        algorithm: Default::default(),
        fallback: false,
        plugins: Vec::new(),
        on_signal_error: None,
        target_share: None,
    }
}

fn m(kind: SignalKind, name: &str, confidence: f64) -> Match {
    Match {
        kind,
        name: name.into(),
        confidence,
    }
}

use SignalKind::{Context, Keyword, Language};

#[test]
fn and_is_mean_or_is_max_not_is_unary() {
    let and = compile(&group(
        RuleOperator::And,
        vec![leaf(Keyword, "a"), leaf(Language, "fr")],
    ));
    let or = compile(&group(RuleOperator::Or, vec![leaf(Keyword, "a"), leaf(Language, "fr")]));
    let not = compile(&group(RuleOperator::Not, vec![leaf(Keyword, "a")]));
    let both = [m(Keyword, "a", 1.0), m(Language, "fr", 0.5)];
    assert_eq!(and.eval(&both), Some(0.75));
    assert_eq!(or.eval(&both), Some(1.0));
    assert_eq!(not.eval(&both), None);
    let one = [m(Language, "fr", 0.5)];
    assert_eq!(and.eval(&one), None);
    assert_eq!(or.eval(&one), Some(0.5));
    assert_eq!(not.eval(&one), Some(1.0));
    assert_eq!(or.eval(&[]), None);
}

#[test]
fn nested_trees() {
    // (keyword:code AND NOT language:fr) OR context:long
    let tree = group(
        RuleOperator::Or,
        vec![
            group(
                RuleOperator::And,
                vec![
                    leaf(Keyword, "code"),
                    group(RuleOperator::Not, vec![leaf(Language, "fr")]),
                ],
            ),
            leaf(Context, "long"),
        ],
    );
    let n = compile(&tree);
    assert_eq!(n.eval(&[m(Keyword, "code", 1.0)]), Some(1.0));
    assert_eq!(n.eval(&[m(Keyword, "code", 1.0), m(Language, "fr", 0.9)]), None);
    assert_eq!(n.eval(&[m(Language, "fr", 0.9), m(Context, "long", 1.0)]), Some(1.0));
    let mut leaves = BTreeSet::new();
    n.leaves(&mut leaves);
    assert_eq!(leaves.len(), 3);
}

#[test]
fn empty_rules_are_catch_all_with_zero_confidence() {
    let e = DecisionEngine::new(
        &[
            decision("any", 0, 0, None),
            decision("empty_and", 0, 0, Some(group(RuleOperator::And, vec![]))),
        ],
        Strategy::Priority,
    );
    let all = e.matching(&[]);
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|w| w.confidence == 0.0));
}

#[test]
fn priority_then_confidence_then_name() {
    let ds = [
        decision("b", 10, 0, Some(leaf(Language, "fr"))),
        decision("a", 10, 0, Some(leaf(Language, "fr"))),
        decision("strong", 10, 0, Some(leaf(Keyword, "k"))),
        decision("low", 1, 0, Some(leaf(Keyword, "k"))),
    ];
    let e = DecisionEngine::new(&ds, Strategy::Priority);
    // Same priority: higher confidence wins.
    let w = e.decide(&[m(Language, "fr", 0.6), m(Keyword, "k", 1.0)]).unwrap();
    assert_eq!(&*w.decision.name, "strong");
    // Same priority and confidence: name order.
    let w = e.decide(&[m(Language, "fr", 0.6)]).unwrap();
    assert_eq!(&*w.decision.name, "a");
    // Priority beats confidence.
    let e2 = DecisionEngine::new(
        &[
            decision("hi", 5, 0, Some(leaf(Language, "fr"))),
            decision("conf", 1, 0, Some(leaf(Keyword, "k"))),
        ],
        Strategy::Priority,
    );
    let w = e2.decide(&[m(Language, "fr", 0.4), m(Keyword, "k", 1.0)]).unwrap();
    assert_eq!(&*w.decision.name, "hi");
}

#[test]
fn confidence_strategy_and_tiers() {
    let ds = [
        decision("hi", 5, 0, Some(leaf(Language, "fr"))),
        decision("conf", 1, 0, Some(leaf(Keyword, "k"))),
    ];
    let e = DecisionEngine::new(&ds, Strategy::Confidence);
    let w = e.decide(&[m(Language, "fr", 0.4), m(Keyword, "k", 1.0)]).unwrap();
    assert_eq!(&*w.decision.name, "conf");

    // A tiered decision beats untiered ones whatever their priority; lower tiers first.
    let ds = [
        decision("untiered", 100, 0, Some(leaf(Keyword, "k"))),
        decision("tier2", 0, 2, Some(leaf(Keyword, "k"))),
        decision("tier1", 0, 1, Some(leaf(Language, "fr"))),
    ];
    let e = DecisionEngine::new(&ds, Strategy::Priority);
    assert_eq!(
        &*e.decide(&[m(Keyword, "k", 1.0), m(Language, "fr", 0.3)])
            .unwrap()
            .decision
            .name,
        "tier1"
    );
    assert_eq!(&*e.decide(&[m(Keyword, "k", 1.0)]).unwrap().decision.name, "tier2");
    assert!(e.decide(&[]).is_none());
}

fn with_error(mut d: DecisionConfig, action: Option<OnSignalError>, blocks: bool) -> DecisionConfig {
    d.on_signal_error = action;
    if blocks {
        d.plugins = vec![crate::config::PluginConfig::FastResponse(
            crate::config::FastResponsePlugin {
                message: "no".into(),
                status: 403,
            },
        )];
    }
    d
}

#[test]
fn on_signal_error_defaults_to_block_only_for_blocking_decisions() {
    let d = decision("d", 0, 0, None);
    assert_eq!(d.on_signal_error(), OnSignalError::Skip);
    assert_eq!(
        with_error(d.clone(), None, true).on_signal_error(),
        OnSignalError::Block
    );
    assert_eq!(
        with_error(d.clone(), Some(OnSignalError::Skip), true).on_signal_error(),
        OnSignalError::Skip
    );
    assert_eq!(
        with_error(d, Some(OnSignalError::Block), false).on_signal_error(),
        OnSignalError::Block
    );
}

#[test]
fn a_failed_signal_blocks_or_skips_only_where_it_could_change_the_verdict() {
    let jb = || leaf(SignalKind::Jailbreak, "injection");
    let kw = || leaf(SignalKind::Keyword, "code");
    let decisions = vec![
        with_error(decision("block", 100, 0, Some(jb())), None, true),
        with_error(
            decision("and_kw", 50, 0, Some(group(RuleOperator::And, vec![kw(), jb()]))),
            Some(OnSignalError::Block),
            false,
        ),
        with_error(
            decision("not_jb", 10, 0, Some(group(RuleOperator::Not, vec![jb()]))),
            None,
            false,
        ),
        decision("or_kw", 5, 0, Some(group(RuleOperator::Or, vec![kw(), jb()]))),
    ];
    let e = DecisionEngine::new(&decisions, Strategy::Priority);
    let failed = [SignalKind::Jailbreak];

    // No keyword: `block` wins (confidence 1); AND(kw, jb) is a plain no; NOT(jb) and OR(kw, jb)
    // are unknown and skip.
    let (w, affected) = e.decide_degraded(&[], &failed);
    let w = w.unwrap();
    assert_eq!((&*w.decision.name, w.confidence), ("block", 1.0));
    let got: Vec<(&str, OnSignalError)> = affected.iter().map(|v| (&*v.decision, v.action)).collect();
    assert_eq!(
        got,
        [
            ("block", OnSignalError::Block),
            ("not_jb", OnSignalError::Skip),
            ("or_kw", OnSignalError::Skip)
        ]
    );
    assert!(affected.iter().all(|v| v.signals == [SignalKind::Jailbreak]));

    // The keyword matched: OR(kw, jb) is a plain yes, AND(kw, jb) unknown → block (as matched).
    let (_, affected) = e.decide_degraded(&[m(SignalKind::Keyword, "code", 0.8)], &failed);
    let names: Vec<&str> = affected.iter().map(|v| &*v.decision).collect();
    assert_eq!(names, ["block", "and_kw", "not_jb"]);
    let matched: Vec<&str> = {
        let (w, _) = e.decide_degraded(&[m(SignalKind::Keyword, "code", 0.8)], &failed);
        vec![&*w.unwrap().decision.name]
    };
    assert_eq!(matched, ["block"]);

    // Nothing failed: the ordinary verdicts, nothing affected.
    let (w, affected) = e.decide_degraded(&[], &[]);
    assert_eq!(&*w.unwrap().decision.name, "not_jb");
    assert!(affected.is_empty());
}
