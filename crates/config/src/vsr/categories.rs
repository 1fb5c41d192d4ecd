//! G0: the categories format (2025), where routing lives in `categories[].model_scores`.
//!
//! Each category with model scores becomes a decision `<category>_decision` whose models are
//! the scored ones, best first, and whose category-level knobs become plugins. Late G0 keyword
//! and embedding rules name a `category:` instead of a signal: a match selects that category
//! directly. vSR tried keywords first, then embeddings, then the domain classifier, so the
//! decision's rules keep that precedence:
//! `OR(kw_cat, AND(NOT any_kw, emb_cat), AND(NOT any_kw, NOT any_emb, domain_cat))`.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::prelude::{self as common, Cx, Scope, VCategory, VSignals, group, leaf};
use crate::{
    CachePlugin, ConfigError, DecisionConfig, FastResponsePlugin, JailbreakRule, ModelRef, PluginConfig, RuleNode,
    RuleOperator, SignalKind, SystemPromptMode, SystemPromptPlugin,
};

/// The routing half of the G0 categories, kept while their domain half is converted as signals.
pub(super) struct Categories {
    cats: Vec<Routing>,
    /// Category of each keyword rule (by index), for rules written with `category:`.
    keyword_category: Vec<Option<String>>,
    /// Category of each embedding rule (by index).
    embedding_category: Vec<Option<String>>,
}

struct Routing {
    name: String,
    description: Option<String>,
    scores: Vec<common::VModelScore>,
    use_reasoning: Option<bool>,
    reasoning_effort: Option<String>,
    system_prompt: Option<String>,
    system_prompt_enabled: Option<bool>,
    system_prompt_mode: Option<String>,
    semantic_cache_enabled: Option<bool>,
    semantic_cache_similarity_threshold: Option<f64>,
    jailbreak_enabled: Option<bool>,
    jailbreak_threshold: Option<f32>,
    pii: bool,
}

/// Takes the routing knobs out of the categories, leaving plain domain signals.
pub(super) fn split(mut signals: VSignals) -> (Categories, VSignals) {
    let cats = signals
        .domains
        .iter_mut()
        .map(|c: &mut VCategory| Routing {
            name: c.name.clone(),
            description: c.description.clone(),
            scores: std::mem::take(&mut c.model_scores),
            use_reasoning: c.use_reasoning.take(),
            reasoning_effort: c.reasoning_effort.take(),
            system_prompt: c.system_prompt.take(),
            system_prompt_enabled: c.system_prompt_enabled.take(),
            system_prompt_mode: c.system_prompt_mode.take(),
            semantic_cache_enabled: c.semantic_cache_enabled.take(),
            semantic_cache_similarity_threshold: c.semantic_cache_similarity_threshold.take(),
            jailbreak_enabled: c.jailbreak_enabled.take(),
            jailbreak_threshold: c.jailbreak_threshold.take(),
            pii: c.pii_enabled.take() == Some(true) || c.pii_threshold.take().is_some(),
        })
        .collect();
    let keyword_category = signals.keywords.iter().map(|k| k.category.clone()).collect();
    let embedding_category = signals.embeddings.iter().map(|e| e.category.clone()).collect();
    (
        Categories {
            cats,
            keyword_category,
            embedding_category,
        },
        signals,
    )
}

/// G0's global jailbreak guard (`prompt_guard`); only `enabled` and `threshold` map.
#[derive(Debug, Default, Deserialize)]
pub(super) struct PromptGuard {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    threshold: Option<f32>,
}

