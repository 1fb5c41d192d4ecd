//! `llmsoup mock-upstream`: a fake provider for the demo and the end-to-end tests. It answers
//! OpenAI chat completions, Anthropic Messages on `.../messages` ([`anthropic`]) and OpenAI
//! Responses on `.../responses` ([`responses`]), as JSON or SSE (with usage), reports what it received (model, path, headers, body: in the response, and
//! the last 64 requests at `GET /mock/received`, failed ones included) and can be told by request headers to misbehave:
//!
//! | header | effect |
//! |---|---|
//! | `x-mock-status: 503` | reply with that status and an OpenAI-style error |
//! | `x-mock-delay-ms: 200` | wait before the response headers |
//! | `x-mock-reset: 1` | drop the connection without answering |
//! | `x-mock-chunks: 8` / `x-mock-chunk-delay-ms: 50` | SSE shape and pacing |
//! | `x-mock-usage: 12,34` | prompt and completion tokens to report |
//! | `x-mock-cached-tokens: 8` | cached prompt tokens to report (chat, Responses) |
//! | `x-expect-model: m` | answer 417 unless the body's `model` is `m` |
//! | `x-mock-delay-for: m=200` | delay only requests whose body `model` is `m` |
//! | `x-mock-fail-for: m=503` | fail only requests whose body `model` is `m` |
//! | `x-mock-retry-after: 2` | send this `retry-after` with a failure from `x-mock-fail-for` |
//! | `x-mock-tool-call: {"city":"Paris"}` | call the request's first tool with these arguments |
//! | `x-mock-reset-for: m,n` | drop the connection only for requests whose body `model` is listed |
//!
//! Listeners given with [`Tls`] speak HTTPS (HTTP/1.1 and HTTP/2 by ALPN) with the certificate
//! they are given, so tests can check how the gateway validates a provider's certificate; the
//! echo says `"tls": true` for requests that arrived over them.

mod anthropic;
mod responses;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

type Body = BoxBody<Bytes, Infallible>;

const MAX_BODY: usize = 64 * 1024 * 1024;
/// Requests kept for `GET /mock/received`.
const KEPT: usize = 64;

struct Shared {
    name: String,
    counter: AtomicU64,
    /// What the last requests looked like, oldest first.
    received: Mutex<VecDeque<Value>>,
}

/// What a dialect needs to answer one request.
struct Reply {
    /// The request number (ids are unique per process).
    n: u64,
    /// The parsed request body.
    request: Value,
    /// The body's `model`.
    model: String,
    /// What was received, echoed back.
    echo: Value,
    /// The answer's text.
    content: String,
    prompt_tokens: u64,
    completion_tokens: u64,
    /// `x-mock-cached-tokens`: cached prompt tokens (0 unless told).
    cached_tokens: u64,
    /// SSE: content chunks and the pause between events.
    chunks: u64,
    delay: Duration,
    /// `x-mock-tool-call`: arguments for a call to the request's first tool.
    tool_call: Option<String>,
}

/// The service was told to drop the connection.
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset on request (x-mock-reset)")
    }
}

impl std::error::Error for Reset {}

/// HTTPS listeners and the certificate they present.
#[derive(Debug, Clone)]
pub struct Tls {
    /// Addresses to serve HTTPS on.
    pub listen: Vec<SocketAddr>,
    /// The certificate chain, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

fn acceptor(tls: &Tls) -> anyhow::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the certificate {}", tls.cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(&tls.key).with_context(|| format!("reading the key {}", tls.key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and key do not fit together")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves on every address (plain HTTP on `listen`, HTTPS on `tls`) until the process is stopped.
pub async fn run(listen: &[SocketAddr], tls: Option<&Tls>, name: &str) -> anyhow::Result<()> {
    let shared = Arc::new(Shared {
        name: name.to_string(),
        counter: AtomicU64::new(0),
        received: Mutex::new(VecDeque::new()),
    });
    let mut tasks = Vec::new();
    let secure = match tls {
        Some(t) => {
            let a = acceptor(t)?;
            t.listen.iter().map(|addr| (*addr, Some(a.clone()))).collect()
        }
        None => Vec::new(),
    };
    for (addr, acceptor) in listen.iter().map(|a| (*a, None)).chain(secure) {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(%addr, name, tls = acceptor.is_some(), "mock upstream listening");
        tasks.push(tokio::spawn(accept_loop(listener, acceptor, shared.clone())));
    }
    tokio::select! {
        _ = futures::future::join_all(tasks) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve(stream, shared, port, false).await,
                // A client that refuses the certificate ends the handshake: nothing to serve.
                Some(a) => match a.accept(stream).await {
                    Ok(s) => serve(s, shared, port, true).await,
                    Err(e) => tracing::info!(port, error = %e, "mock upstream: TLS handshake failed"),
                },
            }
        });
    }
}

