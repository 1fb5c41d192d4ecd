use super::*;
use crate::{
    AlgorithmKind, Loaded, PluginConfig, ReasoningEffort, RuleOperator, SignalKind, load_detailed, to_native_yaml,
};

const NATIVE: &str = include_str!("../../../../config/examples/vsr/native.yaml");
const FLAT: &str = include_str!("../../../../config/examples/vsr/flat.yaml");
const USER: &str = include_str!("../../../../config/examples/vsr/user.yaml");
const CANONICAL: &str = include_str!("../../../../config/examples/vsr/canonical.yaml");
const CATEGORIES: &str = include_str!("../../../../config/examples/vsr/categories.yaml");

/// The fixtures need no environment: `${OPENAI_API_KEY}` credentials become env references.
fn load(text: &str) -> Loaded {
    load_detailed(text, &|_| None).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    load_detailed(text, &|_| None).unwrap_err().to_string()
}

fn has_warning(l: &Loaded, path: &str, needle: &str) -> bool {
    l.warnings.iter().any(|w| w.path == path && w.message.contains(needle))
}

fn assert_warns(l: &Loaded, expected: &[(&str, &str)]) {
    for (path, needle) in expected {
        assert!(
            has_warning(l, path, needle),
            "no warning `{needle}` at {path}; got:\n{}",
            l.warnings.iter().map(|w| format!("  {w}\n")).collect::<String>()
        );
    }
}

