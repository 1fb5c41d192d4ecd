//! vSR decisions: rule trees (with unsupported conditions folded away), model references,
//! selection algorithms and plugins.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use super::common::{Cx, join, key_text, sanitize};
use super::signals::Known;
use crate::{
    AlgorithmConfig, AlgorithmKind, CachePlugin, ConfigError, DecisionConfig, DomainRule, FastResponsePlugin,
    HeaderMutationPlugin, ModelRef, PluginConfig, ReasoningEffort, RequestParamsPlugin, RuleNode, RuleOperator,
    SignalKind, SignalsConfig, SystemPromptPlugin,
};

/// A rule-tree node as vSR writes it.
#[derive(Debug, Deserialize)]
pub(super) struct VRule {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    operator: Option<String>,
    #[serde(default)]
    conditions: Vec<VRule>,
    #[serde(default)]
    label: Option<Value>,
    #[serde(default)]
    predicate: Option<Value>,
    #[serde(default)]
    on_error: Option<String>,
}

/// A modelRef.
#[derive(Debug, Deserialize)]
pub(super) struct VModelRef {
    model: String,
    #[serde(default)]
    lora_name: Option<String>,
    #[serde(default)]
    use_reasoning: Option<bool>,
    #[serde(default)]
    reasoning_effort: Option<String>,
    // Metadata: accepted, no effect on routing.
    #[allow(dead_code)]
    #[serde(default)]
    reasoning_description: Option<String>,
    #[serde(default)]
    weight: Option<f64>,
}

/// `algorithm.latency_aware`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct VLatencyAware {
    #[serde(default)]
    ttft_percentile: Option<u8>,
    #[serde(default)]
    tpot_percentile: Option<u8>,
}

/// A decision's model-selection algorithm.
#[derive(Debug, Deserialize)]
pub(super) struct VAlgorithm {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    latency_aware: Option<VLatencyAware>,
    #[serde(default)]
    on_error: Option<String>,
}

/// A decision plugin.
#[derive(Debug, Deserialize)]
pub(super) struct VPlugin {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    configuration: Value,
}

/// A decision.
#[derive(Debug, Deserialize)]
pub(super) struct VDecision {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    priority: i64,
    #[serde(default)]
    tier: u32,
    #[serde(default)]
    rules: Option<VRule>,
    #[serde(default, rename = "modelRefs", alias = "model_refs")]
    model_refs: Vec<VModelRef>,
    #[serde(default)]
    algorithm: Option<VAlgorithm>,
    #[serde(default)]
    plugins: Vec<VPlugin>,
}

impl VDecision {
    /// Model names the decision references.
    pub(super) fn model_names(&self) -> impl Iterator<Item = String> + '_ {
        self.model_refs.iter().map(|r| r.model.clone())
    }
}

/// A rule tree after unsupported conditions are folded away.
///
/// A condition on a signal family llmsoup lacks (or on a rule that does not exist) is treated as
/// a signal that never fires, and the tree is simplified with that constant: it drops out of an
/// OR, makes an AND impossible, and makes its NOT always true. This routes exactly as vSR would
/// whenever that signal does not match; confidences of ANDs that lose an always-true child are
/// the mean of the remaining children.
pub(super) enum RuleTree {
    Node(RuleNode),
    Never,
    Always,
}

fn leaf_kind(kind: &str) -> Option<SignalKind> {
    Some(match kind {
        "keyword" => SignalKind::Keyword,
        "embedding" => SignalKind::Embedding,
        "domain" => SignalKind::Domain,
        "language" => SignalKind::Language,
        "context" => SignalKind::Context,
        "complexity" => SignalKind::Complexity,
        "jailbreak" => SignalKind::Jailbreak,
        "pii" => SignalKind::Pii,
        _ => return None,
    })
}

/// Where a decision finds its signals, and how to add built-in domains it references.
pub(super) struct Scope<'a> {
    pub(super) known: &'a mut Known,
    pub(super) signals: &'a mut SignalsConfig,
}

