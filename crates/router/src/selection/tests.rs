use super::*;
use crate::config::load_str_with_env;

fn config() -> Config {
    load_str_with_env(
        "
providers: [{name: p, base_url: 'http://127.0.0.1:1/v1'}]
models:
  - {name: cheap, provider: p, quality: 0.6, pricing: {prompt_per_1m: 0.1, completion_per_1m: 0.4}}
  - {name: mid, provider: p, quality: 0.75, pricing: {prompt_per_1m: 1.0, completion_per_1m: 3.0}}
  - {name: best, provider: p, quality: 0.95, pricing: {prompt_per_1m: 5.0, completion_per_1m: 15.0}}
",
        &|_| None,
    )
    .unwrap()
}

fn refs(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn cost(floor: Option<f64>, bias: Option<f64>) -> AlgorithmConfig {
    AlgorithmConfig {
        kind: AlgorithmKind::Cost,
        quality_floor: floor,
        quality_bias: bias,
        ..Default::default()
    }
}

#[test]
fn cost_picks_the_cheapest_until_the_quality_floor_forbids_it() {
    let backends = Backends::default();
    let c = config();
    let all = refs(&["best", "mid", "cheap"]);
    assert_eq!(select(&c, &backends, &all, &cost(None, None)).unwrap().name, "cheap");
    assert_eq!(
        select(&c, &backends, &all, &cost(Some(0.6), None)).unwrap().name,
        "cheap"
    );
    assert_eq!(select(&c, &backends, &all, &cost(Some(0.7), None)).unwrap().name, "mid");
    assert_eq!(
        select(&c, &backends, &all, &cost(Some(0.9), None)).unwrap().name,
        "best"
    );
    // Nothing meets the floor: the best there is.
    assert_eq!(
        select(&c, &backends, &refs(&["cheap", "mid"]), &cost(Some(0.99), None))
            .unwrap()
            .name,
        "mid"
    );
}

#[test]
fn quality_bias_trades_quality_against_price() {
    let backends = Backends::default();
    let c = config();
    let all = refs(&["best", "mid", "cheap"]);
    assert_eq!(
        select(&c, &backends, &all, &cost(None, Some(0.0))).unwrap().name,
        "cheap"
    );
    assert_eq!(
        select(&c, &backends, &all, &cost(None, Some(1.0))).unwrap().name,
        "best"
    );
    // 0.5: cheap 0.3-0.025=0.275, mid 0.375-0.2=0.175, best 0.475-0.5: cheap.
    assert_eq!(
        select(&c, &backends, &all, &cost(None, Some(0.5))).unwrap().name,
        "cheap"
    );
    assert_eq!(
        select(&c, &backends, &all, &cost(None, Some(0.9))).unwrap().name,
        "best"
    );
}

#[test]
fn static_takes_the_first_and_skips_down_models() {
    let backends = Backends::default();
    let c = config();
    // Unique names: backend state is process-wide.
    let c2 = load_str_with_env(
        "
providers: [{name: p, base_url: 'http://127.0.0.1:1/v1'}]
models: [{name: flaky-x, provider: p}, {name: steady-x, provider: p}]
",
        &|_| None,
    )
    .unwrap();
    assert_eq!(
        select(&c, &backends, &refs(&["mid", "best"]), &AlgorithmConfig::default())
            .unwrap()
            .name,
        "mid"
    );
    let r = refs(&["flaky-x", "steady-x"]);
    for _ in 0..3 {
        backends.record("flaky-x", false, None, None);
    }
    assert!(backends.is_down("flaky-x"));
    assert_eq!(
        select(&c2, &backends, &r, &AlgorithmConfig::default()).unwrap().name,
        "steady-x"
    );
    // If every candidate is down, still answer with the first.
    for _ in 0..3 {
        backends.record("steady-x", false, None, None);
    }
    assert_eq!(
        select(&c2, &backends, &r, &AlgorithmConfig::default()).unwrap().name,
        "flaky-x"
    );
    backends.record("flaky-x", true, Some(10.0), None);
    assert!(!backends.is_down("flaky-x"));
}

#[test]
fn latency_aware_measures_everyone_then_prefers_the_fastest_within_target() {
    let backends = Backends::default();
    let c = load_str_with_env(
        "
providers: [{name: p, base_url: 'http://127.0.0.1:1/v1'}]
models: [{name: slow-y, provider: p}, {name: fast-y, provider: p}]
",
        &|_| None,
    )
    .unwrap();
    let r = refs(&["slow-y", "fast-y"]);
    let a = AlgorithmConfig {
        kind: AlgorithmKind::LatencyAware,
        ttft_target_ms: Some(200.0),
        ..Default::default()
    };
    assert_eq!(
        select(&c, &backends, &r, &a).unwrap().name,
        "slow-y",
        "unobserved first"
    );
    backends.record("slow-y", true, Some(500.0), None);
    assert_eq!(
        select(&c, &backends, &r, &a).unwrap().name,
        "fast-y",
        "the other one gets measured"
    );
    backends.record("fast-y", true, Some(20.0), None);
    assert_eq!(select(&c, &backends, &r, &a).unwrap().name, "fast-y");
    // Both over target: still the fastest.
    backends.record("fast-y", true, Some(900.0), None);
    backends.record("fast-y", true, Some(900.0), None);
    assert_eq!(select(&c, &backends, &r, &a).unwrap().name, "slow-y");
}

#[test]
fn a_model_passed_over_gets_one_probe_once_its_samples_are_stale() {
    let backends = Backends::default();
    use std::time::Duration;
    backends.record("probe-z", true, Some(900.0), None);
    let soon = Duration::from_millis(40);
    assert!(!backends.claim_probe("probe-z", soon), "fresh samples: no probe");
    std::thread::sleep(soon);
    assert!(backends.claim_probe("probe-z", soon), "stale: one probe");
    assert!(!backends.claim_probe("probe-z", soon), "only one probe per interval");
    assert!(
        !backends.claim_probe("never-seen-z", Duration::ZERO),
        "unknown models are measured, not probed"
    );
    // A new sample makes the model fresh again.
    backends.record("probe-z", true, Some(100.0), None);
    assert!(!backends.claim_probe("probe-z", soon));
}

/// Three models of rising strength and price; `gpt4o` gets its strength from the learned table.
fn tiered() -> Config {
    load_str_with_env(
        "
providers: [{name: p, base_url: 'http://127.0.0.1:1/v1'}]
models:
  - {name: small-s, provider: p, strength: -1.0, pricing: {prompt_per_1m: 0.1, completion_per_1m: 0.4}}
  - {name: mid-s, provider: p, strength: 0.5, pricing: {prompt_per_1m: 1.0, completion_per_1m: 3.0}}
  - {name: big-s, provider: p, model_id: gpt-4o-2024-05-13, pricing: {prompt_per_1m: 5.0, completion_per_1m: 15.0}}
",
        &|_| None,
    )
    .unwrap()
}

fn success_target(target: f64) -> AlgorithmConfig {
    AlgorithmConfig {
        kind: AlgorithmKind::SuccessTarget,
        target: Some(target),
        ..Default::default()
    }
}

const REFERENCE: crate::prediction::ReferenceStrengths = crate::prediction::ReferenceStrengths {
    weak: -0.5,
    strong: 1.5,
};

/// The chosen model and `success_target`'s trace for a prediction of the reference pair.
fn pick(c: &Config, backends: &Backends, weak: f32, strong: f32, target: f64) -> (String, SuccessTrace) {
    let success = Success {
        prediction: Some(crate::prediction::Prediction { weak, strong }),
        reference: REFERENCE,
    };
    let inputs = Inputs {
        success: Some(&success),
        ..Default::default()
    };
    // Listed strongest first: the order must not matter.
    let s = select_learned(
        c,
        backends,
        inputs,
        &refs(&["big-s", "mid-s", "small-s"]),
        &success_target(target),
    );
    (s.model.unwrap().name.clone(), s.success.unwrap())
}

#[test]
fn success_target_takes_the_cheapest_model_that_reaches_the_target() {
    let backends = Backends::default();
    let c = tiered();
    // An easy prompt: even the weakest model is predicted to answer it.
    let (easy, trace) = pick(&c, &backends, 0.9, 0.97, 0.8);
    assert_eq!(easy, "small-s");
    assert!(trace.reached && trace.chosen == "small-s" && trace.target == 0.8);
    let names: Vec<&str> = trace.estimates.iter().map(|e| e.model.as_str()).collect();
    assert_eq!(names, ["big-s", "mid-s", "small-s"], "configuration order");
    let by = |n: &str| trace.estimates.iter().find(|e| e.model == n).unwrap().clone();
    assert!(by("small-s").success < by("mid-s").success && by("mid-s").success < by("big-s").success);
    let gpt = crate::config::strengths::learned("gpt-4o-2024-05-13").unwrap().strength;
    assert_eq!(by("big-s").strength, gpt, "the learned default");
    // A harder one: the weak reference fails it half the time, the strong one rarely.
    assert_eq!(pick(&c, &backends, 0.5, 0.95, 0.8).0, "mid-s");
    // Harder still: only the strongest reaches the target.
    assert_eq!(pick(&c, &backends, 0.2, 0.9, 0.8).0, "big-s");
    // None reaches it: the strongest, and the trace says so.
    let (none, trace) = pick(&c, &backends, 0.05, 0.3, 0.8);
    assert_eq!(none, "big-s");
    assert!(!trace.reached);
}

#[test]
fn success_target_skips_models_down_and_falls_back_to_the_strongest_without_a_prediction() {
    let backends = Backends::default();
    let c = tiered();
    for _ in 0..3 {
        backends.record("small-s", false, None, None);
    }
    assert!(backends.is_down("small-s"));
    let (chosen, trace) = pick(&c, &backends, 0.9, 0.97, 0.8);
    assert_eq!(chosen, "mid-s");
    assert!(trace.estimates.iter().all(|e| e.model != "small-s"));
    backends.record("small-s", true, Some(10.0), None);

    let none = Success {
        prediction: None,
        reference: REFERENCE,
    };
    let inputs = Inputs {
        success: Some(&none),
        success_error: Some("embedding failed"),
        ..Default::default()
    };
    let s = select_learned(
        &c,
        &backends,
        inputs,
        &refs(&["small-s", "mid-s", "big-s"]),
        &success_target(0.5),
    );
    assert_eq!(s.model.unwrap().name, "big-s");
    let t = s.success.unwrap();
    assert!(!t.reached && t.estimates.is_empty() && t.error.as_deref() == Some("embedding failed"));
}

#[test]
fn success_target_ties_go_to_the_stronger_then_to_configuration_order() {
    let backends = Backends::default();
    let c = load_str_with_env(
        "
providers: [{name: p, base_url: 'http://127.0.0.1:1/v1'}]
models:
  - {name: a-t, provider: p, strength: 0.0, pricing: {prompt_per_1m: 1.0}}
  - {name: b-t, provider: p, strength: 1.0, pricing: {prompt_per_1m: 1.0}}
  - {name: c-t, provider: p, strength: 1.0, pricing: {prompt_per_1m: 2.0}}
  - {name: d-t, provider: p, strength: 1.0, pricing: {prompt_per_1m: 2.0}}
",
        &|_| None,
    )
    .unwrap();
    let success = Success {
        prediction: Some(crate::prediction::Prediction {
            weak: 0.9,
            strong: 0.99,
        }),
        reference: REFERENCE,
    };
    let inputs = Inputs {
        success: Some(&success),
        ..Default::default()
    };
    // Everyone reaches 0.5; a-t and b-t cost the same: the stronger.
    let s = select_learned(
        &c,
        &backends,
        inputs,
        &refs(&["a-t", "b-t", "c-t"]),
        &success_target(0.5),
    );
    assert_eq!(s.model.unwrap().name, "b-t");
    // Nobody reaches 1.0: the strongest, the cheaper of equals, then the first listed.
    let s = select_learned(
        &c,
        &backends,
        inputs,
        &refs(&["d-t", "c-t", "b-t"]),
        &success_target(1.0),
    );
    assert_eq!(s.model.unwrap().name, "b-t");
    let s = select_learned(&c, &backends, inputs, &refs(&["d-t", "c-t"]), &success_target(1.0));
    assert_eq!(s.model.unwrap().name, "d-t");
}