#[test]
fn detects_every_shape_and_leaves_native_files_alone() {
    let shape = |t: &str| detect(&serde_yaml::from_str(t).unwrap());
    assert_eq!(shape(NATIVE), Shape::Native);
    assert_eq!(shape(FLAT), Shape::VsrFlat);
    assert_eq!(shape(USER), Shape::VsrUser);
    assert_eq!(shape(CANONICAL), Shape::VsrCanonical);
    assert_eq!(shape(CATEGORIES), Shape::VsrCategories);
    assert_eq!(shape(crate::DEFAULT_CONFIG), Shape::Native);
    for example in ["cost-tiers.yaml", "medical.yaml", "multilingual.yaml"] {
        let text = std::fs::read_to_string(format!(
            "{}/../../config/examples/{example}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        assert_eq!(shape(&text), Shape::Native, "{example}");
    }
    // Without a version, a mapping under `providers` tells the vSR formats apart.
    assert_eq!(shape("providers: {models: []}\nrouting: {}"), Shape::VsrCanonical);
    assert_eq!(shape("providers: {models: []}\nsignals: {}"), Shape::VsrUser);
    assert_eq!(shape("keyword_rules: []\ndecisions: []"), Shape::VsrFlat);
    assert_eq!(shape("providers: []\nmodels: []"), Shape::Native);
    assert_eq!(shape("- a list"), Shape::Native);
}

#[test]
fn native_fixture_loads_without_warnings() {
    let l = load(NATIVE);
    assert_eq!(l.shape, Shape::Native);
    assert!(l.warnings.is_empty());
}

#[test]
fn flat_g1_maps_endpoints_models_signals_and_decisions() {
    let l = load(FLAT);
    assert_eq!(l.shape, Shape::VsrFlat);
    let c = &l.config;
    let openai = c.provider("openai").unwrap();
    assert_eq!(openai.base_url, "https://api.openai.com/v1");
    assert_eq!(
        openai.credentials.as_ref().unwrap().env.as_deref(),
        Some("OPENAI_API_KEY")
    );
    let coder = c.provider("vllm-coder").unwrap();
    assert_eq!(coder.base_url, "http://127.0.0.1:8001/v1");
    assert!(coder.credentials.is_none(), "inline keys are never copied");
    let mini = c.model("gpt-4o-mini").unwrap();
    assert_eq!(mini.provider, "openai");
    let p = mini.pricing.as_ref().unwrap();
    assert_eq!(
        (p.prompt_per_1m, p.completion_per_1m, p.cached_prompt_per_1m),
        (0.15, 0.6, Some(0.075))
    );
    assert_eq!(mini.quality, Some(0.7));
    assert_eq!(c.model("qwen3-8b").unwrap().model_id.as_deref(), Some("Qwen/Qwen3-8B"));
    assert_eq!(c.model("qwen3-8b").unwrap().reasoning_family.as_deref(), Some("qwen3"));
    assert_eq!(c.routing.default_model.as_deref(), Some("qwen3-8b"));
    assert_eq!(c.routing.auto_models, ["auto", "MoM"]);
    assert_eq!(c.routing.default_reasoning_effort, Some(ReasoningEffort::Medium));
    assert_eq!(c.classifier.threshold, 0.3);
    assert!(c.compat.vsr_headers);
    assert_eq!(c.compat.selected_model_header.as_deref(), Some("x-selected-model"));
    assert_eq!(c.signals.embeddings[0].aggregation, crate::Aggregation::Mean);
    assert_eq!(c.signals.context[0].min_tokens.unwrap().0, 8_000);
    assert!(c.decisions.iter().all(|d| d.name != "fact_checked"));

    let coding = c.decisions.iter().find(|d| d.name == "coding").unwrap();
    assert_eq!(coding.algorithm.kind, AlgorithmKind::Static);
    assert_eq!(
        coding.plugins.len(),
        2,
        "hallucination is dropped: {:?}",
        coding.plugins
    );
    // OR(keyword code, user_feedback) lost its unsupported leaf.
    let rules = coding.rules.as_ref().unwrap();
    assert_eq!(rules.operator, Some(RuleOperator::And));
    assert_eq!(rules.conditions[0].conditions.len(), 1);
    let travel = c.decisions.iter().find(|d| d.name == "travel").unwrap();
    assert_eq!(travel.algorithm.kind, AlgorithmKind::LatencyAware);
    assert_eq!(travel.algorithm.ttft_percentile, 95);
    let legal = c.decisions.iter().find(|d| d.name == "legal").unwrap();
    assert!(
        matches!(&legal.plugins[0], PluginConfig::Cache(c) if c.enabled && c.scope == crate::CacheScope::Tenant),
        "vSR's semantic-cache is llmsoup's cache plugin: {:?}",
        legal.plugins
    );
    let math = c.decisions.iter().find(|d| d.name == "math_reasoning").unwrap();
    let r = &math.model_refs[0];
    assert_eq!(
        (r.use_reasoning, r.reasoning_effort),
        (Some(true), Some(ReasoningEffort::High))
    );
    let secrets = c.decisions.iter().find(|d| d.name == "secrets").unwrap();
    assert_eq!(secrets.model_refs[0].lora_name.as_deref(), Some("secure-lora"));

    assert_warns(
        &l,
        &[
            ("bert_model", "MiniLM"),
            ("classifier.category_model.model_id", "built-in classifiers"),
            ("semantic_cache", "no global response cache"),
            ("observability", "ignored"),
            ("vllm_endpoints[1].api_key", "inline API keys"),
            ("keyword_rules[5].method", "`bm25` is not supported"),
            ("complexity_rules[0].threshold", "not mapped"),
            ("fact_check_rules", "never match"),
            ("user_feedback_rules", "never match"),
            ("decisions[3].rules", "dropped"),
            ("decisions[6].rules.conditions[0].conditions[1].type", "never matches"),
            ("decisions[6].algorithm.type", "`router_dc` is not supported"),
            ("decisions[6].plugins[2].type", "`hallucination` is not supported"),
        ],
    );
    let w = l.warnings.iter().find(|w| w.path == "bert_model").unwrap();
    assert_eq!(w.line, Some(8));
}

#[test]
fn user_g1prime_maps_provider_models_and_listeners() {
    let l = load(USER);
    assert_eq!(l.shape, Shape::VsrUser);
    let c = &l.config;
    assert_eq!(c.gateway.listen, "127.0.0.1:8801");
    let openai = c.provider(&c.model("gpt-4.1").unwrap().provider).unwrap();
    assert_eq!(openai.base_url, "https://api.openai.com/v1");
    assert_eq!(
        openai.credentials.as_ref().unwrap().env.as_deref(),
        Some("OPENAI_API_KEY")
    );
    assert_eq!(
        c.model("gpt-4o-mini").unwrap().provider,
        c.model("gpt-4.1").unwrap().provider
    );
    assert_eq!(c.provider("vllm-reason").unwrap().base_url, "http://127.0.0.1:8002/v1");
    assert_eq!(c.providers.len(), 4, "the backup endpoint is not used");
    let multi = c.decisions.iter().find(|d| d.name == "multilingual").unwrap();
    assert_eq!(
        multi.rules.as_ref().unwrap().conditions.len(),
        3,
        "the AND with a preference leaf is gone"
    );
    assert_warns(
        &l,
        &[
            ("signals.keywords[5].fuzzy_match", "literal"),
            ("signals.preferences", "never match"),
            (
                "decisions[7].rules.conditions[3].conditions[0].type",
                "`preference` signals",
            ),
            ("providers.models[2].endpoints", "only the first endpoint"),
            ("providers.external_models", "not supported by llmsoup, ignored"),
            ("memory", "not supported by llmsoup, ignored"),
            ("listeners[0].timeout", "ignored"),
        ],
    );
}

#[test]
fn canonical_g2_maps_backends_cards_and_global_router() {
    let l = load(CANONICAL);
    assert_eq!(l.shape, Shape::VsrCanonical);
    let c = &l.config;
    assert_eq!(c.routing.auto_models, ["auto", "MoM", "vllm-sr/auto"]);
    assert_eq!(
        c.model("gpt-4.1").unwrap().quality,
        Some(0.9),
        "quality comes from the model card"
    );
    let openai = c.provider("openai").unwrap();
    assert_eq!(
        openai.credentials.as_ref().unwrap().env.as_deref(),
        Some("OPENAI_API_KEY")
    );
    // `math` was not declared: a built-in domain a decision references is generated.
    assert!(c.signals.domains.iter().any(|d| d.name == "math"));
    // NOT(structure) is always true and folds away.
    let coding = c.decisions.iter().find(|d| d.name == "coding").unwrap();
    assert_eq!(coding.rules.as_ref().unwrap().conditions.len(), 2);
    assert_warns(
        &l,
        &[
            ("global.integrations.looper", "not supported by llmsoup, ignored"),
            ("global.stores.response_cache", "no global response cache"),
            ("global.model_catalog.embeddings", "MiniLM"),
            ("global.router.clear_route_cache", "ignored"),
            ("routing.projections", "ignored"),
            ("routing.signals.structure", "never match"),
            ("routing.signals.keywords[5].method", "`ngram`"),
            ("providers.models[1].reliability", "envoy-config"),
            ("routing.decisions[5].plugins[2].type", "`router_replay`"),
            (
                "routing.decisions[9].algorithm.latency_aware.tpot_percentile",
                "ignored",
            ),
        ],
    );
    let looper = l
        .warnings
        .iter()
        .find(|w| w.path == "global.integrations.looper")
        .unwrap();
    assert_eq!(
        looper.to_string(),
        format!(
            "global.integrations.looper (line {}): not supported by llmsoup, ignored",
            looper.line.unwrap()
        )
    );
}

#[test]
fn categories_g0_become_one_decision_per_category() {
    let l = load(CATEGORIES);
    assert_eq!(l.shape, Shape::VsrCategories);
    let c = &l.config;
    let names: Vec<&str> = c.decisions.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "computer_science_decision",
            "math_decision",
            "law_decision",
            "other_decision",
            "jailbreak_block"
        ]
    );
    // prompt_guard: refuse jailbreaks above every category, except where a category opts out.
    let block = &c.decisions[4];
    assert_eq!(block.priority, 1);
    assert!(matches!(&block.plugins[0], PluginConfig::FastResponse(f) if f.status == 403));
    let rules = block.rules.as_ref().unwrap();
    assert_eq!(rules.operator, Some(RuleOperator::And));
    assert_eq!(rules.conditions[0].kind, Some(SignalKind::Jailbreak));
    assert_eq!(rules.conditions[1].operator, Some(RuleOperator::Not));
    assert_eq!(c.signals.jailbreak[0].threshold, Some(0.7));
    assert_eq!(block.model_refs[0].model, "qwen3-8b", "the default model, never called");
    let cs = &c.decisions[0];
    let refs: Vec<&str> = cs.model_refs.iter().map(|r| r.model.as_str()).collect();
    assert_eq!(refs, ["qwen-coder", "gpt-4o-mini"], "highest score first");
    assert!(matches!(&cs.plugins[0], PluginConfig::SystemPrompt(p) if p.system_prompt.contains("senior")));
    let math = &c.decisions[1];
    assert_eq!(math.model_refs[0].model, "deepseek-r1");
    assert_eq!(math.model_refs[0].use_reasoning, Some(true));
    assert_eq!(math.model_refs[0].reasoning_effort, Some(ReasoningEffort::High));
    assert_eq!(math.model_refs[1].use_reasoning, Some(false));
    assert!(matches!(c.decisions[2].plugins[0], PluginConfig::Cache(_)));
    assert!(matches!(
        &c.decisions[3].plugins[0],
        PluginConfig::SystemPrompt(p) if p.mode == crate::SystemPromptMode::Insert
    ));
    // `computer science` is not a valid signal name: it is renamed and keeps its label.
    let d = c.signals.domains.iter().find(|d| d.name == "computer_science").unwrap();
    assert_eq!(d.mmlu_categories, ["computer science"]);
    assert_eq!(c.signals.keywords[0].name, "computer_science_keywords");
    assert_eq!(c.signals.embeddings[0].name, "law_embeddings");
    assert_eq!(c.signals.embeddings[0].candidates.len(), 2);
    assert_eq!(c.classifier.threshold, 0.6);
    // Both OpenAI models carry the same key reference: one provider, with a credential.
    let p = c.provider(&c.model("gpt-4.1").unwrap().provider).unwrap();
    assert_eq!(p.base_url, "https://api.openai.com:443/v1");
    assert_eq!(p.credentials.as_ref().unwrap().env.as_deref(), Some("OPENAI_API_KEY"));
    assert_eq!(c.model("gpt-4o-mini").unwrap().provider, p.name);
    assert_warns(
        &l,
        &[
            ("model_config.qwen3-8b.pii_policy", "ignored"),
            ("embedding_rules[0].model", "MiniLM"),
            ("categories[2].pii_enabled", "not converted"),
            ("prompt_guard.model_id", "built-in classifiers"),
            ("vllm_endpoints[0].health_check_path", "envoy-config"),
        ],
    );
}