fn convert_rule(cx: &mut Cx, r: VRule, at: &str, scope: &mut Scope) -> Result<RuleTree, ConfigError> {
    if let Some(kind) = r.kind.as_deref()
        && leaf_kind(kind).is_none()
        && r.operator.is_none()
        && r.conditions.is_empty()
    {
        cx.warn(
            format!("{at}.type"),
            format!("`{kind}` signals are not supported by llmsoup; this condition never matches"),
        );
        return Ok(RuleTree::Never);
    }
    for (key, set) in [
        ("label", r.label.is_some()),
        ("predicate", r.predicate.is_some()),
        ("on_error", r.on_error.is_some()),
    ] {
        if set {
            cx.warn(format!("{at}.{key}"), "not supported by llmsoup, ignored");
        }
    }
    match (r.kind, r.name) {
        (Some(kind), Some(name)) => {
            if r.operator.is_some() || !r.conditions.is_empty() {
                return Err(cx.error(
                    at,
                    "a condition is either a leaf {type, name} or a group {operator, conditions}",
                ));
            }
            let Some(k) = leaf_kind(&kind) else {
                cx.warn(
                    format!("{at}.type"),
                    format!("`{kind}` signals are not supported by llmsoup; this condition never matches"),
                );
                return Ok(RuleTree::Never);
            };
            if let Some(native) = scope.known.get(k, &name) {
                return Ok(RuleTree::Node(leaf(k, native)));
            }
            // vSR v0.3 generates domains referenced by decisions when they are built-in labels.
            let label = name.trim().to_ascii_lowercase().replace('_', " ");
            if k == SignalKind::Domain && crate::taxonomy::CATEGORIES.contains(&label.as_str()) {
                let native = sanitize(&name);
                scope.known.add(k, &name, &native);
                if !scope.signals.domains.iter().any(|d| d.name == native) {
                    scope.signals.domains.push(DomainRule {
                        name: native.clone(),
                        description: None,
                        examples: Vec::new(),
                        mmlu_categories: if native == label { Vec::new() } else { vec![label] },
                        threshold: None,
                    });
                }
                return Ok(RuleTree::Node(leaf(k, &native)));
            }
            cx.warn(
                format!("{at}.name"),
                format!("no {kind} signal named `{name}` is configured; this condition never matches"),
            );
            Ok(RuleTree::Never)
        }
        (Some(_), None) => Err(cx.error(at, "a leaf condition needs `name`")),
        (None, Some(_)) => Err(cx.error(at, "a leaf condition needs `type`")),
        (None, None) => {
            let op = match r.operator.as_deref().map(str::to_ascii_uppercase).as_deref() {
                None | Some("OR") => RuleOperator::Or,
                Some("AND") => RuleOperator::And,
                Some("NOT") => RuleOperator::Not,
                Some(other) => {
                    return Err(cx.error(
                        format!("{at}.operator"),
                        format!("unknown operator `{other}` (expected AND, OR or NOT)"),
                    ));
                }
            };
            if op == RuleOperator::Not && r.conditions.len() != 1 {
                return Err(cx.error(format!("{at}.conditions"), "NOT takes exactly one condition"));
            }
            let empty = r.conditions.is_empty();
            let mut children = Vec::new();
            for (i, c) in r.conditions.into_iter().enumerate() {
                children.push(convert_rule(cx, c, &format!("{at}.conditions[{i}]"), scope)?);
            }
            Ok(match op {
                _ if empty => RuleTree::Node(group(op, Vec::new())),
                RuleOperator::And => {
                    if children.iter().any(|c| matches!(c, RuleTree::Never)) {
                        RuleTree::Never
                    } else {
                        let nodes = nodes(children);
                        if nodes.is_empty() {
                            RuleTree::Always
                        } else {
                            RuleTree::Node(group(op, nodes))
                        }
                    }
                }
                RuleOperator::Or => {
                    if children.iter().any(|c| matches!(c, RuleTree::Always)) {
                        RuleTree::Always
                    } else {
                        let nodes = nodes(children);
                        if nodes.is_empty() {
                            RuleTree::Never
                        } else {
                            RuleTree::Node(group(op, nodes))
                        }
                    }
                }
                RuleOperator::Not => match children.pop() {
                    Some(RuleTree::Never) => RuleTree::Always,
                    Some(RuleTree::Always) | None => RuleTree::Never,
                    Some(RuleTree::Node(n)) => RuleTree::Node(group(op, vec![n])),
                },
            })
        }
    }
}

