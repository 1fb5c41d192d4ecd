//! Envoy's rate limit service (`envoy.service.ratelimit.v3.RateLimitService`), served on the
//! gRPC port behind the same token interceptor: Envoy's `ratelimit` filter calls it before each
//! provider call with the descriptors `envoy-config` renders on every model route (the model,
//! and the tenant the auth step derived from the client token). The verdict comes from
//! [`crate::budget::Budgets::check`]; a refusal carries the OpenAI-style body, `retry-after` and
//! `content-type` for Envoy's local reply.

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, DescriptorStatus};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use llmsoup_contract::ApiError;
use llmsoup_contract::budget::{BUDGET_HEADER, DOMAIN, MODEL_KEY, TENANT_KEY, UNAVAILABLE};
use tonic::{Request, Response, Status};

use super::Shared;
use crate::budget::{Metric, Verdict};

/// The RLS v3 service.
#[derive(Clone)]
pub struct RateLimitServer {
    shared: Shared,
}

impl RateLimitServer {
    /// Serves with the live engine's config and the observer's budgets.
    pub fn new(shared: Shared) -> Self {
        RateLimitServer { shared }
    }
}

fn header(key: &str, value: impl Into<String>) -> HeaderValue {
    HeaderValue {
        key: key.to_string(),
        value: value.into(),
        ..Default::default()
    }
}

/// A refused request: the client's error, `retry-after` seconds, the `x-llmsoup-budget` value
/// (`scope:name:limit` or `unavailable`) and the metric label (`scope:limit` or `unavailable`).
#[derive(Debug)]
pub struct Refusal {
    /// The body and status.
    pub error: ApiError,
    /// Seconds.
    pub retry_after: u64,
    /// Header value.
    pub tag: String,
    /// Metric label.
    pub label: String,
}

/// The refusal for a verdict (`None`: allowed).
pub fn refusal(verdict: &Verdict, unavailable_status: u16) -> Option<Refusal> {
    match verdict {
        Verdict::Allow => None,
        Verdict::Over { exceeded, retry_after } => {
            let what = format!("{} `{}`", exceeded.scope.as_str(), exceeded.name);
            let e = match exceeded.metric {
                Metric::Requests | Metric::Tokens => ApiError::rate_limited(format!(
                    "Rate limit reached for {what}: {} exceeded. Retry after {retry_after} s.",
                    exceeded.metric.as_str()
                )),
                Metric::SpendDay | Metric::SpendMonth => ApiError::budget_exhausted(format!(
                    "Spend cap reached for {what}: {} exhausted. Retry after {retry_after} s.",
                    exceeded.metric.as_str()
                )),
            };
            Some(Refusal {
                error: e,
                retry_after: *retry_after,
                tag: format!(
                    "{}:{}:{}",
                    exceeded.scope.as_str(),
                    exceeded.name,
                    exceeded.metric.as_str()
                ),
                label: format!("{}:{}", exceeded.scope.as_str(), exceeded.metric.as_str()),
            })
        }
        Verdict::Unavailable => Some(Refusal {
            error: ApiError::budget_unavailable(unavailable_status),
            retry_after: 1,
            tag: UNAVAILABLE.to_string(),
            label: UNAVAILABLE.to_string(),
        }),
    }
}

#[tonic::async_trait]
impl RateLimitService for RateLimitServer {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let req = request.into_inner();
        let n = req.descriptors.len();
        let ok = || RateLimitResponse {
            overall_code: Code::Ok as i32,
            statuses: vec![
                DescriptorStatus {
                    code: Code::Ok as i32,
                    ..Default::default()
                };
                n
            ],
            ..Default::default()
        };
        if req.domain != DOMAIN {
            return Ok(Response::new(ok()));
        }
        // One descriptor per request (see `envoy-config`): the model, and the tenant when the
        // request was authenticated.
        let (mut tenant, mut model) = ("", "");
        for d in &req.descriptors {
            for e in &d.entries {
                match e.key.as_str() {
                    TENANT_KEY => tenant = &e.value,
                    MODEL_KEY => model = &e.value,
                    _ => {}
                }
            }
        }
        let engine = self.shared.engine.load_full();
        let config = engine.config();
        let observer = &self.shared.observer;
        let verdict = observer.budgets().check(config, tenant, model).await;
        let Some(r) = refusal(&verdict, config.budgets.unavailable_status) else {
            return Ok(Response::new(ok()));
        };
        observer.throttled(config, tenant, model, r.label);
        if verdict == Verdict::Unavailable {
            // Envoy answers a service error with `status_on_error` (`budgets.unavailable_status`;
            // its `failure_mode_deny` is on whenever a limit fails closed) and the rendered
            // local-reply mapper's JSON body; an over-limit answer could only be a 429.
            return Err(Status::unavailable("budget store unavailable"));
        }
        Ok(Response::new(RateLimitResponse {
            overall_code: Code::OverLimit as i32,
            statuses: vec![
                DescriptorStatus {
                    code: Code::OverLimit as i32,
                    ..Default::default()
                };
                n
            ],
            response_headers_to_add: vec![
                header("content-type", "application/json"),
                header("retry-after", r.retry_after.to_string()),
                header(BUDGET_HEADER, r.tag),
            ],
            raw_body: r.error.to_json(),
            ..Default::default()
        }))
    }
}