/// 1-based line of the first line containing `needle`.
fn line_with(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn wrong_types_name_the_key_path_and_line() {
    let check = |text: &str, from: &str, to: &str, path: &str| {
        let bad = text.replacen(from, to, 1);
        let e = err(&bad);
        let line = line_with(&bad, to);
        assert!(
            e.contains(path) && e.contains(&format!("line {line}")),
            "want {path} line {line}: {e}"
        );
    };
    check(
        FLAT,
        "case_sensitive: false}",
        "case_sensitive: maybe}",
        "keyword_rules[0].case_sensitive",
    );
    check(
        CANONICAL,
        "      priority: 300",
        "      priority: highest",
        "routing.decisions[0].priority",
    );
    check(
        USER,
        "quality_score: 0.8",
        "quality_score: good",
        "providers.models[1].quality_score",
    );
    check(
        CATEGORIES,
        "score: 0.95",
        "score: [1]",
        "categories[1].model_scores[0].score",
    );
    check(FLAT, "port: 8002", "port: eighty", "vllm_endpoints[2].port");
    let e = err(&FLAT.replace("max_n: 1}", "max_n: lots}"));
    assert!(e.contains("decisions[6].plugins[1].configuration.max_n"), "{e}");
    let e = err(&CANONICAL.replace("strategy: priority", "strategy: fastest"));
    assert!(e.contains("routing.strategy") && e.contains("fastest"), "{e}");
    let e = err(&FLAT.replace("preferred_endpoints: [vllm-coder]", "preferred_endpoints: [nowhere]"));
    assert!(
        e.contains("model_config.qwen-coder.preferred_endpoints[0]") && e.contains("nowhere"),
        "{e}"
    );
}

#[test]
fn unknown_keys_warn_with_their_path_and_duplicates_are_errors() {
    let text = USER
        .replace("decisions:\n", "decision_rules: []\ndecisions:\n")
        .replacen("    priority: 300\n", "    priority: 300\n    prioritee: 301\n", 1);
    let l = load(&text);
    assert_warns(
        &l,
        &[
            ("decision_rules", "not supported by llmsoup, ignored"),
            ("decisions[0].prioritee", "not supported by llmsoup, ignored"),
        ],
    );
    let w = l.warnings.iter().find(|w| w.path == "decisions[0].prioritee").unwrap();
    assert_eq!(w.line, Some(line_with(&text, "prioritee")));
    let dup = CANONICAL.replace(
        "    - name: qwen-coder\n      provider_model_id",
        "    - name: qwen3-8b\n      provider_model_id",
    );
    let e = err(&dup);
    assert!(e.contains("providers.models[1].name") && e.contains("duplicate"), "{e}");
}

#[test]
fn env_substitution_applies_to_vsr_files() {
    let text = FLAT.replace(
        "address: 127.0.0.1\n    port: 8002",
        "address: ${REASON_HOST}\n    port: ${REASON_PORT}",
    );
    let lookup = |n: &str| match n {
        "REASON_HOST" => Some("10.0.0.7".to_string()),
        "REASON_PORT" => Some("9002".to_string()),
        _ => None,
    };
    let c = load_detailed(&text, &lookup).unwrap().config;
    assert_eq!(c.provider("vllm-reason").unwrap().base_url, "http://10.0.0.7:9002/v1");
    // Unset: kept as written with a warning, so a field llmsoup uses fails with its own path.
    let e = err(&text);
    assert!(
        e.contains("vllm_endpoints[2].port") && e.contains("${REASON_PORT}"),
        "{e}"
    );
    // In a section llmsoup ignores (or a vSR template placeholder) an unset variable only warns.
    let l = load(&FLAT.replace("backend_type: memory", "backend_type: ${CACHE_BACKEND}"));
    assert_warns(&l, &[("semantic_cache.backend_type", "`CACHE_BACKEND` is not set")]);
}

#[test]
fn vsr_quirks_load_as_vsr_runs_them() {
    let doc = |extra: &str| {
        format!(
            "
vllm_endpoints: [{{name: e, address: 127.0.0.1, port: 8000}}]
model_config: {{m: {{}}}}
default_model: m
keyword_rules: [{{name: k, method: regex, keywords: ['C:\\Program Files\\', user.name@domain.com]}}]
embedding_rules: [{{name: emb, aggregation_method: avg, candidates: [hello]}}]
{extra}"
        )
    };
    let l = load(&doc("decisions:
  - name: block
    priority: 10
    rules: {operator: OR, conditions: [{type: keyword, name: k}]}
    plugins: [{type: fast_response, configuration: {message: no}}]
  - name: fallback
    rules: {operator: OR, conditions: [{type: always}]}
    modelRefs: [{model: m}]
"));
    let c = &l.config;
    // `method: regex` is vSR's escaped literal mode: invalid regexes are fine, dots are literal.
    assert_eq!(c.signals.keywords[0].method, crate::KeywordMethod::Literal);
    assert_eq!(c.signals.embeddings[0].aggregation, crate::Aggregation::Max);
    // A decision that only answers gets the default model, which it never calls.
    assert_eq!(c.decisions.len(), 1);
    assert_eq!(c.decisions[0].model_refs[0].model, "m");
    assert_warns(
        &l,
        &[
            ("embedding_rules[0].aggregation_method", "unknown aggregation `avg`"),
            (
                "decisions[1].rules.conditions[0].type",
                "`always` signals are not supported",
            ),
            ("decisions[1].rules", "dropped"),
        ],
    );
}

#[test]
fn unsupported_conditions_fold_as_never_matching() {
    let doc = |rules: &str| {
        format!(
            "
vllm_endpoints: [{{name: e, address: 127.0.0.1, port: 8000}}]
model_config: {{m: {{}}}}
keyword_rules: [{{name: k, keywords: [x]}}]
decisions:
  - name: d
    rules: {rules}
    modelRefs: [{{model: m}}]
"
        )
    };
    let fold = |rules: &str| load(&doc(rules)).config.decisions.into_iter().next();
    // AND with a never-matching leaf: the decision cannot match and is dropped.
    assert!(fold("{operator: AND, conditions: [{type: keyword, name: k}, {type: modality, name: AR}]}").is_none());
    // OR drops the leaf.
    let d = fold("{operator: OR, conditions: [{type: keyword, name: k}, {type: authz, name: admins}]}").unwrap();
    assert_eq!(d.rules.unwrap().conditions.len(), 1);
    // NOT of it is always true: a catch-all.
    let d = fold("{operator: NOT, conditions: [{type: kb, name: docs}]}").unwrap();
    assert!(d.rules.is_none());
    // A rule name that does not exist behaves the same (vSR's own examples have typos).
    assert!(fold("{operator: AND, conditions: [{type: keyword, name: typo}]}").is_none());
    // Structural mistakes are still errors.
    let e = err(&doc("{operator: NOT, conditions: []}"));
    assert!(
        e.contains("decisions[0].rules.conditions") && e.contains("exactly one"),
        "{e}"
    );
    let e = err(&doc("{operator: XOR, conditions: []}"));
    assert!(e.contains("decisions[0].rules.operator"), "{e}");
}

#[test]
fn migrate_round_trips_every_shape() {
    for (name, text) in [
        ("native", NATIVE),
        ("flat", FLAT),
        ("user", USER),
        ("canonical", CANONICAL),
        ("categories", CATEGORIES),
    ] {
        let loaded = load(text);
        let yaml = to_native_yaml(&loaded).unwrap();
        let back = load_detailed(&yaml, &|_| None).unwrap_or_else(|e| panic!("{name}: {e}\n{yaml}"));
        assert_eq!(back.shape, Shape::Native, "{name}");
        assert!(back.warnings.is_empty());
        assert_eq!(
            serde_yaml::to_value(&back.config).unwrap(),
            serde_yaml::to_value(&loaded.config).unwrap(),
            "{name}: migrated config differs"
        );
        for w in &loaded.warnings {
            assert!(
                yaml.contains(&format!("#   - {w}")),
                "{name}: warning missing from header: {w}"
            );
        }
        assert!(
            !yaml.contains("not-a-real-key"),
            "inline secrets never reach the output"
        );
    }
}

#[test]
fn signal_kinds_of_the_fixtures_cover_every_supported_family() {
    let c = load(CANONICAL).config;
    let used: std::collections::BTreeSet<SignalKind> = c
        .decisions
        .iter()
        .filter_map(|d| d.rules.as_ref())
        .flat_map(|r| {
            let mut out = Vec::new();
            let mut stack = vec![r];
            while let Some(n) = stack.pop() {
                out.extend(n.kind);
                stack.extend(&n.conditions);
            }
            out
        })
        .collect();
    for kind in [
        SignalKind::Keyword,
        SignalKind::Context,
        SignalKind::Language,
        SignalKind::Embedding,
        SignalKind::Domain,
        SignalKind::Complexity,
        SignalKind::Pii,
        SignalKind::Jailbreak,
    ] {
        assert!(used.contains(&kind), "{kind} is not exercised");
    }
}