fn nodes(children: Vec<RuleTree>) -> Vec<RuleNode> {
    children
        .into_iter()
        .filter_map(|c| match c {
            RuleTree::Node(n) => Some(n),
            _ => None,
        })
        .collect()
}

/// A leaf condition.
pub(super) fn leaf(kind: SignalKind, name: &str) -> RuleNode {
    RuleNode {
        kind: Some(kind),
        name: Some(name.to_string()),
        operator: None,
        conditions: Vec::new(),
    }
}

/// A group condition.
pub(super) fn group(op: RuleOperator, conditions: Vec<RuleNode>) -> RuleNode {
    RuleNode {
        kind: None,
        name: None,
        operator: Some(op),
        conditions,
    }
}

/// Parses `low|medium|high`; anything else is warned about and dropped.
pub(super) fn effort(cx: &mut Cx, value: Option<&str>, at: &str) -> Option<ReasoningEffort> {
    match value?.trim().to_ascii_lowercase().as_str() {
        "low" => Some(ReasoningEffort::Low),
        "medium" => Some(ReasoningEffort::Medium),
        "high" => Some(ReasoningEffort::High),
        other => {
            cx.warn(
                at,
                format!("reasoning effort `{other}` is not one of low, medium, high; ignored"),
            );
            None
        }
    }
}

/// Converts the decisions; `models` are the native model names refs may point at.
pub(super) fn convert_decisions(
    cx: &mut Cx,
    decisions: Vec<VDecision>,
    path: &str,
    models: &BTreeSet<String>,
    scope: &mut Scope,
) -> Result<Vec<DecisionConfig>, ConfigError> {
    let mut out: Vec<DecisionConfig> = Vec::new();
    for (i, d) in decisions.into_iter().enumerate() {
        let at = format!("{path}[{i}]");
        let name = sanitize(&d.name);
        if out.iter().any(|o| o.name == name) {
            return Err(cx.error(format!("{at}.name"), format!("duplicate decision name `{}`", d.name)));
        }
        let rules = match d.rules {
            None => None,
            Some(r) => match convert_rule(cx, r, &format!("{at}.rules"), scope)? {
                RuleTree::Node(n) => Some(n),
                RuleTree::Always => None,
                RuleTree::Never => {
                    cx.warn(
                        format!("{at}.rules"),
                        format!(
                            "decision `{}` can never match without its unsupported conditions; dropped",
                            d.name
                        ),
                    );
                    continue;
                }
            },
        };
        let mut refs = Vec::new();
        for (j, r) in d.model_refs.into_iter().enumerate() {
            let rat = format!("{at}.modelRefs[{j}]");
            if !models.contains(&r.model) {
                cx.warn(
                    format!("{rat}.model"),
                    format!(
                        "model `{}` has no provider binding in this file; reference dropped",
                        r.model
                    ),
                );
                continue;
            }
            if r.weight.is_some() {
                cx.warn(
                    format!("{rat}.weight"),
                    "llmsoup picks models in order (or by the decision's algorithm); weights are ignored",
                );
            }
            refs.push(ModelRef {
                model: r.model,
                use_reasoning: r.use_reasoning,
                reasoning_effort: effort(cx, r.reasoning_effort.as_deref(), &format!("{rat}.reasoning_effort")),
                lora_name: r.lora_name,
            });
        }
        let algorithm = convert_algorithm(cx, d.algorithm, &format!("{at}.algorithm"));
        let plugins = convert_plugins(cx, d.plugins, &format!("{at}.plugins"))?;
        // A vSR decision that only answers (`fast_response`, e.g. blocking) needs no model;
        // native decisions do, so [`assemble`] gives it the default model, never called.
        let answers = plugins.iter().any(|p| matches!(p, PluginConfig::FastResponse(_)));
        if refs.is_empty() && !answers {
            cx.warn(
                format!("{at}.modelRefs"),
                format!("decision `{}` has no usable model; dropped", d.name),
            );
            continue;
        }
        out.push(DecisionConfig {
            name,
            description: d.description,
            priority: d.priority,
            tier: d.tier,
            rules,
            model_refs: refs,
            algorithm,
            fallback: false,
            plugins,
            on_signal_error: None,
            target_share: None,
        });
    }
    Ok(out)
}

