//! Envoy's `ExternalProcessor` service: one bidirectional stream per HTTP request.
//!
//! Request headers are checked (auth, reserved headers stripped); the buffered request body goes
//! through the [`Engine`]; response headers get the `x-llmsoup-*` summary.
//!
//! Response bodies sent on the routing stream (`response_body_mode: BUFFERED`, the default) are
//! accounted there, SSE switched to STREAMED so tokens are not held back until the end (each chunk
//! still waits for our answer). With `gateway.async_response_accounting` they arrive on a second
//! stream instead, from the observability-mode filter [`llmsoup_envoy::ACCOUNTING_FILTER`]: Envoy
//! sends response headers and chunks there without waiting for answers, and the routing stream
//! hands the request's facts over as dynamic metadata.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::config::core::v3::{
    HeaderMap, HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::{ProcessingMode, processing_mode};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, HttpBody, HttpHeaders,
    ImmediateResponse, ProcessingRequest, ProcessingResponse, TrailersResponse, body_mutation,
    external_processor_server::ExternalProcessor, processing_request::Request as Phase,
    processing_response::Response as Reply,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use futures::Stream;
use llmsoup_contract::budget::TENANT_HEADER;
use llmsoup_contract::fallback::{ATTEMPTS_HEADER, CHAIN_HEADER};
use llmsoup_contract::headers::{self as names, CONTENT_LENGTH, METADATA_NAMESPACE};
use llmsoup_contract::outcome::{self, Outcome, Summary, Translation};
use llmsoup_contract::usage::{ResponseTracker, is_sse};
use llmsoup_router::engine::{self, Engine};
use llmsoup_router::plugins::cache::Key;
use llmsoup_translate::ResponseTranslator;
use tonic::{Request, Response, Status, Streaming};

use super::Shared;
use crate::observe::Observer;

/// The ext_proc gRPC service.
#[derive(Clone)]
pub struct ExtProcService {
    shared: Shared,
}

impl ExtProcService {
    /// Serves with the live engine (reloads take effect on new streams), publishing to the
    /// observer.
    pub fn new(shared: Shared) -> Self {
        ExtProcService { shared }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for ExtProcService {
    type ProcessStream = ResponseStream;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let inbound = request.into_inner();
        // One snapshot per HTTP request, so a reload never changes a request mid-flight. The
        // phases are answered in order on this stream; no task or channel per request.
        let engine = self.shared.engine.load_full();
        let state = StreamState::new(engine.clone(), self.shared.observer.clone());
        let responses = futures::stream::unfold(
            (inbound, state, engine),
            |(mut inbound, mut state, engine)| async move {
                loop {
                    match inbound.message().await {
                        Ok(Some(msg)) => {
                            if let Some(response) = state.handle(&engine, msg).await {
                                return Some((Ok(response), (inbound, state, engine)));
                            }
                            if state.observed_end {
                                // Envoy would otherwise hold the stream open until its deferred
                                // close timer (5 s) fires.
                                return None;
                            }
                        }
                        Ok(None) => return None,
                        Err(status) => {
                            tracing::debug!(%status, "ext_proc stream ended with an error");
                            return None;
                        }
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(responses)))
    }
}

/// What one HTTP request's stream remembers between phases.
struct StreamState {
    engine: Arc<Engine>,
    observer: Arc<Observer>,
    start: Option<Instant>,
    method: String,
    path: String,
    request_id: String,
    /// The authenticated client token's name (empty with auth off): budgets, per-tenant totals.
    tenant: String,
    body: Vec<u8>,
    summary: Option<Summary>,
    /// This request leads its cache key: its answer is captured and handed to the cache.
    cache_ticket: Option<Key>,
    response: ResponseTracker,
    /// How the response must be rewritten for the client (protocol translation, stream usage).
    translation: Translation,
    /// The rewrite in progress, once the response headers said what the body is.
    translator: Option<ResponseTranslator>,
    /// Wall-clock start, handed to the accounting stream (possibly another sidecar replica).
    start_unix_us: u64,
    /// Whether Envoy sends response bodies on this stream (its `protocol_config`).
    response_bodies_here: bool,
    /// Whether Envoy streams the request body in chunks (its `protocol_config` says STREAMED or
    /// FULL_DUPLEX_STREAMED). Otherwise a body message is the whole body, even when it does not
    /// say `end_of_stream` (HTTP/2 trailers follow it) — it must be routed then, never let through.
    request_body_streamed: bool,
    /// The request body went through the engine (routed or answered).
    body_routed: bool,
    /// An observability-mode stream saw the end of the response.
    observed_end: bool,
    /// The fallback chain the request was routed with (`x-llmsoup-chain`), if any.
    chain: Option<String>,
}

fn header_bytes<'a>(headers: &'a Option<HeaderMap>, name: &str) -> Option<&'a [u8]> {
    headers
        .as_ref()?
        .headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))
        .map(header_value)
}