/// One decision per scored category, plus `jailbreak_block` when G0's jailbreak guard is on.
pub(super) fn decisions(
    cx: &mut Cx,
    c: Categories,
    guard: PromptGuard,
    models: &BTreeSet<String>,
    scope: &mut Scope,
) -> Result<Vec<DecisionConfig>, ConfigError> {
    let by_category = |names: Vec<String>, cats: &[Option<String>]| -> Vec<(String, String)> {
        names
            .into_iter()
            .zip(cats)
            .filter_map(|(n, c)| Some((c.clone()?, n)))
            .collect()
    };
    let keyword_rules = by_category(
        scope.signals.keywords.iter().map(|k| k.name.clone()).collect(),
        &c.keyword_category,
    );
    let embedding_rules = by_category(
        scope.signals.embeddings.iter().map(|e| e.name.clone()).collect(),
        &c.embedding_category,
    );
    let any = |kind: SignalKind, rules: &[(String, String)]| -> Option<RuleNode> {
        (!rules.is_empty()).then(|| {
            group(
                RuleOperator::Not,
                vec![group(
                    RuleOperator::Or,
                    rules.iter().map(|(_, n)| leaf(kind, n)).collect(),
                )],
            )
        })
    };
    let no_keyword = any(SignalKind::Keyword, &keyword_rules);
    let no_embedding = any(SignalKind::Embedding, &embedding_rules);

    let mut out = Vec::new();
    // Categories whose requests the jailbreak guard checks, and those it skips.
    let (mut guarded, mut unguarded) = (Vec::new(), Vec::new());
    let mut guard_threshold = guard.threshold;
    for (i, cat) in c.cats.into_iter().enumerate() {
        let at = format!("categories[{i}]");
        let mut branches: Vec<RuleNode> = keyword_rules
            .iter()
            .filter(|(c, _)| *c == cat.name)
            .map(|(_, n)| leaf(SignalKind::Keyword, n))
            .collect();
        let emb: Vec<RuleNode> = embedding_rules
            .iter()
            .filter(|(c, _)| *c == cat.name)
            .map(|(_, n)| leaf(SignalKind::Embedding, n))
            .collect();
        if !emb.is_empty() {
            let mut parts: Vec<RuleNode> = no_keyword.iter().cloned().collect();
            parts.push(if emb.len() == 1 {
                emb.into_iter().next().expect("one")
            } else {
                group(RuleOperator::Or, emb)
            });
            branches.push(if parts.len() == 1 {
                parts.pop().expect("one")
            } else {
                group(RuleOperator::And, parts)
            });
        }
        let domain = scope.known.get(SignalKind::Domain, &cat.name).map(str::to_owned);

        if let Some(d) = domain {
            let mut parts: Vec<RuleNode> = no_keyword.iter().chain(&no_embedding).cloned().collect();
            parts.push(leaf(SignalKind::Domain, &d));
            branches.push(group(RuleOperator::And, parts));
        }
        let rules = match branches.len() {
            0 => None,
            1 => branches.pop(),
            _ => Some(group(RuleOperator::Or, branches)),
        };
        if let Some(r) = &rules {
            match cat.jailbreak_enabled {
                Some(true) => guarded.push(r.clone()),
                Some(false) => unguarded.push(r.clone()),
                None => {}
            }
        }
        if let Some(t) = cat.jailbreak_threshold {
            if guard_threshold.is_some_and(|g| g != t) {
                cx.warn(
                    format!("{at}.jailbreak_threshold"),
                    "llmsoup applies one jailbreak threshold to every category; the first one is used",
                );
            }
            guard_threshold.get_or_insert(t);
        }
        if cat.scores.is_empty() {
            continue;
        }
        let Some(rules) = rules else {
            cx.warn(
                format!("{at}.name"),
                format!(
                    "category `{}` has no signal llmsoup can evaluate; its decision is dropped",
                    cat.name
                ),
            );
            continue;
        };

        let mut scores: Vec<(usize, common::VModelScore)> = cat.scores.into_iter().enumerate().collect();
        // Highest score first; equal scores keep their written order.
        scores.sort_by(|(ia, a), (ib, b)| b.score.total_cmp(&a.score).then(ia.cmp(ib)));
        let mut refs = Vec::new();
        for (j, s) in scores {
            let sat = format!("{at}.model_scores[{j}]");
            if !models.contains(&s.model) {
                cx.warn(
                    format!("{sat}.model"),
                    format!("model `{}` has no endpoint; dropped", s.model),
                );
                continue;
            }
            let effort = s.reasoning_effort.as_deref().or(cat.reasoning_effort.as_deref());
            refs.push(ModelRef {
                model: s.model,
                use_reasoning: s.use_reasoning.or(cat.use_reasoning),
                reasoning_effort: common::effort(cx, effort, &format!("{sat}.reasoning_effort")),
                lora_name: None,
            });
        }
        if refs.is_empty() {
            cx.warn(
                format!("{at}.model_scores"),
                format!("category `{}` has no usable model; its decision is dropped", cat.name),
            );
            continue;
        }

        let mut plugins = Vec::new();
        if let Some(prompt) = cat.system_prompt {
            let mode = match cat.system_prompt_mode.as_deref() {
                None | Some("replace") => SystemPromptMode::Replace,
                Some("insert") => SystemPromptMode::Insert,
                Some(other) => {
                    return Err(cx.error(
                        format!("{at}.system_prompt_mode"),
                        format!("unknown mode `{other}` (expected insert or replace)"),
                    ));
                }
            };
            plugins.push(PluginConfig::SystemPrompt(SystemPromptPlugin {
                enabled: cat.system_prompt_enabled != Some(false),
                system_prompt: prompt,
                mode,
            }));
        }
        if cat.semantic_cache_enabled == Some(true) {
            let mut cache = CachePlugin::default();
            if let Some(t) = cat.semantic_cache_similarity_threshold {
                cache.similarity_threshold = t as f32;
            }
            plugins.push(PluginConfig::Cache(cache));
        }
        if cat.pii {
            cx.warn(
                format!("{at}.pii_enabled"),
                "per-category PII checks are not converted; add a `pii` signal and a decision with a `fast_response` plugin",
            );
        }
        out.push(DecisionConfig {
            name: format!("{}_decision", common::sanitize(&cat.name)),
            description: cat.description,
            priority: 0,
            tier: 0,
            rules: Some(rules),
            model_refs: refs,
            algorithm: Default::default(),
            fallback: false,
            plugins,
            on_signal_error: None,
            target_share: None,
        });
    }
    if let Some(block) = jailbreak_block(guard.enabled, guarded, unguarded, guard_threshold, scope) {
        out.push(block);
    }
    Ok(out)
}

