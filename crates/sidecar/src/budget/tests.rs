//! Budgets against a real `redis-server` on a free port (installed by `scripts/install-redis.sh`;
//! these tests fail without it when `CI=true`, and say so and pass elsewhere).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use llmsoup_config::load_str;

use super::*;

struct Redis {
    child: Child,
    port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A private redis-server, or `None` (outside CI) when it is not installed.
fn redis() -> Option<Redis> {
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("redis-server not available ({e}): skipping (run scripts/install-redis.sh)");
            return None;
        }
        Err(e) => panic!("redis-server is required in CI: {e}"),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Redis { child, port })
}

const BASE: &str = "
providers:
  - {name: p, base_url: 'http://127.0.0.1:1/v1'}
models:
  - {name: cheap, provider: p, pricing: {prompt_per_1m: 1.0, completion_per_1m: 2.0}}
  - {name: strong, provider: p, pricing: {prompt_per_1m: 10.0, completion_per_1m: 30.0}}
routing:
  default_model: cheap
auth:
  tokens:
    - {name: alice, group: team, sha256: '0000000000000000000000000000000000000000000000000000000000000001'}
    - {name: bob, group: team, sha256: '0000000000000000000000000000000000000000000000000000000000000002'}
    - {name: carol, sha256: '0000000000000000000000000000000000000000000000000000000000000003'}
";

fn config(port: u16, budgets: &str) -> Config {
    let text =
        format!("{BASE}budgets:\n  store: {{redis_url: 'redis://127.0.0.1:{port}', timeout_ms: 200}}\n{budgets}");
    load_str(&text).unwrap()
}

fn budgets(config: &Config) -> Budgets {
    let b = Budgets::default();
    b.configure(config).unwrap();
    b
}

// 2026-12-06T23:59:30Z: 30 s left in the minute and in the day.
const T: u64 = 1_796_601_570;

#[tokio::test]
async fn requests_per_minute_refuse_the_request_over_the_limit_until_the_minute_ends() {
    let Some(r) = redis() else { return };
    let c = config(r.port, "  tokens:\n    alice: {requests_per_minute: 2}\n");
    let b = budgets(&c);
    assert_eq!(b.check_at(&c, "alice", "cheap", T).await, Verdict::Allow);
    assert_eq!(b.check_at(&c, "alice", "cheap", T).await, Verdict::Allow);
    let Verdict::Over { exceeded, retry_after } = b.check_at(&c, "alice", "cheap", T).await else {
        panic!("third request in the minute must be refused")
    };
    assert_eq!(
        (exceeded.scope, exceeded.name.as_str(), exceeded.metric),
        (Scope::Token, "alice", Metric::Requests)
    );
    assert_eq!(retry_after, 30);
    // Others are not limited; the next minute starts from zero.
    assert_eq!(b.check_at(&c, "carol", "cheap", T).await, Verdict::Allow);
    assert_eq!(b.check_at(&c, "alice", "cheap", T + 30).await, Verdict::Allow);
}

#[tokio::test]
async fn tokens_and_spend_are_charged_after_the_response_and_shared_by_replicas_and_groups() {
    let Some(r) = redis() else { return };
    let c = config(
        r.port,
        "  tokens:\n    alice: {tokens_per_minute: 1000}\n  groups:\n    team: {usd_per_day: 0.01}\n",
    );
    // Two replicas: two stores, one Redis.
    let (one, two) = (budgets(&c), budgets(&c));
    one.charge_now(&c, "alice", "cheap", 999, 0.0, T).await;
    assert_eq!(two.check_at(&c, "alice", "cheap", T).await, Verdict::Allow);
    two.charge_now(&c, "alice", "cheap", 1, 0.0, T).await;
    let Verdict::Over { exceeded, .. } = one.check_at(&c, "alice", "cheap", T).await else {
        panic!("tokens per minute reached")
    };
    assert_eq!(exceeded.metric, Metric::Tokens);

    // Spend: bob's request spends the team's day; alice (same group) is refused too, carol not.
    assert_eq!(one.check_at(&c, "bob", "strong", T).await, Verdict::Allow);
    one.charge_now(&c, "bob", "strong", 500, 0.012, T).await;
    let Verdict::Over { exceeded, retry_after } = two.check_at(&c, "bob", "strong", T).await else {
        panic!("team spend cap reached")
    };
    assert_eq!(
        (exceeded.scope, exceeded.name.as_str(), exceeded.metric),
        (Scope::Group, "team", Metric::SpendDay)
    );
    assert_eq!(retry_after, 30);
    // Alice, same group, a minute whose tokens are untouched (same UTC day): the team's cap.
    let Verdict::Over { exceeded, .. } = two.check_at(&c, "alice", "cheap", T - 60).await else {
        panic!("the group's cap applies to every token of the group")
    };
    assert_eq!(exceeded.metric, Metric::SpendDay);
    assert_eq!(two.check_at(&c, "carol", "cheap", T).await, Verdict::Allow);
    // A new sidecar (a restart) still sees the spend.
    let restarted = budgets(&c);
    assert!(matches!(
        restarted.check_at(&c, "bob", "cheap", T).await,
        Verdict::Over { .. }
    ));
}