/// Envoy sends values in `raw_value`; older Envoys used `value`.
fn header_value(h: &HeaderValue) -> &[u8] {
    if h.raw_value.is_empty() {
        h.value.as_bytes()
    } else {
        &h.raw_value
    }
}

fn set_header(key: &str, value: impl Into<Vec<u8>>) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            raw_value: value.into(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

fn append_header(key: &str, value: impl Into<Vec<u8>>) -> HeaderValueOption {
    HeaderValueOption {
        append_action: HeaderAppendAction::AppendIfExistsOrAdd as i32,
        ..set_header(key, value)
    }
}

fn immediate(reply: outcome::Reply, details: &str) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(Reply::ImmediateResponse(ImmediateResponse {
            status: Some(HttpStatus {
                code: i32::from(reply.status),
            }),
            headers: Some(HeaderMutation {
                set_headers: reply.headers.iter().map(|(k, v)| set_header(k, v.as_bytes())).collect(),
                ..Default::default()
            }),
            body: reply.body,
            details: details.to_string(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn continue_headers(mutation: Option<HeaderMutation>) -> CommonResponse {
    CommonResponse {
        header_mutation: mutation,
        ..Default::default()
    }
}

impl StreamState {
    fn new(engine: Arc<Engine>, observer: Arc<Observer>) -> Self {
        StreamState {
            engine,
            observer,
            start: None,
            method: String::new(),
            path: String::new(),
            request_id: String::new(),
            tenant: String::new(),
            body: Vec::new(),
            summary: None,
            cache_ticket: None,
            response: ResponseTracker::default(),
            translation: Translation::None,
            translator: None,
            start_unix_us: 0,
            // Envoys that do not say are assumed to send them, as before observability mode.
            response_bodies_here: true,
            // We render BUFFERED; an Envoy that does not say is taken at that.
            request_body_streamed: false,
            body_routed: false,
            observed_end: false,
            chain: None,
        }
    }

    async fn handle(&mut self, engine: &Arc<Engine>, msg: ProcessingRequest) -> Option<ProcessingResponse> {
        if let Some(pc) = &msg.protocol_config {
            self.response_bodies_here = pc.response_body_mode != processing_mode::BodySendMode::None as i32;
            self.request_body_streamed = pc.request_body_mode == processing_mode::BodySendMode::Streamed as i32
                || pc.request_body_mode == processing_mode::BodySendMode::FullDuplexStreamed as i32;
        }
        if msg.observability_mode {
            // Envoy ignores answers in this mode: never send one.
            self.observe(msg);
            return None;
        }
        let response = match msg.request? {
            Phase::RequestHeaders(h) => return Some(self.on_request_headers(engine, h)),
            Phase::RequestBody(b) => return Some(self.on_request_body(engine, b).await),
            Phase::ResponseHeaders(h) => return Some(self.on_response_headers(&h)),
            Phase::ResponseBody(b) => {
                let body_mutation = self.on_response_body(&b);
                Reply::ResponseBody(BodyResponse {
                    response: body_mutation.map(|m| CommonResponse {
                        body_mutation: Some(m),
                        ..Default::default()
                    }),
                })
            }
            Phase::RequestTrailers(_) => {
                // Trailers and no body at all (HTTP/2 HEADERS, then trailers): Envoy sends no body
                // message, so the request is decided here — a POST without a body, never passed.
                if !self.body_routed
                    && let Some((Outcome::Reply(r), trace)) = engine.on_headers(&self.method, &self.path, false)
                {
                    self.observer.on_gate(&trace);
                    return Some(immediate(r, "llmsoup_local_reply"));
                }
                Reply::RequestTrailers(TrailersResponse::default())
            }
            Phase::ResponseTrailers(_) => Reply::ResponseTrailers(TrailersResponse::default()),
        };
        Some(ProcessingResponse {
            response: Some(response),
            ..Default::default()
        })
    }

    fn on_request_headers(&mut self, engine: &Engine, h: HttpHeaders) -> ProcessingResponse {
        self.start = Some(Instant::now());
        self.start_unix_us = unix_us(SystemTime::now());
        self.request_id =
            String::from_utf8_lossy(header_bytes(&h.headers, "x-request-id").unwrap_or_default()).into_owned();
        self.method = String::from_utf8_lossy(header_bytes(&h.headers, ":method").unwrap_or_default()).into_owned();
        self.path = String::from_utf8_lossy(header_bytes(&h.headers, ":path").unwrap_or_default()).into_owned();
        match self.observer.tenant(
            engine,
            header_bytes(&h.headers, "authorization"),
            header_bytes(&h.headers, "x-api-key"),
        ) {
            Ok(tenant) => tenant.unwrap_or_default().clone_into(&mut self.tenant),
            Err(e) => return immediate(e.into(), "llmsoup_unauthorized"),
        }
        // Only a POST with a body is routed; everything else is answered here (models list, 404,
        // 405, 400 for an empty POST) and never reaches a provider.
        if let Some((Outcome::Reply(r), trace)) = engine.on_headers(&self.method, &self.path, !h.end_of_stream) {
            self.observer.on_gate(&trace);
            return immediate(r, "llmsoup_local_reply");
        }
        // Clients may not choose routes or fake llmsoup's verdicts; the gateway token is ours and
        // never goes upstream.
        let mut remove = names::to_strip(
            h.headers.iter().flat_map(|m| m.headers.iter()).map(|x| x.key.as_str()),
            engine.config().compat.selected_model_header.as_deref(),
            engine.auth_enabled(),
        );
        // The tenant, for the rate limit filter's descriptors: from the token checked above,
        // never from the client (whose copy is removed here; ours is set, not appended).
        let mut set_headers = Vec::new();
        if !self.tenant.is_empty() {
            remove.retain(|k| !k.eq_ignore_ascii_case(TENANT_HEADER));
            set_headers.push(set_header(TENANT_HEADER, self.tenant.as_bytes()));
        }
        let mutation = (!remove.is_empty() || !set_headers.is_empty()).then_some(HeaderMutation {
            remove_headers: remove,
            set_headers,
        });
        ProcessingResponse {
            response: Some(Reply::RequestHeaders(HeadersResponse {
                response: Some(continue_headers(mutation)),
            })),
            ..Default::default()
        }
    }

    async fn on_request_body(&mut self, engine: &Engine, b: HttpBody) -> ProcessingResponse {
        if !b.end_of_stream && self.request_body_streamed {
            // A streamed chunk: collect and decide at the end. (In BUFFERED mode a message without
            // `end_of_stream` is the whole body followed by trailers, and is routed below.)
            self.body.extend_from_slice(&b.body);
            return ProcessingResponse {
                response: Some(Reply::RequestBody(BodyResponse::default())),
                ..Default::default()
            };
        }
        self.body_routed = true;
        let body = if self.body.is_empty() {
            b.body
        } else {
            self.body.extend_from_slice(&b.body);
            std::mem::take(&mut self.body)
        };
        let (mut outcome, mut trace) = engine
            .handle(engine::Request {
                path: &self.path,
                body: &body,
                request_id: &self.request_id,
                client: &self.tenant,
            })
            .await;
        let ticket = crate::cache::apply(self.observer.cache(), engine, &mut outcome, &mut trace).await;
        self.observer.on_route(&self.request_id, &outcome, &trace);
        match outcome {
            Outcome::Reply(r) => immediate(r, "llmsoup_local_reply"),
            Outcome::Forward(f) => {
                let mut set: Vec<HeaderValueOption> = f
                    .set_headers
                    .iter()
                    .map(|(k, v)| set_header(k, v.as_bytes()))
                    .chain(f.append_headers.iter().map(|(k, v)| append_header(k, v.as_bytes())))
                    .collect();
                let body_mutation = f.body.map(|new| {
                    // BUFFERED mode keeps content-length: it must match the new body or Envoy 500s.
                    set.push(set_header(CONTENT_LENGTH, new.len().to_string()));
                    BodyMutation {
                        mutation: Some(body_mutation::Mutation::Body(new)),
                    }
                });
                let g = &engine.config().gateway;
                let handed_over = g.response_accounting && g.async_response_accounting;
                let dynamic_metadata = handed_over.then(|| self.routed_facts(&f.summary, ticket.as_ref()));
                if let Some(key) = ticket
                    && !handed_over
                {
                    // The answer comes back on this stream: keep it for the cache.
                    self.cache_ticket = Some(key);
                    self.response.capture(self.observer.cache().max_entry_bytes());
                }
                self.chain = f
                    .set_headers
                    .iter()
                    .find(|(k, _)| k == CHAIN_HEADER)
                    .map(|(_, v)| v.clone());
                self.summary = Some(f.summary);
                self.translation = f.translation;
                ProcessingResponse {
                    dynamic_metadata,
                    response: Some(Reply::RequestBody(BodyResponse {
                        response: Some(CommonResponse {
                            header_mutation: Some(HeaderMutation {
                                set_headers: set,
                                remove_headers: f.remove_headers.into_iter().map(String::from).collect(),
                            }),
                            body_mutation,
                            clear_route_cache: true,
                            ..Default::default()
                        }),
                    })),
                    ..Default::default()
                }
            }
        }
    }

    fn on_response_headers(&mut self, h: &HttpHeaders) -> ProcessingResponse {
        self.answered_by(h);
        let set = self
            .summary
            .as_ref()
            .map(|s| {
                s.response_headers()
                    .into_iter()
                    .map(|(k, v)| set_header(k, v.into_bytes()))
                    .collect()
            })
            .unwrap_or_default();
        // With accounting, Envoy buffers response bodies for us (usage); an SSE stream must flow
        // chunk by chunk instead, so switch that response to STREAMED. Without accounting Envoy
        // sends no body at all (`response_body_mode: NONE`), and an override would turn it back on.
        let g = &self.engine.config().gateway;
        let inline = g.response_accounting && self.response_bodies_here;
        if g.response_accounting && g.async_response_accounting && !self.response_bodies_here {
            // The accounting filter's stream reports this request.
            self.response.hand_off();
        }
        let sse = self.response_started(h, inline);
        if h.end_of_stream {
            self.response.on_end();
            self.report();
        }
        // A translated body is rewritten chunk by chunk (STREAMED, whatever the rendered mode),
        // so its length changes: `content-length` goes.
        self.translator = (self.translation != Translation::None && !h.end_of_stream)
            .then(|| {
                let status = header_bytes(&h.headers, ":status")
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                    .unwrap_or(0);
                let sse = is_sse(header_bytes(&h.headers, "content-type").unwrap_or_default());
                ResponseTranslator::new(self.translation, status, sse, unix_us(SystemTime::now()) / 1_000_000)
            })
            .filter(ResponseTranslator::active);
        let translating = self.translator.is_some();
        ProcessingResponse {
            response: Some(Reply::ResponseHeaders(HeadersResponse {
                response: Some(continue_headers(Some(HeaderMutation {
                    set_headers: set,
                    remove_headers: if translating {
                        vec![CONTENT_LENGTH.to_string()]
                    } else {
                        Vec::new()
                    },
                }))),
            })),
            mode_override: (translating || (sse && inline)).then(streamed_response_mode),
            ..Default::default()
        }
    }
}

/// Requests that end early (client gone, upstream reset, stream cancelled) are accounted too.
impl Drop for StreamState {
    fn drop(&mut self) {
        self.report();
    }
}

impl StreamState {
    /// A fallback chain's answer names the model that answered (`x-llmsoup-attempts`): the
    /// response headers and the accounting say that one.
    fn answered_by(&mut self, h: &HttpHeaders) {
        let attempts = header_bytes(&h.headers, ATTEMPTS_HEADER);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Some(model) = self.response.on_attempts(attempts, self.chain.as_deref(), now)
            && let Some(s) = self.summary.as_mut()
        {
            s.model = model;
        }
    }

    /// Records status, time to first byte and the kind of body; with `scan`, reads usage from it.
    /// Returns whether the response is SSE.
    fn response_started(&mut self, h: &HttpHeaders, scan: bool) -> bool {
        self.response.on_headers(
            header_bytes(&h.headers, ":status"),
            header_bytes(&h.headers, "content-type"),
            self.start.map(|s| s.elapsed()),
            scan && self.summary.is_some(),
        )
    }

    /// The facts the accounting stream needs, as dynamic metadata under [`METADATA_NAMESPACE`].
    fn routed_facts(&self, summary: &Summary, cache_ticket: Option<&Key>) -> Struct {
        let string = |v: &str| Value {
            kind: Some(Kind::StringValue(v.to_string())),
        };
        let facts = Struct {
            fields: [
                ("model", string(&summary.model)),
                ("decision", string(summary.decision.as_deref().unwrap_or_default())),
                ("request_id", string(&self.request_id)),
                ("cache_key", string(&cache_ticket.map(hex::encode).unwrap_or_default())),
                ("tenant", string(&self.tenant)),
                ("chain", string(self.chain.as_deref().unwrap_or_default())),
                (
                    "start_unix_us",
                    Value {
                        kind: Some(Kind::NumberValue(self.start_unix_us as f64)),
                    },
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        };
        Struct {
            fields: [(
                METADATA_NAMESPACE.to_string(),
                Value {
                    kind: Some(Kind::StructValue(facts)),
                },
            )]
            .into_iter()
            .collect(),
        }
    }

    /// A message of the accounting filter's stream (observability mode: never answered). Responses
    /// without routed facts (local replies, fail-open) are not llmsoup's to account.
    fn observe(&mut self, msg: ProcessingRequest) {
        match msg.request {
            Some(Phase::ResponseHeaders(h)) => {
                if let Some(facts) = msg.metadata_context.as_ref().and_then(routed) {
                    let since = unix_us(SystemTime::now()).saturating_sub(facts.start_unix_us);
                    self.start = Instant::now().checked_sub(Duration::from_micros(since));
                    self.summary = Some(facts.summary);
                    self.request_id = facts.request_id;
                    self.tenant = facts.tenant;
                    // A cache leader routed by this replica: its answer is awaited here.
                    if let Some(key) = facts.cache_key.as_deref().and_then(crate::cache::parse_ticket)
                        && self.observer.cache().awaits(&key)
                    {
                        self.cache_ticket = Some(key);
                        self.response.capture(self.observer.cache().max_entry_bytes());
                    }
                    self.chain = facts.chain;
                }
                self.answered_by(&h);
                self.response_started(&h, true);
                if h.end_of_stream {
                    self.response.on_end();
                    self.report();
                    self.observed_end = true;
                }
            }
            Some(Phase::ResponseBody(b)) => {
                self.on_response_body(&b);
                self.observed_end = b.end_of_stream;
            }
            Some(Phase::ResponseTrailers(_)) => {
                self.response.on_end();
                self.report();
                self.observed_end = true;
            }
            _ => {}
        }
    }

    /// A response chunk: accounted as the provider sent it; with a translator, the body mutation
    /// that replaces it with what the client must receive (empty until a JSON body is complete).
    fn on_response_body(&mut self, b: &HttpBody) -> Option<BodyMutation> {
        let translating = self.translator.is_some();
        if translating {
            self.response.on_chunk_accounted(&b.body);
        } else {
            self.response.on_chunk(&b.body);
        }
        let mutation = self.translator.as_mut().map(|t| {
            let mut out = Vec::with_capacity(if t.whole_body() { 0 } else { b.body.len() + 256 });
            t.feed(&b.body, &mut out);
            if b.end_of_stream {
                t.finish(&mut out);
            }
            // The cache keeps what the client receives.
            self.response.capture_chunk(&out);
            BodyMutation {
                mutation: Some(body_mutation::Mutation::Body(out)),
            }
        });
        if b.end_of_stream {
            self.response.on_end();
            self.report();
        }
        mutation
    }

    /// Accounts the request once, when its response ends (or the stream does), and hands a
    /// cache leader's answer (complete, or none) to the cache.
    fn report(&mut self) {
        if let Some(key) = self.cache_ticket.take() {
            let body = self.response.take_capture();
            self.observer
                .cache()
                .complete(&key, self.response.status(), self.response.sse(), body.as_deref());
        }
        let Some(summary) = &self.summary else { return };
        let duration = self.start.map_or(Duration::ZERO, |s| s.elapsed());
        if let Some(mut report) = self.response.report(
            std::mem::take(&mut self.request_id),
            summary.model.clone(),
            summary.decision.clone().unwrap_or_default(),
            duration,
        ) {
            report.tenant = std::mem::take(&mut self.tenant);
            self.observer.report(&self.engine, &report);
        }
    }
}

fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// What the routing stream hands the accounting stream.
struct RoutedFacts {
    summary: Summary,
    request_id: String,
    tenant: String,
    start_unix_us: u64,
    /// The cache ticket, when the request leads its cache key.
    cache_key: Option<String>,
    chain: Option<String>,
}

/// The routing stream's facts from forwarded dynamic metadata: summary, request id, tenant, start.
fn routed(metadata: &Metadata) -> Option<RoutedFacts> {
    let facts = &metadata.filter_metadata.get(METADATA_NAMESPACE)?.fields;
    let string = |k: &str| match facts.get(k)?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s.clone()),
        _ => None,
    };
    let start = match facts.get("start_unix_us")?.kind.as_ref()? {
        Kind::NumberValue(n) if *n >= 0.0 => *n as u64,
        _ => return None,
    };
    let summary = Summary {
        model: string("model").filter(|m| !m.is_empty())?,
        decision: string("decision").filter(|d| !d.is_empty()),
        ..Default::default()
    };
    Some(RoutedFacts {
        summary,
        request_id: string("request_id").unwrap_or_default(),
        tenant: string("tenant").unwrap_or_default(),
        start_unix_us: start,
        cache_key: string("cache_key").filter(|k| !k.is_empty()),
        chain: string("chain").filter(|c| !c.is_empty()),
    })
}

/// The processing-mode override that streams an SSE response body chunk by chunk.
fn streamed_response_mode() -> ProcessingMode {
    ProcessingMode {
        request_header_mode: processing_mode::HeaderSendMode::Send as i32,
        response_header_mode: processing_mode::HeaderSendMode::Send as i32,
        request_body_mode: processing_mode::BodySendMode::Buffered as i32,
        response_body_mode: processing_mode::BodySendMode::Streamed as i32,
        request_trailer_mode: processing_mode::HeaderSendMode::Skip as i32,
        response_trailer_mode: processing_mode::HeaderSendMode::Skip as i32,
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::ext_proc::v3::ProtocolConfiguration;

    use super::*;
    use llmsoup_config::{DEFAULT_CONFIG, load_str_with_env};

    fn engine() -> Arc<Engine> {
        let text = DEFAULT_CONFIG.replacen("\ngateway:\n", "\ngateway:\n  async_response_accounting: true\n", 1);
        assert_ne!(text, DEFAULT_CONFIG);
        Arc::new(Engine::new(load_str_with_env(&text, &|_| None).unwrap()).unwrap())
    }

    fn observer() -> Arc<Observer> {
        Arc::new(Observer::default())
    }

    fn headers(pairs: &[(&str, &str)], end_of_stream: bool) -> HttpHeaders {
        HttpHeaders {
            headers: Some(HeaderMap {
                headers: pairs
                    .iter()
                    .map(|(k, v)| HeaderValue {
                        key: k.to_string(),
                        raw_value: v.as_bytes().to_vec(),
                        ..Default::default()
                    })
                    .collect(),
            }),
            end_of_stream,
            ..Default::default()
        }
    }

    fn message(phase: Phase) -> ProcessingRequest {
        ProcessingRequest {
            request: Some(phase),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn routed_facts_reach_the_accounting_stream_which_is_never_answered() {
        let engine = engine();
        let mut routing = StreamState::new(engine.clone(), observer());
        let mut first = message(Phase::RequestHeaders(headers(
            &[
                (":method", "POST"),
                (":path", "/v1/chat/completions"),
                ("x-request-id", "r-42"),
            ],
            false,
        )));
        first.protocol_config = Some(ProtocolConfiguration {
            response_body_mode: processing_mode::BodySendMode::None as i32,
            ..Default::default()
        });
        assert!(routing.handle(&engine, first).await.is_some());
        let body = HttpBody {
            body: br#"{"model":"fast","messages":[{"role":"user","content":"hi"}]}"#.to_vec(),
            end_of_stream: true,
            ..Default::default()
        };
        let forwarded = routing
            .handle(&engine, message(Phase::RequestBody(body)))
            .await
            .unwrap();
        let metadata = Metadata {
            filter_metadata: match forwarded.dynamic_metadata.unwrap().fields.remove(METADATA_NAMESPACE) {
                Some(Value {
                    kind: Some(Kind::StructValue(facts)),
                }) => [(METADATA_NAMESPACE.to_string(), facts)].into_iter().collect(),
                other => panic!("no llmsoup metadata: {other:?}"),
            },
            ..Default::default()
        };

        // The routing stream answers response headers but leaves accounting to the other stream.
        let sse = headers(&[(":status", "200"), ("content-type", "text/event-stream")], false);
        let answer = routing
            .handle(&engine, message(Phase::ResponseHeaders(sse.clone())))
            .await
            .unwrap();
        assert!(
            answer.mode_override.is_none(),
            "no body is asked for on the routing stream"
        );
        assert!(!routing.response.scanning() && routing.response.reported());

        let mut observer = StreamState::new(engine.clone(), observer());
        let mut observed = message(Phase::ResponseHeaders(sse));
        observed.observability_mode = true;
        observed.metadata_context = Some(metadata);
        assert!(observer.handle(&engine, observed).await.is_none());
        let summary = observer.summary.as_ref().expect("facts from the metadata");
        assert_eq!((summary.model.as_str(), observer.request_id.as_str()), ("fast", "r-42"));
        assert!(observer.response.started() && observer.response.scanning());
        let mut chunk = message(Phase::ResponseBody(HttpBody {
            body: b"data: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n".to_vec(),
            end_of_stream: true,
            ..Default::default()
        }));
        chunk.observability_mode = true;
        assert!(observer.handle(&engine, chunk).await.is_none());
        assert!(observer.response.reported() && observer.observed_end);
    }

    #[tokio::test]
    async fn the_tenant_comes_from_the_checked_token_never_from_the_client() {
        let token = "tenant-test-token";
        let text = DEFAULT_CONFIG.replacen("\ngateway:\n", "\ngateway:\n  async_response_accounting: true\n", 1)
            + &format!(
                "\nauth:\n  tokens:\n    - {{name: alice, group: team, sha256: '{}'}}\n",
                llmsoup_contract::auth::hash_token(token)
            );
        let engine = Arc::new(Engine::new(load_str_with_env(&text, &|_| None).unwrap()).unwrap());
        let mut s = StreamState::new(engine.clone(), observer());
        let auth = format!("Bearer {token}");
        let answer = s
            .handle(
                &engine,
                message(Phase::RequestHeaders(headers(
                    &[
                        (":method", "POST"),
                        (":path", "/v1/chat/completions"),
                        ("authorization", &auth),
                        (TENANT_HEADER, "mallory"),
                    ],
                    false,
                ))),
            )
            .await
            .unwrap();
        let Some(Reply::RequestHeaders(h)) = answer.response else {
            panic!("continue expected: {answer:?}")
        };
        let m = h.response.unwrap().header_mutation.unwrap();
        let set: Vec<(&str, &[u8])> = m
            .set_headers
            .iter()
            .map(|o| {
                let h = o.header.as_ref().unwrap();
                (h.key.as_str(), h.raw_value.as_slice())
            })
            .collect();
        // Set (overwriting the client's copy), not removed after being set.
        assert_eq!(set, [(TENANT_HEADER, b"alice".as_slice())]);
        assert!(
            !m.remove_headers.iter().any(|k| k == TENANT_HEADER),
            "{:?}",
            m.remove_headers
        );
        assert!(m.remove_headers.iter().any(|k| k == "authorization"));
        // The accounting stream (possibly another replica) learns the tenant with the facts.
        let body = HttpBody {
            body: br#"{"model":"fast","messages":[{"role":"user","content":"hi"}]}"#.to_vec(),
            end_of_stream: true,
            ..Default::default()
        };
        let forwarded = s.handle(&engine, message(Phase::RequestBody(body))).await.unwrap();
        let Some(Kind::StructValue(facts)) = forwarded.dynamic_metadata.unwrap().fields[METADATA_NAMESPACE]
            .kind
            .clone()
        else {
            panic!("no facts")
        };
        let metadata = Metadata {
            filter_metadata: [(METADATA_NAMESPACE.to_string(), facts)].into_iter().collect(),
            ..Default::default()
        };
        assert_eq!(routed(&metadata).unwrap().tenant, "alice");
    }

    fn first_headers(body_mode: Option<processing_mode::BodySendMode>) -> ProcessingRequest {
        let mut first = message(Phase::RequestHeaders(headers(
            &[(":method", "POST"), (":path", "/v1/chat/completions")],
            false,
        )));
        first.protocol_config = body_mode.map(|m| ProtocolConfiguration {
            request_body_mode: m as i32,
            ..Default::default()
        });
        first
    }

    fn body_message(body: &[u8], end_of_stream: bool) -> ProcessingRequest {
        message(Phase::RequestBody(HttpBody {
            body: body.to_vec(),
            end_of_stream,
            ..Default::default()
        }))
    }

    fn routed_model(r: &ProcessingResponse) -> Option<String> {
        let Some(Reply::RequestBody(BodyResponse { response: Some(c) })) = &r.response else {
            return None;
        };
        c.header_mutation
            .as_ref()?
            .set_headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key == names::MODEL_HEADER)
            .map(|h| String::from_utf8_lossy(&h.raw_value).into_owned())
    }

    /// HTTP/2 request trailers: in BUFFERED mode Envoy sends the whole body without
    /// `end_of_stream`. It is routed like any body, never let through unrouted.
    #[tokio::test]
    async fn a_buffered_body_followed_by_trailers_is_routed() {
        let engine = engine();
        let body = br#"{"model":"strong","messages":[{"role":"user","content":"hi"}]}"#;
        for mode in [Some(processing_mode::BodySendMode::Buffered), None] {
            let mut s = StreamState::new(engine.clone(), observer());
            s.handle(&engine, first_headers(mode)).await.unwrap();
            let r = s.handle(&engine, body_message(body, false)).await.unwrap();
            assert_eq!(routed_model(&r).as_deref(), Some("strong"), "{mode:?}");
        }
        // An empty body before the trailers is an empty POST: a 400, not a pass.
        let mut s = StreamState::new(engine.clone(), observer());
        s.handle(&engine, first_headers(Some(processing_mode::BodySendMode::Buffered)))
            .await
            .unwrap();
        let r = s.handle(&engine, body_message(b"", false)).await.unwrap();
        let Some(Reply::ImmediateResponse(i)) = r.response else {
            panic!("expected a local reply, got {r:?}")
        };
        assert_eq!(i.status.unwrap().code, 400);
        assert!(String::from_utf8_lossy(&i.body).contains("invalid_json"));

        // STREAMED chunks are collected and the whole body routed at the end.
        let mut s = StreamState::new(engine.clone(), observer());
        s.handle(&engine, first_headers(Some(processing_mode::BodySendMode::Streamed)))
            .await
            .unwrap();
        let (a, b) = body.split_at(10);
        let r = s.handle(&engine, body_message(a, false)).await.unwrap();
        assert_eq!(routed_model(&r), None);
        assert!(matches!(
            r.response,
            Some(Reply::RequestBody(BodyResponse { response: None }))
        ));
        let r = s.handle(&engine, body_message(b, true)).await.unwrap();
        assert_eq!(routed_model(&r).as_deref(), Some("strong"));
    }

    /// HEADERS then trailers, no data: Envoy sends no body message, only the trailers.
    #[tokio::test]
    async fn a_trailers_only_post_is_refused_at_the_trailers() {
        let engine = engine();
        let mut s = StreamState::new(engine.clone(), observer());
        s.handle(&engine, first_headers(Some(processing_mode::BodySendMode::Buffered)))
            .await
            .unwrap();
        let r = s
            .handle(&engine, message(Phase::RequestTrailers(Default::default())))
            .await
            .unwrap();
        let Some(Reply::ImmediateResponse(i)) = r.response else {
            panic!("expected a local reply, got {r:?}")
        };
        assert_eq!(i.status.unwrap().code, 400);
        // After a routed body, trailers are only acknowledged.
        let mut s = StreamState::new(engine.clone(), observer());
        s.handle(&engine, first_headers(None)).await.unwrap();
        let body = br#"{"model":"fast","messages":[]}"#;
        assert!(routed_model(&s.handle(&engine, body_message(body, false)).await.unwrap()).is_some());
        let r = s
            .handle(&engine, message(Phase::RequestTrailers(Default::default())))
            .await
            .unwrap();
        assert!(matches!(r.response, Some(Reply::RequestTrailers(_))));
    }

    /// Requests without a body (or not POST) are answered at the headers phase.
    #[tokio::test]
    async fn bodyless_requests_are_answered_at_the_headers() {
        let engine = engine();
        for (method, path, eos, status) in [
            ("GET", "/v1/files", true, 404),
            ("DELETE", "/v1/chat/completions", true, 405),
            ("POST", "/v1/chat/completions", true, 400),
            ("GET", "/v1/chat/completions", false, 405),
        ] {
            let mut s = StreamState::new(engine.clone(), observer());
            let r = s
                .handle(
                    &engine,
                    message(Phase::RequestHeaders(headers(
                        &[(":method", method), (":path", path)],
                        eos,
                    ))),
                )
                .await
                .unwrap();
            let Some(Reply::ImmediateResponse(i)) = r.response else {
                panic!("{method} {path}: expected a local reply, got {r:?}")
            };
            assert_eq!(i.status.unwrap().code, status, "{method} {path}");
        }
    }

    #[tokio::test]
    async fn responses_without_routed_facts_are_not_accounted_by_the_observer() {
        let engine = engine();
        let mut observer = StreamState::new(engine.clone(), observer());
        let mut local_reply = message(Phase::ResponseHeaders(headers(
            &[(":status", "401"), ("content-type", "application/json")],
            true,
        )));
        local_reply.observability_mode = true;
        assert!(observer.handle(&engine, local_reply).await.is_none());
        assert!(observer.summary.is_none() && !observer.response.scanning() && observer.observed_end);

        let mut bad = Metadata::default();
        bad.filter_metadata.insert(METADATA_NAMESPACE.into(), Struct::default());
        assert!(routed(&bad).is_none());
    }
}
