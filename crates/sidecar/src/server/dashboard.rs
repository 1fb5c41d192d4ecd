//! The live dashboard on the admin endpoint: `GET /dashboard` (one self-contained page) and
//! `GET /v1/events`, the decision feed as server-sent events.
//!
//! Both sit behind the admin endpoint's token check when `auth.tokens` is set (see
//! [`super::admin`]): a browser opens the page with HTTP Basic (any user name, a client token as
//! the password) after the 401's `WWW-Authenticate: Basic` challenge, then sends the same
//! credentials on the page's own `fetch("/stats")` and `EventSource("/v1/events")`, which are
//! same-origin. No token ever travels in a URL (URLs end up in logs and browser history).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;

use super::{Shared, reply};
use crate::observe::feed::{self, Received};

const PAGE: &str = include_str!("dashboard.html");

/// Comment lines on an idle feed keep proxies from closing it and reveal clients that left.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /dashboard`.
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            // The page talks only to this origin and loads nothing from elsewhere.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
        ],
        PAGE,
    )
        .into_response()
}

/// `GET /v1/events`: one `decision` event per finished request, `lagged` when this subscriber
/// fell behind and skipped some, and a first `hello` so clients know the feed is live.
pub async fn events(State(shared): State<Shared>) -> Response {
    let feed = shared.observer.feed();
    let Some(subscription) = feed.subscribe() else {
        return reply(
            llmsoup_contract::ApiError::unavailable(format!(
                "Too many open event streams (at most {}); close a dashboard and retry.",
                feed::MAX_SUBSCRIBERS
            ))
            .into(),
        );
    };
    let mut resp = Sse::new(stream(subscription, feed.subscribers()))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    resp
}