#[tokio::test]
async fn an_unreachable_store_fails_spend_caps_closed_and_rate_limits_open() {
    let port = free_port(); // nothing listens there
    let c = config(
        port,
        "  tokens:\n    alice: {requests_per_minute: 5}\n    bob: {usd_per_month: 1}\n",
    );
    let b = budgets(&c);
    let start = Instant::now();
    assert_eq!(b.check_at(&c, "alice", "cheap", T).await, Verdict::Allow);
    assert_eq!(b.check_at(&c, "bob", "cheap", T).await, Verdict::Unavailable);
    assert_eq!(
        b.check_at(&c, "carol", "cheap", T).await,
        Verdict::Allow,
        "no limit applies"
    );
    assert!(start.elapsed() < Duration::from_secs(3), "bounded by timeout_ms");

    let c = config(
        port,
        "  rate_limit_failure_mode: closed\n  spend_failure_mode: open\n  tokens:\n    alice: {requests_per_minute: 5}\n    bob: {usd_per_month: 1}\n",
    );
    let b = budgets(&c);
    assert_eq!(b.check_at(&c, "alice", "cheap", T).await, Verdict::Unavailable);
    assert_eq!(b.check_at(&c, "bob", "cheap", T).await, Verdict::Allow);
}

#[tokio::test]
async fn model_limits_apply_to_every_tenant_and_to_anonymous_requests() {
    let Some(r) = redis() else { return };
    let c = config(r.port, "  models:\n    strong: {requests_per_minute: 1}\n");
    let b = budgets(&c);
    assert_eq!(b.check_at(&c, "", "strong", T).await, Verdict::Allow);
    let Verdict::Over { exceeded, .. } = b.check_at(&c, "carol", "strong", T).await else {
        panic!("model limit")
    };
    assert_eq!((exceeded.scope, exceeded.name.as_str()), (Scope::Model, "strong"));
    assert_eq!(b.check_at(&c, "carol", "cheap", T).await, Verdict::Allow);
}

#[test]
fn keys_name_scope_counter_and_window() {
    let c = config(
        6379,
        "  tokens:\n    alice: {requests_per_minute: 1, usd_per_month: 2}\n  groups:\n    team: {tokens_per_minute: 5}\n",
    );
    let keys: Vec<String> = applicable(&c, "alice", "cheap", T).into_iter().map(|a| a.key).collect();
    assert_eq!(
        keys,
        [
            format!("llmsoup:budget:token:alice:req:m:{}", T / 60),
            "llmsoup:budget:token:alice:usd:mo:202612".to_string(),
            format!("llmsoup:budget:group:team:tok:m:{}", T / 60),
        ]
    );
    // Charges touch tokens and spend, never the request counter.
    let charged: Vec<(String, i64)> = charges(&c, "alice", "cheap", 42, 1.5, T)
        .into_iter()
        .map(|(k, by, _)| (k, by))
        .collect();
    assert_eq!(
        charged,
        [
            ("llmsoup:budget:token:alice:usd:mo:202612".to_string(), 1_500_000),
            (format!("llmsoup:budget:group:team:tok:m:{}", T / 60), 42),
        ]
    );
    assert!(applicable(&c, "", "cheap", T).is_empty());
}
