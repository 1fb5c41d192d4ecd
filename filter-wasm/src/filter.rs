//! The per-request state machine: headers → (body) → Route call → mutations or a local reply;
//! then response headers and usage accounting.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use llmsoup_contract::ApiError;
use llmsoup_contract::auth;
use llmsoup_contract::budget::TENANT_HEADER;
use llmsoup_contract::fail_open::{FailOpenError, fail_open_rewrite};
use llmsoup_contract::fallback::{ATTEMPTS_HEADER, CHAIN_HEADER};
use llmsoup_contract::headers::{self as names, CONTENT_LENGTH, DECISION_HEADER, FAIL_OPEN_DECISION, MODEL_HEADER};
use llmsoup_contract::outcome::Translation;
use llmsoup_contract::plugin_config::{FailureMode, Plugin};
use llmsoup_contract::usage::{ResponseTracker, is_sse};
use llmsoup_contract::v1::{self, route_response::Action as RouteAction};
use llmsoup_translate::ResponseTranslator;
use prost::Message as _;

use crate::host::{Host, HostError};

/// Why the fail-open step did not forward a request.
enum FailOpen {
    /// The body is a client error (the same the sidecar gives).
    Refused(FailOpenError),
    /// A host call failed.
    Host(HostError),
}

impl From<HostError> for FailOpen {
    fn from(e: HostError) -> Self {
        FailOpen::Host(e)
    }
}

/// What the filter tells Envoy to do with the current callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Let the request/response continue.
    Continue,
    /// Hold it (waiting for the body or the sidecar, or replied locally).
    Pause,
}

/// Headers forwarded to the sidecar in RouteRequest (the rest are irrelevant to routing).
const FORWARDED_HEADERS: &[&str] = &["content-type", "user-agent", "x-request-id"];

/// Most bytes of captured response bodies (for the sidecar's response cache) queued at once; a
/// report beyond it goes without its body (that answer is not cached).
const MAX_QUEUED_CAPTURE: usize = 16 << 20;

/// Reports waiting to be sent by the root context (one queue per VM, i.e. per worker thread).
pub type ReportQueue = Rc<RefCell<Vec<v1::UsageReport>>>;

/// One HTTP request going through the filter.
pub struct Filter<H: Host> {
    host: H,
    plugin: Rc<Plugin>,
    reports: ReportQueue,
    start: Duration,
    method: String,
    path: String,
    request_id: String,
    client: String,
    /// The request headers the Route call carries ([`FORWARDED_HEADERS`]).
    forwarded: Vec<v1::Header>,
    body_size: usize,
    route_call: Option<u32>,
    /// The Route call was made (the request is paused until its answer).
    routing: bool,
    replied: bool,
    response_headers: Vec<(String, Vec<u8>)>,
    model: String,
    decision: String,
    response: ResponseTracker,
    /// The sidecar's response cache awaits this request's answer under this ticket.
    cache_key: String,
    /// How the response must be rewritten for the client (protocol translation, stream usage).
    translation: Translation,
    /// The rewrite in progress, once the response headers said what the body is.
    translator: Option<ResponseTranslator>,
    /// The fallback chain the sidecar routed the request with (`x-llmsoup-chain`), if any.
    chain: Option<String>,
    /// The plugin configuration's compiled local routing plan, when the filter may use it.
    local: Option<Rc<crate::local::Local>>,
    /// The decision record of a request routed locally, sent with its usage report.
    local_route: Option<v1::LocalRoute>,
}

impl<H: Host> Filter<H> {
    /// A filter for one request.
    pub fn new(host: H, plugin: Rc<Plugin>, reports: ReportQueue) -> Self {
        Filter {
            host,
            plugin,
            reports,
            start: Duration::ZERO,
            method: String::new(),
            path: String::new(),
            request_id: String::new(),
            client: String::new(),
            forwarded: Vec::new(),
            body_size: 0,
            route_call: None,
            routing: false,
            replied: false,
            response_headers: Vec::new(),
            model: String::new(),
            decision: String::new(),
            response: ResponseTracker::default(),
            cache_key: String::new(),
            translation: Translation::None,
            translator: None,
            chain: None,
            local: None,
            local_route: None,
        }
    }