fn stream(sub: feed::Subscription, subscribers: usize) -> impl Stream<Item = Result<Event, Infallible>> {
    let hello = Event::default()
        .event("hello")
        .data(format!("{{\"subscribers\":{subscribers}}}"));
    // The subscription lives in the stream's state: a client that goes away drops it.
    futures::stream::unfold((Some(hello), sub), |(first, mut sub)| async move {
        if let Some(hello) = first {
            return Some((Ok(hello), (None, sub)));
        }
        let event = match sub.recv().await? {
            Received::Event(json) => Event::default().event("decision").data(&*json),
            Received::Lagged(n) => Event::default().event("lagged").data(format!("{{\"skipped\":{n}}}")),
        };
        Some((Ok(event), (None, sub)))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use llmsoup_contract::v1::UsageReport;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    use super::*;
    use crate::observe::Observer;
    use llmsoup_config::load_str_with_env;
    use llmsoup_contract::outcome::Outcome;
    use llmsoup_router::engine::Request;

    const TOKEN: &str = "dash-token";

    fn engine() -> Shared {
        let text = format!(
            "
providers:
  - {{name: p, base_url: 'http://127.0.0.1:1/v1'}}
models:
  - {{name: cheap, provider: p, pricing: {{prompt_per_1m: 1.0, completion_per_1m: 2.0}}}}
  - {{name: strong, provider: p, pricing: {{prompt_per_1m: 10.0, completion_per_1m: 30.0}}}}
signals:
  keywords:
    - {{name: code, keywords: [python]}}
decisions:
  - name: coding
    rules: {{type: keyword, name: code}}
    modelRefs: [{{model: strong}}]
routing:
  default_model: cheap
auth:
  tokens:
    - {{name: admin, sha256: {}}}
",
            llmsoup_contract::auth::hash_token(TOKEN)
        );
        let config = load_str_with_env(&text, &|_| None).unwrap();
        let observer = Arc::new(Observer::default());
        Shared::new(observer.engine(config).unwrap(), observer)
    }

    async fn admin(engine: Shared) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, super::super::admin::app(engine)).await });
        addr
    }

    /// Sends a GET with an optional `authorization` value; returns the connection, for reading
    /// the (streamed) response.
    async fn get(addr: std::net::SocketAddr, target: &str, auth: Option<&str>) -> TcpStream {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        let auth = auth.map(|v| format!("authorization: {v}\r\n")).unwrap_or_default();
        conn.write_all(format!("GET {target} HTTP/1.1\r\nhost: admin\r\n{auth}\r\n").as_bytes())
            .await
            .unwrap();
        conn
    }

    /// Reads until `needle` has arrived; returns everything read.
    async fn read_until(conn: &mut TcpStream, needle: &str) -> String {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            while !String::from_utf8_lossy(&seen).contains(needle) {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "connection closed: {}", String::from_utf8_lossy(&seen));
                seen.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        let text = String::from_utf8_lossy(&seen).into_owned();
        assert!(found.is_ok(), "no {needle:?} in {text}");
        text
    }

    fn body(prompt: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": prompt}]}))
            .unwrap()
    }

    #[tokio::test]
    async fn a_routed_request_arrives_on_the_event_stream() {
        let engine = engine();
        let addr = admin(engine.clone()).await;
        let mut conn = get(addr, "/v1/events", Some(&format!("Bearer {TOKEN}"))).await;
        let head = read_until(&mut conn, "event: hello").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("content-type: text/event-stream"), "{head}");

        let e = engine.engine.load_full();
        let body = body("a python question");
        let request = Request {
            path: "",
            body: &body,
            request_id: "sse-routed",
            client: "",
        };
        let (outcome, trace) = e.handle(request).await;
        engine.observer.on_route("sse-routed", &outcome, &trace);
        let Outcome::Forward(f) = outcome else {
            panic!("not forwarded");
        };
        assert_eq!(f.summary.model, "strong");
        engine.observer.report(
            &e,
            &UsageReport {
                request_id: "sse-routed".into(),
                model: f.summary.model.clone(),
                decision: f.summary.decision.clone().unwrap_or_default(),
                status: 200,
                prompt_tokens: 1000,
                completion_tokens: 100,
                usage_seen: true,
                duration_us: 5000,
                ..Default::default()
            },
        );
        let text = read_until(&mut conn, "\"request_id\":\"sse-routed\"").await;
        let line = text
            .lines()
            .find(|l| l.starts_with("data: ") && l.contains("sse-routed"))
            .unwrap();
        let event: feed::Event = serde_json::from_str(&line["data: ".len()..]).unwrap();
        assert_eq!(event.outcome, "routed");
        assert_eq!(event.decision.as_deref(), Some("coding"));
        assert_eq!(event.signals, "keyword:code");
        assert!(event.route_ms.is_some_and(|ms| ms >= 0.0));
        // strong: 1000 × 10 $/1M + 100 × 30 $/1M.
        assert!((event.cost_usd - 0.013).abs() < 1e-12, "{event:?}");
        assert!(!text.contains("a python question"), "the prompt never leaves: {text}");
        assert!(text.contains("event: decision"), "{text}");
    }

    #[tokio::test]
    async fn page_and_feed_need_the_token_in_a_header_never_the_url() {
        let engine = engine();
        let addr = admin(engine).await;
        let basic = format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("anyone:{TOKEN}"))
        );
        for path in ["/dashboard", "/v1/events"] {
            let text = read_until(&mut get(addr, path, None).await, "\r\n\r\n").await;
            assert!(text.starts_with("HTTP/1.1 401"), "{text}");
            // The browser's cue to ask for a user name and password.
            assert!(text.contains("www-authenticate: Basic realm=\"llmsoup\""), "{text}");
        }
        // A token in the URL is no credential (URLs end up in logs).
        let target = format!("/v1/events?access_token={TOKEN}");
        let text = read_until(&mut get(addr, &target, None).await, "\r\n\r\n").await;
        assert!(text.starts_with("HTTP/1.1 401"), "{text}");
        let wrong = format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "anyone:nope")
        );
        let text = read_until(&mut get(addr, "/dashboard", Some(&wrong)).await, "\r\n\r\n").await;
        assert!(text.starts_with("HTTP/1.1 401"), "{text}");
        // HTTP Basic (what a browser sends) opens the page and the feed.
        let text = read_until(&mut get(addr, "/dashboard", Some(&basic)).await, "</html>").await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("content-security-policy: default-src 'none'"), "{text}");
        read_until(&mut get(addr, "/v1/events", Some(&basic)).await, "event: hello").await;
        read_until(
            &mut get(addr, "/v1/events", Some(&format!("Bearer {TOKEN}"))).await,
            "event: hello",
        )
        .await;
    }
}
