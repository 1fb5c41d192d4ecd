//! The admin HTTP endpoint: `/health`, `/ready`, `/metrics` (Prometheus text), `/stats` (requests,
//! tokens, spend and savings by model and decision), `/v1/backends` (per-model health and latency),
//! `/dashboard` and its feed `/v1/events` (see [`super::dashboard`]). Protected by the same client
//! tokens as the gateway when `auth.tokens` is set.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::EngineHandle;
use crate::engine::Reply;
use crate::metrics;

/// An engine reply as an HTTP response.
pub(super) fn reply(r: Reply) -> Response {
    let mut resp = (
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        r.body,
    )
        .into_response();
    for (k, v) in r.headers {
        if let Ok(v) = v.parse() {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

/// The 401 to send, if the request is not authorised.
fn rejection(engine: &EngineHandle, headers: &HeaderMap) -> Option<Response> {
    let get = |name: &str| headers.get(name).map(|v| v.as_bytes());
    engine
        .load()
        .authenticate(get("authorization"), get("x-api-key"))
        .err()
        .map(|e| reply(e.into()))
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(engine): State<EngineHandle>, headers: HeaderMap) -> Response {
    if let Some(r) = rejection(&engine, &headers) {
        return r;
    }
    // A blocking decision whose model signal cannot load would refuse every request it might
    // match: serving, but not doing what the config says, so not ready (a rollout stalls rather
    // than replacing working pods). Warnings (decisions that skip) keep it ready.
    let errors: Vec<String> = engine
        .load()
        .model_problems()
        .iter()
        .filter(|p| p.is_error())
        .map(ToString::to_string)
        .collect();
    if !errors.is_empty() {
        let body = serde_json::json!({"status": "degraded", "errors": errors});
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    "ready\n".into_response()
}

async fn prometheus(State(engine): State<EngineHandle>, headers: HeaderMap) -> Response {
    if let Some(r) = rejection(&engine, &headers) {
        return r;
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        metrics::render(),
    )
        .into_response()
}

async fn stats(State(engine): State<EngineHandle>, headers: HeaderMap) -> Response {
    if let Some(r) = rejection(&engine, &headers) {
        return r;
    }
    axum::Json(crate::accounting::stats()).into_response()
}

async fn backends(State(engine): State<EngineHandle>, headers: HeaderMap) -> Response {
    if let Some(r) = rejection(&engine, &headers) {
        return r;
    }
    let observed = crate::selection::backends::snapshot();
    let engine = engine.load();
    let models: serde_json::Map<String, serde_json::Value> = engine
        .config()
        .models
        .iter()
        .map(|m| {
            let v = match observed.get(&m.name) {
                Some(s) => serde_json::to_value(s).unwrap_or_default(),
                None => serde_json::json!({
                    "status": "healthy", "requests": 0, "in_flight": 0, "errors": 0, "ttft_ms": null, "tpot_ms": null
                }),
            };
            (m.name.clone(), v)
        })
        .collect();
    axum::Json(serde_json::json!({"models": models})).into_response()
}

#[derive(serde::Deserialize)]
struct Feedback {
    request_id: String,
    score: f64,
}

async fn feedback(State(engine): State<EngineHandle>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Some(r) = rejection(&engine, &headers) {
        return r;
    }
    let parsed: Feedback = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return reply(
                crate::protocol::ApiError::bad_request(
                    format!("Invalid feedback body: {e}."),
                    None,
                    "invalid_feedback",
                )
                .into(),
            );
        }
    };
    match engine.load().feedback(&parsed.request_id, parsed.score) {
        Ok(()) => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({"status": "recorded"})),
        )
            .into_response(),
        Err(e) => reply(e.into()),
    }
}

/// The admin routes.
pub(super) fn app(engine: EngineHandle) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(prometheus))
        .route("/stats", get(stats))
        .route("/v1/backends", get(backends))
        .route("/v1/feedback", axum::routing::post(feedback))
        .route("/dashboard", get(super::dashboard::page))
        .route("/v1/events", get(super::dashboard::events))
        .with_state(engine)
}

/// Serves the admin endpoint until the process stops.
pub async fn serve(addr: SocketAddr, engine: EngineHandle) -> anyhow::Result<()> {
    let app = app(engine);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding admin listener on {addr}"))?;
    tracing::info!(%addr, "admin endpoint listening (/health, /ready, /metrics, /stats, /dashboard)");
    axum::serve(listener, app).await.context("admin server")
}
