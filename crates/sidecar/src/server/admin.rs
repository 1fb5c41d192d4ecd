//! The admin HTTP endpoint: `/health`, `/ready`, `/metrics` (Prometheus text), `/stats` (requests,
//! tokens, spend and savings by model and decision), `/v1/backends` (per-model health and latency),
//! `/dashboard` and its feed `/v1/events` (see [`super::dashboard`]).
//!
//! When `auth.tokens` is set every path except the probes `/health` and `/ready` needs one of the
//! gateway's client tokens, sent as `Authorization: Bearer`, `x-api-key`, or HTTP Basic with the
//! token as the password (so a browser can open the dashboard: its 401 carries a
//! `WWW-Authenticate: Basic` challenge). Tokens are never read from a URL.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;

use super::{Shared, reply};

/// Probes, open even when tokens are required (orchestrators do not hold client tokens).
const OPEN_PATHS: [&str; 2] = ["/health", "/ready"];

/// Paths a browser opens directly: their 401 asks for HTTP Basic credentials, which the browser
/// then also sends on the page's same-origin `fetch` and `EventSource` calls.
const BROWSER_PATHS: [&str; 2] = ["/dashboard", "/v1/events"];

/// The password of an `Authorization: Basic` value (the user name is ignored).
fn basic_password(authorization: &[u8]) -> Option<Vec<u8>> {
    let v = authorization.trim_ascii();
    if v.len() <= 6 || !v[..6].eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(v[6..].trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some(decoded[colon + 1..].to_vec())
}

/// The 401 to send, if the request is not authorised.
fn rejection(shared: &Shared, path: &str, headers: &HeaderMap) -> Option<Response> {
    let engine = shared.engine.load();
    if OPEN_PATHS.contains(&path) || !engine.auth_enabled() {
        return None;
    }
    let get = |name: &str| headers.get(name).map(|v| v.as_bytes());
    let verdict = match get("authorization").and_then(basic_password) {
        Some(password) => shared.observer.authenticate(&engine, None, Some(password.as_slice())),
        None => shared
            .observer
            .authenticate(&engine, get("authorization"), get("x-api-key")),
    };
    let mut resp = reply(verdict.err()?.into());
    let challenge = if BROWSER_PATHS.contains(&path) {
        "Basic realm=\"llmsoup\", charset=\"UTF-8\""
    } else {
        // RFC 9110 wants a challenge on every 401; Bearer keeps API clients' 401s from opening
        // a browser's password dialog.
        "Bearer realm=\"llmsoup\""
    };
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    Some(resp)
}

/// Middleware: every admin route goes through [`rejection`] first.
async fn require_token(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    match rejection(&shared, request.uri().path(), request.headers()) {
        Some(r) => r,
        None => next.run(request).await,
    }
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(shared): State<Shared>) -> Response {
    // A blocking decision whose model signal cannot load would refuse every request it might
    // match: serving, but not doing what the config says, so not ready (a rollout stalls rather
    // than replacing working pods). Warnings (decisions that skip) keep it ready.
    let errors: Vec<String> = shared
        .engine
        .load()
        .model_problems()
        .iter()
        .filter(|p| p.is_error())
        .map(ToString::to_string)
        .collect();
    // Envoy not running what the sidecar routes by (a reload it could not be given): requests
    // to new models find no route, new tokens are refused, removed ones accepted.
    let envoy = shared.envoy.stale();
    if !errors.is_empty() || !envoy.is_empty() {
        let mut body = serde_json::json!({"status": "degraded", "errors": errors});
        if !envoy.is_empty() {
            body["envoy"] = serde_json::json!(envoy);
        }
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    "ready\n".into_response()
}

async fn prometheus(State(shared): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        shared.observer.render_metrics(),
    )
        .into_response()
}

async fn stats(State(shared): State<Shared>) -> Response {
    axum::Json(shared.observer.stats()).into_response()
}

async fn backends(State(shared): State<Shared>) -> Response {
    let observed = shared.observer.backends().snapshot();
    let engine = shared.engine.load();
    let config = engine.config();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let learned = shared.observer.learned();
    let mut feedback = learned.quality.snapshot(now, &config.routing.feedback);
    let models: serde_json::Map<String, serde_json::Value> = config
        .models
        .iter()
        .map(|m| {
            let mut v = match observed.get(&m.name) {
                Some(s) => serde_json::to_value(s).unwrap_or_default(),
                None => serde_json::json!({
                    "status": "healthy", "requests": 0, "in_flight": 0, "errors": 0, "ttft_ms": null, "tpot_ms": null
                }),
            };
            // Per decision: the feedback received and the quality `cost` selection reads now.
            let prior = m.quality.unwrap_or(0.0);
            let quality: serde_json::Map<String, serde_json::Value> = feedback
                .remove(&m.name)
                .unwrap_or_default()
                .into_iter()
                .map(|(decision, f)| {
                    let q = learned
                        .quality
                        .quality(&decision, &m.name, prior, now, &config.routing.feedback);
                    let mut e = serde_json::to_value(&f).unwrap_or_default();
                    e["quality"] = q.into();
                    (decision, e)
                })
                .collect();
            v["quality"] = m.quality.into();
            v["feedback"] = quality.into();
            (m.name.clone(), v)
        })
        .collect();
    let calibration = serde_json::to_value(learned.calibration.snapshot()).unwrap_or_default();
    axum::Json(serde_json::json!({"models": models, "calibration": calibration})).into_response()
}

#[derive(serde::Deserialize)]
struct Feedback {
    request_id: String,
    score: f64,
}

async fn feedback(State(shared): State<Shared>, body: axum::body::Bytes) -> Response {
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
    let engine = shared.engine.load();
    match shared.observer.feedback(&engine, &parsed.request_id, parsed.score) {
        Ok(r) => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({
                "status": "recorded",
                "decision": r.to.decision,
                "model": r.to.model,
                "quality": r.quality,
            })),
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
        // A fallback inside the layer: unknown paths answer 401 before 404 when auth is on.
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(shared.clone(), require_token))
        .with_state(shared)
}