/// G0 checked prompts for jailbreaks before classifying them when `prompt_guard.enabled`
/// (a category could opt out with `jailbreak_enabled: false`), or only for categories with
/// `jailbreak_enabled: true`. One decision above every category decision reproduces that:
/// `AND(jailbreak, NOT OR(opted-out categories))` or `AND(jailbreak, OR(opted-in categories))`,
/// answering with a refusal instead of calling a model.
fn jailbreak_block(
    global: bool,
    guarded: Vec<RuleNode>,
    unguarded: Vec<RuleNode>,
    threshold: Option<f32>,
    scope: &mut Scope,
) -> Option<DecisionConfig> {
    let scope_rule = if global {
        (!unguarded.is_empty()).then(|| group(RuleOperator::Not, vec![group(RuleOperator::Or, unguarded)]))
    } else if guarded.is_empty() {
        return None;
    } else {
        Some(group(RuleOperator::Or, guarded))
    };
    let name = "prompt_guard";
    scope.signals.jailbreak.push(JailbreakRule {
        name: name.into(),
        threshold,
        jailbreak_patterns: Vec::new(),
        benign_patterns: Vec::new(),
        include_history: false,
        description: Some("G0 prompt_guard".into()),
    });
    let mut conditions = vec![leaf(SignalKind::Jailbreak, name)];
    conditions.extend(scope_rule);
    Some(DecisionConfig {
        name: "jailbreak_block".into(),
        description: Some("G0 prompt_guard: refuse jailbreak attempts".into()),
        priority: 1,
        tier: 0,
        rules: Some(group(RuleOperator::And, conditions)),
        // Filled with the default model, never called: the decision always answers itself.
        model_refs: Vec::new(),
        algorithm: Default::default(),
        fallback: false,
        plugins: vec![PluginConfig::FastResponse(FastResponsePlugin {
            message: "Request blocked: it looks like a jailbreak attempt.".into(),
            status: 403,
        })],
        on_signal_error: None,
        target_share: None,
    })
}
