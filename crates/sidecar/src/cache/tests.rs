use std::sync::Arc;
use std::time::Duration;

use llmsoup_config::{CacheBackend, CacheDedupConfig, CachePlugin, CacheRedisConfig, ResponseCacheConfig};
use llmsoup_router::plugins::Api;
use llmsoup_router::plugins::cache::{CacheLookup, lookup};

use super::*;
use crate::observe::metrics::Metrics;

const ANSWER: &[u8] =
    br#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":3}}"#;

fn request(text: &str) -> CacheLookup {
    let body = format!(r#"{{"messages":[{{"role":"user","content":"{text}"}}]}}"#);
    lookup(
        &CachePlugin::default(),
        Api::OpenAi,
        "/v1/chat/completions",
        body.as_bytes(),
        "m",
        "t",
        "d",
    )
    .unwrap()
}

fn cache(settings: ResponseCacheConfig) -> Arc<ResponseCache> {
    let c = ResponseCache::new(Metrics::noop());
    c.configure(&settings).unwrap();
    Arc::new(c)
}

#[tokio::test]
async fn a_leader_stores_its_answer_and_the_next_request_hits() {
    let c = cache(ResponseCacheConfig::default());
    let l = request("hello");
    assert!(matches!(c.resolve(&l).await, Resolved::Miss { leader: true }));
    assert!(c.awaits(&l.key));
    c.complete(&l.key, 200, false, Some(ANSWER));
    assert!(!c.awaits(&l.key));
    let Resolved::Hit(e, HitKind::Exact) = c.resolve(&l).await else {
        panic!("expected a hit")
    };
    assert_eq!(e.body, ANSWER);
    assert_eq!(c.stored(), 1);
}

#[tokio::test]
async fn errors_and_oversized_answers_are_not_stored_and_release_the_key() {
    let c = cache(ResponseCacheConfig {
        max_entry_bytes: 64,
        ..Default::default()
    });
    let l = request("hello");
    assert!(matches!(c.resolve(&l).await, Resolved::Miss { leader: true }));
    c.complete(&l.key, 200, false, Some(ANSWER));
    assert!(
        matches!(c.resolve(&l).await, Resolved::Miss { leader: true }),
        "too large to keep"
    );
    c.complete(&l.key, 500, false, Some(b"{}"));
    assert!(matches!(c.resolve(&l).await, Resolved::Miss { leader: true }));
    c.abandon(&l.key);
    assert!(!c.awaits(&l.key));
    assert_eq!(c.stored(), 0);
}

#[tokio::test]
async fn duplicates_wait_for_the_leader_and_get_its_answer() {
    let c = cache(ResponseCacheConfig::default());
    let l = request("slow one");
    assert!(matches!(c.resolve(&l).await, Resolved::Miss { leader: true }));
    let waiters: Vec<_> = (0..7)
        .map(|_| {
            let (c, l) = (c.clone(), l.clone());
            tokio::spawn(async move { c.resolve(&l).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.complete(&l.key, 200, false, Some(ANSWER));
    for w in waiters {
        assert!(matches!(w.await.unwrap(), Resolved::Hit(_, HitKind::Dedup)));
    }
    // A leader that fails sends its duplicates upstream.
    let l = request("failing one");
    assert!(matches!(c.resolve(&l).await, Resolved::Miss { leader: true }));
    let w = {
        let (c, l) = (c.clone(), l.clone());
        tokio::spawn(async move { c.resolve(&l).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.abandon(&l.key);
    assert!(matches!(w.await.unwrap(), Resolved::Miss { leader: false }));
}

#[tokio::test]
async fn waiting_is_bounded_and_a_stale_leader_is_replaced() {
    let c = cache(ResponseCacheConfig {
        dedup: CacheDedupConfig {
            enabled: true,
            max_wait_ms: 30,
        },
        ..Default::default()
    });
    let l = request("lost report");
    assert!(matches!(c.resolve(&l).await, Resolved::Miss { leader: true }));
    assert!(
        matches!(c.resolve(&l).await, Resolved::Miss { leader: false }),
        "timed out"
    );
    assert!(
        matches!(c.resolve(&l).await, Resolved::Miss { leader: true }),
        "took over"
    );
}

#[tokio::test]
async fn semantic_candidates_hit_above_the_threshold_only() {
    let c = cache(ResponseCacheConfig::default());
    let unit = |v: &[f32]| -> llmsoup_models::Embedding {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect::<Vec<_>>().into()
    };
    let mut first = request("what is the capital of France?");
    first.embedding = Some(unit(&[1.0, 0.0, 0.0]));
    assert!(matches!(c.resolve(&first).await, Resolved::Miss { leader: true }));
    c.complete(&first.key, 200, false, Some(ANSWER));
    let mut close = request("capital city of France?");
    close.embedding = Some(unit(&[1.0, 0.1, 0.0]));
    assert!(matches!(c.resolve(&close).await, Resolved::Hit(_, HitKind::Semantic)));
    let mut far = request("bake bread");
    far.embedding = Some(unit(&[0.0, 1.0, 0.0]));
    assert!(matches!(c.resolve(&far).await, Resolved::Miss { leader: true }));
}

#[tokio::test]
async fn an_unreachable_redis_is_a_miss_not_an_error() {
    let c = cache(ResponseCacheConfig {
        backend: CacheBackend::Redis,
        redis: Some(CacheRedisConfig {
            url: "redis://127.0.0.1:1".into(),
            timeout_ms: 50,
            key_prefix: "t:".into(),
        }),
        ..Default::default()
    });
    let l = request("hello");
    assert!(matches!(c.resolve(&l).await, Resolved::Miss { leader: true }));
    c.complete(&l.key, 200, false, Some(ANSWER));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(matches!(c.resolve(&l).await, Resolved::Miss { leader: true }));
}