async fn not_found() -> Response {
    reply(
        llmsoup_contract::ApiError {
            status: 404,
            message: "No such admin endpoint.".into(),
            kind: "invalid_request_error",
            param: None,
            code: Some("not_found"),
        }
        .into(),
    )
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use base64::engine::general_purpose::STANDARD;
    use llmsoup_config::load_str;
    use llmsoup_router::engine::Engine;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::observe::Observer;

    const TOKEN: &str = "admin-token";

    fn engine(auth: bool) -> Shared {
        let mut text = String::from(
            "providers:\n  - {name: p, base_url: 'http://127.0.0.1:1/v1'}\nmodels:\n  - {name: m, provider: p}\n",
        );
        if auth {
            text += &format!(
                "auth:\n  tokens:\n    - {{name: a, sha256: {}}}\n",
                llmsoup_contract::auth::hash_token(TOKEN)
            );
        }
        Shared::new(
            Engine::new(load_str(&text).unwrap()).unwrap(),
            Arc::new(Observer::default()),
        )
    }

    /// One request on a fresh connection; returns the status line and headers (lowercase names).
    async fn request(engine: &Shared, method: &str, path: &str, headers: &[(&str, String)]) -> (u16, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = app(engine.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\ncontent-length: 0\r\n");
        for (k, v) in headers {
            head += &format!("{k}: {v}\r\n");
        }
        head += "\r\n";
        conn.write_all(head.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        // `/v1/events` streams forever: the head is enough.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(500), conn.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, text)
    }

    const PROTECTED: [(&str, &str); 7] = [
        ("GET", "/metrics"),
        ("GET", "/stats"),
        ("GET", "/v1/backends"),
        ("POST", "/v1/feedback"),
        ("GET", "/dashboard"),
        ("GET", "/v1/events"),
        ("GET", "/nope"),
    ];

    #[tokio::test]
    async fn every_endpoint_but_the_probes_needs_a_token() {
        let e = engine(true);
        for path in ["/health", "/ready"] {
            assert_eq!(request(&e, "GET", path, &[]).await.0, 200, "{path}");
        }
        let basic = |pw: &str| format!("Basic {}", STANDARD.encode(format!("user:{pw}")));
        for (method, path) in PROTECTED {
            let (status, text) = request(&e, method, path, &[]).await;
            assert_eq!(status, 401, "{method} {path}: {text}");
            assert!(text.contains(r#""code":"invalid_api_key""#), "{text}");
            let browser = path == "/dashboard" || path == "/v1/events";
            assert_eq!(text.contains("www-authenticate: Basic"), browser, "{path}: {text}");
            assert_eq!(text.contains("www-authenticate: Bearer"), !browser, "{path}: {text}");
            for wrong in [
                ("authorization", "Bearer nope".to_string()),
                ("authorization", basic("nope")),
                ("x-api-key", "nope".to_string()),
                ("authorization", "Basic !!!".to_string()),
            ] {
                assert_eq!(
                    request(&e, method, path, std::slice::from_ref(&wrong)).await.0,
                    401,
                    "{path} {wrong:?}"
                );
            }
            let q = format!("{path}?access_token={TOKEN}");
            assert_eq!(request(&e, method, &q, &[]).await.0, 401, "{q}");
            for right in [
                ("authorization", format!("Bearer {TOKEN}")),
                ("authorization", basic(TOKEN)),
                ("x-api-key", TOKEN.to_string()),
            ] {
                let (status, text) = request(&e, method, path, std::slice::from_ref(&right)).await;
                // The feedback body is empty (400) and /nope does not exist (404): past auth.
                let want = match path {
                    "/v1/feedback" => 400,
                    "/nope" => 404,
                    _ => 200,
                };
                assert_eq!(status, want, "{method} {path} {right:?}: {text}");
            }
        }
    }

    #[tokio::test]
    async fn without_tokens_nothing_is_asked() {
        let e = engine(false);
        for (method, path) in PROTECTED {
            let (status, text) = request(&e, method, path, &[]).await;
            assert_ne!(status, 401, "{path}: {text}");
        }
    }

    #[test]
    fn basic_passwords() {
        assert_eq!(basic_password(b"Basic dTpwdw==").as_deref(), Some(b"pw".as_slice()));
        assert_eq!(basic_password(b"basic OnA6cQ==").as_deref(), Some(b"p:q".as_slice()));
        assert_eq!(basic_password(b"Basic cHc="), None, "no colon");
        assert_eq!(basic_password(b"Bearer dTpwdw=="), None);
        assert_eq!(basic_password(b"Basic"), None);
    }
}
