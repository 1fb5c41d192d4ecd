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