async fn serve<I>(io: I, shared: Arc<Shared>, port: u16, tls: bool)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| handle(req, shared.clone(), port, tls));
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service)
        .await;
}

fn full(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("valid response")
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    let body = json!({"error": {"message": message, "type": "mock_error", "param": null, "code": status.as_u16().to_string()}});
    full(status, "application/json", body.to_string().into_bytes())
}

fn header<'a>(req: &'a hyper::http::request::Parts, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

fn num(req: &hyper::http::request::Parts, name: &str) -> Option<u64> {
    header(req, name).and_then(|v| v.trim().parse().ok())
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>, port: u16, tls: bool) -> Result<Response<Body>, Reset> {
    let (parts, body) = req.into_parts();
    // One line per request that reached a provider, so tests can tell that one did not.
    tracing::info!(
        port,
        method = %parts.method,
        uri = %parts.uri,
        request_id = header(&parts, "x-request-id").unwrap_or("-"),
        "mock received"
    );
    if header(&parts, "x-mock-reset").is_some_and(|v| v != "0") {
        return Err(Reset);
    }
    if let Some(ms) = num(&parts, "x-mock-delay-ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let path = parts.uri.path().to_string();
    // Errors in the dialect of the endpoint asked.
    let messages_api = path.ends_with("/messages");
    let error = |status: StatusCode, message: &str| {
        if messages_api {
            anthropic::error(status, message)
        } else {
            error(status, message)
        }
    };
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(error(StatusCode::PAYLOAD_TOO_LARGE, "body too large or unreadable")),
    };
    if let Some(status) = num(&parts, "x-mock-status").and_then(|s| StatusCode::from_u16(s as u16).ok()) {
        return Ok(error(
            status,
            &format!("mock upstream told to fail with {}", status.as_u16()),
        ));
    }
    if parts.method == hyper::Method::GET {
        return Ok(match path.as_str() {
            "/health" | "/healthz" => full(StatusCode::OK, "text/plain", b"ok".to_vec()),
            "/mock/received" => {
                let received: Vec<Value> = shared
                    .received
                    .lock()
                    .map(|r| r.iter().cloned().collect())
                    .unwrap_or_default();
                full(
                    StatusCode::OK,
                    "application/json",
                    Value::Array(received).to_string().into_bytes(),
                )
            }
            p if p.ends_with("/models") => full(
                StatusCode::OK,
                "application/json",
                json!({"object": "list", "data": [{"id": "mock", "object": "model", "owned_by": "mock"}]})
                    .to_string()
                    .into_bytes(),
            ),
            _ => error(StatusCode::NOT_FOUND, "not found"),
        });
    }
    let request: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                &format!("mock upstream got invalid JSON: {e}"),
            ));
        }
    };
    let model = request.get("model").and_then(Value::as_str).unwrap_or("").to_string();
    // Every request that got this far is kept, the ones told to fail too: a failed attempt is
    // something the provider received.
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    let echo = json!({
        "upstream": shared.name,
        "port": port,
        "tls": tls,
        "method": parts.method.as_str(),
        "path": path,
        "headers": headers,
        "body": request,
    });
    if let Ok(mut r) = shared.received.lock() {
        if r.len() == KEPT {
            r.pop_front();
        }
        r.push_back(echo.clone());
    }
    if let Some(expected) = header(&parts, "x-expect-model")
        && expected != model
    {
        return Ok(error(
            StatusCode::EXPECTATION_FAILED,
            &format!("expected model `{expected}`, received `{model}`"),
        ));
    }
    // Per-model misbehaviour, so one header on every request makes one upstream model slow or
    // broken while the others stay healthy.
    let for_model = |name: &str| -> Option<u64> {
        header(&parts, name)?.split(',').find_map(|kv| {
            let (m, v) = kv.split_once('=')?;
            (m.trim() == model).then(|| v.trim().parse().ok()).flatten()
        })
    };
    if header(&parts, "x-mock-reset-for").is_some_and(|v| v.split(',').any(|m| m.trim() == model)) {
        return Err(Reset);
    }
    if let Some(ms) = for_model("x-mock-delay-for") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(status) = for_model("x-mock-fail-for").and_then(|s| StatusCode::from_u16(s as u16).ok()) {
        let mut resp = error(
            status,
            &format!("mock upstream told to fail {model} with {}", status.as_u16()),
        );
        if let Some(v) = header(&parts, "x-mock-retry-after").and_then(|v| hyper::header::HeaderValue::from_str(v).ok())
        {
            resp.headers_mut().insert(hyper::header::RETRY_AFTER, v);
        }
        return Ok(resp);
    }
    let n = shared.counter.fetch_add(1, Ordering::Relaxed);
    let id = format!("chatcmpl-mock-{n}");
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let content = format!("mock reply from {model}");
    let (prompt_tokens, completion_tokens) = header(&parts, "x-mock-usage")
        .and_then(|v| {
            let (p, c) = v.split_once(',')?;
            Some((p.trim().parse().ok()?, c.trim().parse().ok()?))
        })
        .unwrap_or(((bytes.len() as u64).div_ceil(4), 8u64));
    let cached_tokens = num(&parts, "x-mock-cached-tokens");
    let mut usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens});
    if let Some(cached) = cached_tokens {
        usage["prompt_tokens_details"] = json!({"cached_tokens": cached});
    }
    let cached_tokens = cached_tokens.unwrap_or(0);
    let chunks = num(&parts, "x-mock-chunks").unwrap_or(4).clamp(1, 10_000);
    let delay = Duration::from_millis(num(&parts, "x-mock-chunk-delay-ms").unwrap_or(0));
    let tool_call = header(&parts, "x-mock-tool-call").map(str::to_string);
    if messages_api || path.ends_with("/responses") {
        let reply = Reply {
            n,
            request,
            model: model.clone(),
            echo,
            content,
            prompt_tokens,
            completion_tokens,
            cached_tokens,
            chunks,
            delay,
            tool_call,
        };
        let mut resp = if messages_api {
            anthropic::respond(reply)
        } else {
            responses::respond(reply, created)
        };
        add_mock_headers(&mut resp, &shared.name, &model);
        return Ok(resp);
    }
    // A call to the request's first tool, when asked for.
    let tool = tool_call.and_then(|args| {
        let name = request.pointer("/tools/0/function/name")?.as_str()?.to_string();
        Some((format!("call_mock_{n}"), name, args))
    });
    let finish = if tool.is_some() { "tool_calls" } else { "stop" };

    let stream = request.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if !stream {
        let mut message = json!({"role": "assistant", "content": content});
        if let Some((id, name, args)) = &tool {
            message["tool_calls"] =
                json!([{"id": id, "type": "function", "function": {"name": name, "arguments": args}}]);
        }
        let body = json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
            "mock": echo,
        });
        let mut resp = full(StatusCode::OK, "application/json", body.to_string().into_bytes());
        add_mock_headers(&mut resp, &shared.name, &model);
        return Ok(resp);
    }

    let include_usage = request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    tokio::spawn(async move {
        let chunk = |delta: Value, finish: Value| {
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let mut events = vec![{
            let mut first = chunk(json!({"role": "assistant", "content": ""}), Value::Null);
            first["mock"] = echo;
            first
        }];
        for i in 0..chunks {
            events.push(chunk(json!({"content": format!("tok{i} ")}), Value::Null));
        }
        if let Some((call_id, name, args)) = &tool {
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
                Value::Null,
            ));
            // Arguments arrive in pieces, cut mid-value.
            let cut = (0..=args.len() / 2)
                .rev()
                .find(|&i| args.is_char_boundary(i))
                .unwrap_or(0);
            for part in [&args[..cut], &args[cut..]] {
                events.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}),
                    Value::Null,
                ));
            }
        }
        events.push(chunk(json!({}), json!(finish)));
        if include_usage {
            events.push(json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [], "usage": usage}));
        }
        for (i, e) in events.into_iter().enumerate() {
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if tx
                .send(Ok(Frame::data(Bytes::from(format!("data: {e}\n\n")))))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n")))).await;
    });
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed();
    let mut resp = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .expect("valid response");
    add_mock_headers(&mut resp, &shared.name, &resp_model(&request).to_string());
    Ok(resp)
}

/// An SSE response of named events (`event:` name, `data:` JSON, the Anthropic and Responses
/// dialects' framing), sent `delay` apart.
fn named_events(events: Vec<(&'static str, Value)>, delay: Duration) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    tokio::spawn(async move {
        for (i, (name, data)) in events.into_iter().enumerate() {
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let frame = Frame::data(Bytes::from(format!("event: {name}\ndata: {data}\n\n")));
            if tx.send(Ok(frame)).await.is_err() {
                return;
            }
        }
    });
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed();
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .expect("valid response")
}

fn resp_model(request: &Value) -> String {
    request.get("model").and_then(Value::as_str).unwrap_or("").to_string()
}

fn add_mock_headers(resp: &mut Response<Body>, name: &str, model: &str) {
    let h = resp.headers_mut();
    if let Ok(v) = name.parse() {
        h.insert("x-mock-upstream", v);
    }
    if let Ok(v) = model.parse() {
        h.insert("x-mock-received-model", v);
    }
}