fn convert_algorithm(cx: &mut Cx, a: Option<VAlgorithm>, at: &str) -> AlgorithmConfig {
    let mut out = AlgorithmConfig::default();
    let Some(a) = a else { return out };
    if a.on_error.is_some() {
        cx.warn(
            format!("{at}.on_error"),
            "llmsoup skips failing models and falls back to the next; ignored",
        );
    }
    match a.kind.as_str() {
        "static" => {}
        "latency_aware" => {
            out.kind = AlgorithmKind::LatencyAware;
            let la = a.latency_aware.unwrap_or_default();
            if let Some(p) = la.ttft_percentile {
                if (1..=100).contains(&p) {
                    out.ttft_percentile = p;
                } else {
                    cx.warn(
                        format!("{at}.latency_aware.ttft_percentile"),
                        "must be 1..100; using 90",
                    );
                }
            }
            if la.tpot_percentile.is_some() {
                cx.warn(
                    format!("{at}.latency_aware.tpot_percentile"),
                    "llmsoup compares the median time per output token; ignored",
                );
            }
        }
        other => cx.warn(
            format!("{at}.type"),
            format!("algorithm `{other}` is not supported by llmsoup; using `static` (the first model)"),
        ),
    }
    out
}

/// Keys each native plugin takes; others are warned about and removed before decoding.
const PLUGIN_KEYS: &[(&str, &[&str])] = &[
    ("system_prompt", &["enabled", "system_prompt", "mode"]),
    ("header_mutation", &["add", "update", "delete"]),
    ("fast_response", &["message", "status"]),
    (
        "request_params",
        &["blocked_params", "max_tokens_limit", "max_n", "strip_unknown"],
    ),
    ("semantic_cache", &["enabled", "similarity_threshold", "ttl_seconds"]),
    ("response_cache", &["enabled", "similarity_threshold", "ttl_seconds"]),
];

/// Converts decision plugins.
pub(super) fn convert_plugins(
    cx: &mut Cx,
    plugins: Vec<VPlugin>,
    path: &str,
) -> Result<Vec<PluginConfig>, ConfigError> {
    let mut out = Vec::new();
    for (i, p) in plugins.into_iter().enumerate() {
        let at = format!("{path}[{i}]");
        let cat = format!("{at}.configuration");
        let mut conf = match p.configuration {
            Value::Null => Mapping::new(),
            Value::Mapping(m) => m,
            _ => return Err(cx.error(cat, "expected a mapping")),
        };
        let kind = p.kind.replace('-', "_");
        if let Some((_, keys)) = PLUGIN_KEYS.iter().find(|(k, _)| *k == kind) {
            let enabled = conf.get("enabled").and_then(Value::as_bool) != Some(false);
            if !enabled && kind != "system_prompt" {
                continue;
            }
            let extra: Vec<String> = conf
                .keys()
                .map(key_text)
                .filter(|k| !keys.contains(&k.as_str()))
                .collect();
            for k in extra {
                conf.remove(k.as_str());
                cx.warn(join(&cat, &k), "not supported by llmsoup, ignored");
            }
            if kind == "system_prompt" && !enabled && !conf.contains_key("system_prompt") {
                continue;
            }
            let v = Value::Mapping(conf);
            out.push(match kind.as_str() {
                "system_prompt" => PluginConfig::SystemPrompt(cx.typed::<SystemPromptPlugin>(v, &cat)?),
                "header_mutation" => PluginConfig::HeaderMutation(cx.typed::<HeaderMutationPlugin>(v, &cat)?),
                "fast_response" => PluginConfig::FastResponse(cx.typed::<FastResponsePlugin>(v, &cat)?),
                "semantic_cache" | "response_cache" => PluginConfig::Cache(cx.typed::<CachePlugin>(v, &cat)?),
                _ => PluginConfig::RequestParams(cx.typed::<RequestParamsPlugin>(v, &cat)?),
            });
            continue;
        }
        match kind.as_str() {
            "pii" | "jailbreak" => cx.warn(
                at,
                format!(
                    "the v0.1 `{kind}` decision plugin (a no-op since vSR v0.2) is not supported; use a `{kind}` signal and a decision with a `fast_response` plugin"
                ),
            ),
            other => cx.warn(
                format!("{at}.type"),
                format!("plugin `{other}` is not supported by llmsoup, ignored"),
            ),
        }
    }
    Ok(out)
}
