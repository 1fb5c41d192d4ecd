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

use super::{Shared, reply};

/// The 401 to send, if the request is not authorised.
fn rejection(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let get = |name: &str| headers.get(name).map(|v| v.as_bytes());
    shared
        .observer
        .authenticate(&shared.engine.load(), get("authorization"), get("x-api-key"))
        .err()
        .map(|e| reply(e.into()))
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(r) = rejection(&shared, &headers) {
        return r;
    }
    "ready\n".into_response()
}

async fn prometheus(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(r) = rejection(&shared, &headers) {
        return r;
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        shared.observer.render_metrics(),
    )
        .into_response()
}

async fn stats(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(r) = rejection(&shared, &headers) {
        return r;
    }
    axum::Json(shared.observer.stats()).into_response()
}

async fn backends(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(r) = rejection(&shared, &headers) {
        return r;
    }
    let observed = shared.observer.backends().snapshot();
    let engine = shared.engine.load();
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

async fn feedback(State(shared): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Some(r) = rejection(&shared, &headers) {
        return r;
    }
    let parsed: Feedback = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return reply(
                llmsoup_contract::ApiError::bad_request(
                    format!("Invalid feedback body: {e}."),
                    None,
                    "invalid_feedback",
                )
                .into(),
            );
        }
    };
    match shared.observer.feedback(&parsed.request_id, parsed.score) {
        Ok(()) => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({"status": "recorded"})),
        )
            .into_response(),
        Err(e) => reply(e.into()),
    }
}

/// The admin routes.
pub(super) fn app(shared: Shared) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(prometheus))
        .route("/stats", get(stats))
        .route("/v1/backends", get(backends))
        .route("/v1/feedback", axum::routing::post(feedback))
        .route("/dashboard", get(super::dashboard::page))
        .route("/v1/events", get(super::dashboard::events))
        .with_state(shared)
}

/// Serves the admin endpoint until the process stops.
pub async fn serve(addr: SocketAddr, shared: Shared) -> anyhow::Result<()> {
    let app = app(shared);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding admin listener on {addr}"))?;
    tracing::info!(%addr, "admin endpoint listening (/health, /ready, /metrics, /stats, /dashboard)");
    axum::serve(listener, app).await.context("admin server")
}