    /// Lets the filter route requests its plan covers without the Route call.
    pub fn with_local(mut self, local: Option<Rc<crate::local::Local>>) -> Self {
        self.local = local;
        self
    }

    /// The host (tests drive a fake one).
    pub fn host(&self) -> &H {
        &self.host
    }

    /// The host, mutably.
    pub fn host_mut(&mut self) -> &mut H {
        &mut self.host
    }

    /// Local error reply; the request goes no further.
    fn reply(&mut self, e: &ApiError) -> Next {
        self.replied = true;
        let status = u32::from(e.status);
        if let Err(err) = self
            .host
            .send_response(status, &[("content-type", b"application/json")], &e.to_json())
        {
            self.host
                .warn(&format!("llmsoup: local reply {status} failed: {}", err.0));
        }
        Next::Pause
    }

    /// `on_http_request_headers`. The header map is read from Envoy once (one host call and one
    /// copy into the VM): what the filter reads, what it strips and what it forwards to the
    /// sidecar all come from that copy.
    pub fn on_request_headers(&mut self, end_of_stream: bool) -> Next {
        self.start = self.host.now();
        let headers = self.host.request_headers();
        let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice());
        let string = |name: &str| String::from_utf8_lossy(get(name).unwrap_or_default()).into_owned();
        self.method = string(":method");
        self.path = string(":path");
        self.request_id = string("x-request-id");
        self.forwarded = FORWARDED_HEADERS
            .iter()
            .filter_map(|n| {
                get(n).map(|v| v1::Header {
                    name: (*n).to_string(),
                    value: v.to_vec(),
                })
            })
            .collect();
        if !self.plugin.tokens.is_empty() {
            match auth::check(&self.plugin.tokens, get("authorization"), get("x-api-key")) {
                Ok(i) => self.client = self.plugin.config.token_names.get(i).cloned().unwrap_or_default(),
                Err(e) => return self.reply(&ApiError::from(e)),
            }
        }
        // Clients may not choose routes or fake llmsoup's verdicts; our token never goes upstream.
        let remove = names::to_strip(
            headers.iter().map(|(k, _)| k.as_str()),
            self.plugin.config.route_header.as_deref(),
            !self.plugin.tokens.is_empty(),
        );
        for name in remove {
            if let Err(e) = self.host.set_request_header(&name, None) {
                self.host.warn(&format!("llmsoup: removing {name} failed: {}", e.0));
            }
        }
        // The tenant, for the rate limit filter's descriptors: derived from the token checked
        // above, never from the client (its x-llmsoup-* headers are gone). The model routes
        // remove it before the provider.
        if !self.client.is_empty()
            && let Err(e) = self
                .host
                .set_request_header(TENANT_HEADER, Some(self.client.as_bytes()))
        {
            self.host
                .warn(&format!("llmsoup: setting {TENANT_HEADER} failed: {}", e.0));
        }
        if end_of_stream {
            return self.route(Vec::new());
        }
        Next::Pause
    }

    /// `on_http_request_body`.
    pub fn on_request_body(&mut self, size: usize, end_of_stream: bool) -> Next {
        if self.replied {
            return Next::Pause;
        }
        if size > self.plugin.config.max_body_bytes {
            return self.reply(&ApiError::too_large());
        }
        if !end_of_stream {
            // Trailers may follow instead of an end of stream: `on_request_trailers` routes then.
            return Next::Pause;
        }
        self.body_size = size;
        let body = self.host.request_body(size).unwrap_or_default();
        self.route(body)
    }

    /// `on_http_request_trailers`: with trailers, the body never comes with `end_of_stream`
    /// (an HTTP/2 POST with trailers, possibly with no data at all). The whole body is buffered
    /// by now: route it and keep the request paused until the answer, as at the end of a body.
    pub fn on_request_trailers(&mut self) -> Next {
        if self.replied || self.routing {
            return Next::Pause;
        }
        let body = self.host.request_body(usize::MAX).unwrap_or_default();
        if body.len() > self.plugin.config.max_body_bytes {
            return self.reply(&ApiError::too_large());
        }
        self.body_size = body.len();
        self.route(body)
    }

    fn route(&mut self, body: Vec<u8>) -> Next {
        self.routing = true;
        if let Some(local) = self.local.clone() {
            let started = self.host.now();
            if let Some(routed) = crate::local::route(&local, &self.plugin, &self.method, &self.path, &body) {
                return self.apply_local(routed, started);
            }
        }
        // Read with the other headers in `on_request_headers`: none of these is one we strip.
        let headers = std::mem::take(&mut self.forwarded);
        let msg = v1::RouteRequest {
            method: self.method.clone(),
            path: self.path.clone(),
            headers,
            body,
            client: self.client.clone(),
            request_id: self.request_id.clone(),
        }
        .encode_to_vec();
        let upstream = self.plugin.upstream.clone();
        let timeout = Duration::from_millis(self.plugin.config.timeout_ms);
        match self.host.dispatch_route(&upstream, &msg, timeout) {
            Ok(token) => {
                self.route_call = Some(token);
                Next::Pause
            }
            Err(e) => {
                self.sidecar_failed(&format!("dispatch failed: {}", e.0));
                Next::Pause
            }
        }
    }

    /// `on_grpc_call_response` for the Route call.
    pub fn on_route_response(&mut self, token: u32, grpc_status: u32, size: usize) {
        if self.route_call != Some(token) {
            return;
        }
        self.route_call = None;
        if grpc_status != 0 {
            return self.sidecar_failed(&format!("Route returned gRPC status {grpc_status}"));
        }
        let bytes = self.host.grpc_response(size).unwrap_or_default();
        let resp = match v1::RouteResponse::decode(bytes.as_slice()) {
            Ok(r) => r,
            Err(e) => return self.sidecar_failed(&format!("undecodable Route response: {e}")),
        };
        self.model = resp.model;
        self.decision = resp.decision;
        if !resp.cache_key.is_empty() {
            self.cache_key = resp.cache_key;
            self.response.capture(resp.cache_capture_bytes as usize);
        }
        self.response_headers = resp.response_headers.into_iter().map(|h| (h.name, h.value)).collect();
        match resp.action {
            Some(RouteAction::Reply(r)) => {
                self.replied = true;
                let headers: Vec<(&str, &[u8])> = r
                    .headers
                    .iter()
                    .map(|h| (h.name.as_str(), h.value.as_slice()))
                    .collect();
                if let Err(e) = self.host.send_response(r.status, &headers, &r.body) {
                    self.host.warn(&format!("llmsoup: local reply failed: {}", e.0));
                }
            }
            Some(RouteAction::Forward(f)) => {
                self.translation = Translation::from_wire(f.translation, f.client_include_usage);
                if let Err(e) = self.apply(&f) {
                    self.host.warn(&format!("llmsoup: applying the route failed: {}", e.0));
                    self.reply(&ApiError::router_error());
                }
            }
            None => self.resume(),
        }
    }

    fn apply(&mut self, f: &v1::Forward) -> Result<(), HostError> {
        self.chain = f
            .set_headers
            .iter()
            .find(|h| h.name == CHAIN_HEADER)
            .and_then(|h| String::from_utf8(h.value.clone()).ok());
        for name in &f.remove_headers {
            self.host.set_request_header(name, None)?;
        }
        for h in &f.set_headers {
            self.host.set_request_header(&h.name, Some(&h.value))?;
        }
        for h in &f.append_headers {
            self.host.add_request_header(&h.name, &h.value)?;
        }
        if let Some(body) = &f.body {
            self.host.set_request_body(self.body_size, body)?;
            // Envoy does not fix content-length after a body rewrite.
            self.host
                .set_request_header(CONTENT_LENGTH, Some(body.len().to_string().as_bytes()))?;
        }
        self.host.clear_route_cache()?;
        self.host.resume_request()
    }

    /// Applies what the sidecar would have answered (`local::route`): the same mutations as
    /// [`Self::apply`] of its `Forward`, the same client headers, and the decision record for the
    /// report. The request continues at once.
    fn apply_local(&mut self, r: crate::local::Routed, started: Duration) -> Next {
        self.translation = r.translation;
        let result = (|| {
            for (name, value) in &r.set_headers {
                self.host.set_request_header(name, Some(value.as_bytes()))?;
            }
            if let Some(body) = &r.body {
                self.host.set_request_body(self.body_size, body)?;
                self.host
                    .set_request_header(CONTENT_LENGTH, Some(body.len().to_string().as_bytes()))?;
            }
            self.host.clear_route_cache()
        })();
        if let Err(e) = result {
            self.host
                .warn(&format!("llmsoup: applying the local route failed: {}", e.0));
            return self.reply(&ApiError::router_error());
        }
        self.response_headers = r
            .response_headers
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into_bytes()))
            .collect();
        self.model = r.model;
        self.decision = r.decision;
        let mut record = r.record;
        record.latency_us = self.host.now().saturating_sub(started).as_micros() as u64;
        self.local_route = Some(record);
        Next::Continue
    }

    fn resume(&mut self) {
        if let Err(e) = self.host.resume_request() {
            self.host.warn(&format!("llmsoup: resume failed: {}", e.0));
        }
    }

    fn sidecar_failed(&mut self, why: &str) {
        match self.plugin.config.failure_mode {
            FailureMode::Closed => {
                self.host
                    .warn(&format!("llmsoup: sidecar unavailable ({why}); failing closed"));
                self.reply(&ApiError::router_unavailable());
            }
            FailureMode::Open => {
                self.host
                    .warn(&format!("llmsoup: sidecar unavailable ({why}); fail-open"));
                match self.fail_open() {
                    Ok(()) => self.resume(),
                    // Marked like any fail-open answer, so it is never mistaken for the router's.
                    Err(FailOpen::Refused(e)) => self.fail_open_reply(400, &e.body()),
                    Err(FailOpen::Host(e)) => {
                        self.host.warn(&format!("llmsoup: fail-open rewrite failed: {}", e.0));
                        self.fail_open_reply(500, &ApiError::fail_open_error().to_json());
                    }
                }
            }
        }
    }

    fn fail_open_reply(&mut self, status: u32, body: &[u8]) {
        self.replied = true;
        let result = self.host.send_response(
            status,
            &[
                ("content-type", b"application/json"),
                (DECISION_HEADER, FAIL_OPEN_DECISION.as_bytes()),
            ],
            body,
        );
        if let Err(e) = result {
            self.host
                .warn(&format!("llmsoup: local reply {status} failed: {}", e.0));
        }
    }

    /// The body still says `"model": "auto"`: send it to the default model (or keep a concrete
    /// configured one) so a real provider accepts it. A POST whose body cannot be routed that way
    /// (empty, not strict JSON, no string `model`) is refused; a request that is not a POST goes
    /// on unrouted, to Envoy's route table, which has no provider route for it (404/405/503).
    fn fail_open(&mut self) -> Result<(), FailOpen> {
        if self.method != "POST" {
            return Ok(());
        }
        let body = if self.body_size == 0 {
            Vec::new()
        } else {
            self.host.request_body(self.body_size).unwrap_or_default()
        };
        let cfg = &self.plugin.config;
        let (model, new) = fail_open_rewrite(&body, &cfg.models, &cfg.default_model).map_err(FailOpen::Refused)?;
        let model = model.to_string();
        self.host.set_request_body(self.body_size, &new)?;
        self.host
            .set_request_header(CONTENT_LENGTH, Some(new.len().to_string().as_bytes()))?;
        self.host.set_request_header(MODEL_HEADER, Some(model.as_bytes()))?;
        if let Some(h) = &self.plugin.config.route_header {
            self.host.set_request_header(h, Some(model.as_bytes()))?;
        }
        self.response_headers = vec![
            (MODEL_HEADER.into(), model.clone().into_bytes()),
            (DECISION_HEADER.into(), FAIL_OPEN_DECISION.as_bytes().to_vec()),
        ];
        self.model = model;
        self.decision = FAIL_OPEN_DECISION.into();
        Ok(self.host.clear_route_cache()?)
    }

    /// `on_http_response_headers`.
    pub fn on_response_headers(&mut self) -> Next {
        let status = self.host.response_header(":status");
        let content_type = self.host.response_header("content-type");
        self.response.on_headers(
            status.as_deref(),
            content_type.as_deref(),
            Some(self.host.now().saturating_sub(self.start)),
            self.plugin.config.response_accounting && !self.model.is_empty(),
        );
        // A fallback chain's answer names the model that answered: say that one, account it.
        let attempts = self.host.response_header(ATTEMPTS_HEADER);
        let now = self.host.now().as_secs();
        if let Some(model) = self
            .response
            .on_attempts(attempts.as_deref(), self.chain.as_deref(), now)
        {
            for (k, v) in &mut self.response_headers {
                if k == MODEL_HEADER {
                    *v = model.clone().into_bytes();
                }
            }
            self.model = model;
        }
        for (k, v) in std::mem::take(&mut self.response_headers) {
            if let Err(e) = self.host.set_response_header(&k, &v) {
                self.host
                    .warn(&format!("llmsoup: setting response header {k} failed: {}", e.0));
            }
        }
        if self.translation != Translation::None {
            let status = status
                .as_deref()
                .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                .unwrap_or(0);
            let sse = is_sse(content_type.as_deref().unwrap_or_default());
            let t = ResponseTranslator::new(self.translation, status, sse, self.host.now().as_secs());
            if t.active() {
                // The body is rewritten here, so its length changes.
                match self.host.remove_response_header(CONTENT_LENGTH) {
                    Ok(()) => self.translator = Some(t),
                    Err(e) => self.host.warn(&format!("llmsoup: response left untranslated: {}", e.0)),
                }
            }
        }
        Next::Continue
    }

    /// A response chunk with a translator: accounted as the provider sent it, replaced by what
    /// the client must receive. A JSON body is held (Envoy buffers it) and translated whole.
    fn translate_chunk(&mut self, size: usize, end_of_stream: bool) -> Next {
        let Some(t) = self.translator.as_mut() else {
            return Next::Continue;
        };
        if t.whole_body() && !end_of_stream {
            return Next::Pause;
        }
        let chunk = if size > 0 {
            self.host.response_body(size).unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut out = Vec::with_capacity(chunk.len() + 256);
        t.feed(&chunk, &mut out);
        if end_of_stream {
            t.finish(&mut out);
        }
        if let Err(e) = self.host.set_response_body(size, &out) {
            self.host
                .warn(&format!("llmsoup: replacing a response chunk failed: {}", e.0));
        }
        if self.response.scanning() {
            self.response.on_chunk_accounted(&chunk);
        }
        // The cache keeps what the client receives.
        self.response.capture_chunk(&out);
        if end_of_stream {
            self.response.on_end();
            self.report();
        }
        Next::Continue
    }

    /// `on_http_response_body`: reads each chunk as it passes; never holds the stream back.
    pub fn on_response_body(&mut self, size: usize, end_of_stream: bool) -> Next {
        if self.translator.is_some() {
            return self.translate_chunk(size, end_of_stream);
        }
        if self.response.wants_chunks()
            && size > 0
            && let Some(chunk) = self.host.response_body(size)
        {
            self.response.on_chunk(&chunk);
        }
        if end_of_stream {
            self.response.on_end();
            self.report();
        }
        Next::Continue
    }

    /// `on_log`: the stream is over, possibly early (client gone, upstream reset).
    pub fn on_done(&mut self) {
        self.report();
    }

    fn report(&mut self) {
        if self.model.is_empty() {
            return;
        }
        let duration = self.host.now().saturating_sub(self.start);
        let captured = self.response.take_capture();
        let Some(mut report) = self.response.report(
            self.request_id.clone(),
            self.model.clone(),
            self.decision.clone(),
            duration,
        ) else {
            return;
        };
        report.tenant = self.client.clone();
        report.local_route = self.local_route.take();
        let mut q = self.reports.borrow_mut();
        // Bounded: if the sidecar stops accepting reports, drop the oldest rather than grow.
        if q.len() >= 4096 {
            q.remove(0);
        }
        if !self.cache_key.is_empty() {
            report.cache_key = std::mem::take(&mut self.cache_key);
            let queued: usize = q.iter().map(|r| r.response_body.len()).sum();
            if let Some(body) = captured.filter(|b| queued + b.len() <= MAX_QUEUED_CAPTURE) {
                report.response_body = body;
            }
        }
        q.push(report);
    }
}

#[cfg(test)]
mod tests;
