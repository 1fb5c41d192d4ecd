use std::cell::RefCell;
use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::*;
use llmsoup_contract::plugin_config::Plugin;

#[derive(Default)]
struct Fake {
    now_ms: u64,
    req_headers: Vec<(String, Vec<u8>)>,
    req_body: Vec<u8>,
    resp_headers: Vec<(String, Vec<u8>)>,
    resp_chunk: Vec<u8>,
    /// What the client receives of each replaced response chunk.
    resp_out: Vec<Vec<u8>>,
    removed_resp_headers: Vec<String>,
    body_reads: std::cell::Cell<u32>,
    sent: Option<(u32, Vec<u8>)>,
    sent_headers: Vec<(String, Vec<u8>)>,
    routes: Vec<v1::RouteRequest>,
    dispatch_fails: bool,
    grpc_resp: Vec<u8>,
    cleared: u32,
    resumed: u32,
    warnings: RefCell<Vec<String>>,
}

impl Fake {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.req_headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }
}

impl Host for Fake {
    fn now(&self) -> Duration {
        Duration::from_millis(self.now_ms)
    }
    fn request_headers(&self) -> Vec<(String, Vec<u8>)> {
        self.req_headers.clone()
    }
    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        self.header(name).map(<[u8]>::to_vec)
    }
    fn set_request_header(&mut self, name: &str, value: Option<&[u8]>) -> Result<(), HostError> {
        self.req_headers.retain(|(k, _)| k != name);
        if let Some(v) = value {
            self.req_headers.push((name.to_string(), v.to_vec()));
        }
        Ok(())
    }
    fn add_request_header(&mut self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.req_headers.push((name.to_string(), value.to_vec()));
        Ok(())
    }
    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        Some(self.req_body[..size.min(self.req_body.len())].to_vec())
    }
    fn set_request_body(&mut self, old_size: usize, body: &[u8]) -> Result<(), HostError> {
        assert_eq!(old_size, self.req_body.len(), "must replace the whole body");
        self.req_body = body.to_vec();
        Ok(())
    }
    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        self.resp_headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
    fn set_response_header(&mut self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.resp_headers.push((name.to_string(), value.to_vec()));
        Ok(())
    }
    fn remove_response_header(&mut self, name: &str) -> Result<(), HostError> {
        self.removed_resp_headers.push(name.to_string());
        Ok(())
    }
    fn response_body(&self, _size: usize) -> Option<Vec<u8>> {
        self.body_reads.set(self.body_reads.get() + 1);
        Some(self.resp_chunk.clone())
    }
    fn set_response_body(&mut self, _size: usize, body: &[u8]) -> Result<(), HostError> {
        self.resp_out.push(body.to_vec());
        Ok(())
    }
    fn send_response(&mut self, status: u32, headers: &[(&str, &[u8])], body: &[u8]) -> Result<(), HostError> {
        self.sent = Some((status, body.to_vec()));
        self.sent_headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect();
        Ok(())
    }
    fn dispatch_route(&mut self, upstream: &[u8], message: &[u8], _timeout: Duration) -> Result<u32, HostError> {
        assert_eq!(
            upstream,
            llmsoup_contract::upstream::grpc_service("llmsoup_sidecar", None).as_slice()
        );
        if self.dispatch_fails {
            return Err(HostError("BadArgument".into()));
        }
        self.routes.push(v1::RouteRequest::decode(message).unwrap());
        Ok(7)
    }
    fn grpc_response(&self, _size: usize) -> Option<Vec<u8>> {
        Some(self.grpc_resp.clone())
    }
    fn clear_route_cache(&mut self) -> Result<(), HostError> {
        self.cleared += 1;
        Ok(())
    }
    fn resume_request(&mut self) -> Result<(), HostError> {
        self.resumed += 1;
        Ok(())
    }
    fn warn(&self, message: &str) {
        self.warnings.borrow_mut().push(message.to_string());
    }
}

fn plugin(tokens: &[&str], closed: bool) -> Rc<Plugin> {
    let hashes: Vec<String> = tokens
        .iter()
        .map(|t| hex::encode(Sha256::digest(t.as_bytes())))
        .collect();
    let json = serde_json::json!({
        "sidecar_cluster": "llmsoup_sidecar",
        "failure_mode": if closed { "closed" } else { "open" },
        "max_body_bytes": 64,
        "token_sha256": hashes,
        "token_names": tokens.iter().map(|t| format!("client-{t}")).collect::<Vec<_>>(),
        "models": {"small": "small-v1", "coder": "coder-v2"},
        "default_model": "small",
        "route_header": "x-selected-model",
    });
    Rc::new(Plugin::parse(json.to_string().as_bytes()).unwrap())
}

fn filter(p: Rc<Plugin>, headers: &[(&str, &str)], body: &str) -> Filter<Fake> {
    let fake = Fake {
        req_headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect(),
        req_body: body.as_bytes().to_vec(),
        ..Default::default()
    };
    Filter::new(fake, p, Rc::new(RefCell::new(Vec::new())))
}

const BASE: &[(&str, &str)] = &[
    (":method", "POST"),
    (":path", "/v1/chat/completions"),
    ("content-type", "application/json"),
];

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    BASE.iter().copied().chain(extra.iter().copied()).collect()
}

fn forward_response(model: &str, body: Option<&str>) -> Vec<u8> {
    v1::RouteResponse {
        action: Some(RouteAction::Forward(v1::Forward {
            set_headers: vec![v1::Header {
                name: "x-llmsoup-model".into(),
                value: model.as_bytes().to_vec(),
            }],
            remove_headers: vec![],
            body: body.map(|b| b.as_bytes().to_vec()),
            append_headers: vec![],
            ..Default::default()
        })),
        response_headers: vec![v1::Header {
            name: "x-llmsoup-model".into(),
            value: model.as_bytes().to_vec(),
        }],
        model: model.into(),
        decision: "coding".into(),
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn a_cache_leader_returns_its_whole_answer_with_its_report() {
    let body = r#"{"model":"auto","messages":[]}"#;
    let answer = br#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
    let run = |capture: u32, cut: bool| {
        let mut f = filter(plugin(&[], false), BASE, body);
        f.on_request_headers(false);
        f.on_request_body(body.len(), true);
        let mut resp = v1::RouteResponse::decode(forward_response("coder", None).as_slice()).unwrap();
        resp.cache_key = "ab".repeat(32);
        resp.cache_capture_bytes = capture;
        f.host_mut().grpc_resp = resp.encode_to_vec();
        f.on_route_response(7, 0, 0);
        f.host_mut().resp_headers = vec![
            (":status".into(), b"200".to_vec()),
            ("content-type".into(), b"application/json".to_vec()),
        ];
        f.on_response_headers();
        f.host_mut().resp_chunk = answer.to_vec();
        f.on_response_body(answer.len(), !cut);
        f.on_done();
        let q = f.reports.borrow();
        assert_eq!(q.len(), 1);
        (
            q[0].cache_key.clone(),
            q[0].response_body.clone(),
            q[0].completion_tokens,
        )
    };
    assert_eq!(run(1024, false), ("ab".repeat(32), answer.to_vec(), 2));
    assert_eq!(
        run(8, false).1,
        b"",
        "over the capture bound: no body, the ticket still goes back"
    );
    assert_eq!(run(1024, true).1, b"", "cut short: no body");
}

#[test]
fn routes_through_the_sidecar_and_applies_mutations() {
    let body = r#"{"model":"auto","messages":[]}"#;
    let mut f = filter(
        plugin(&[], false),
        &with(&[("x-llmsoup-model", "spoof"), ("x-request-id", "r1")]),
        body,
    );
    assert_eq!(f.on_request_headers(false), Next::Pause);
    assert!(f.host().header("x-llmsoup-model").is_none(), "spoofed header stripped");
    assert_eq!(f.on_request_body(10, false), Next::Pause);
    assert_eq!(f.on_request_body(body.len(), true), Next::Pause);
    let sent = &f.host().routes[0];
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str(), sent.request_id.as_str()),
        ("POST", "/v1/chat/completions", "r1")
    );
    assert_eq!(sent.body, body.as_bytes());

    let new_body = r#"{"model":"coder-v2","messages":[]}"#;
    f.host_mut().grpc_resp = forward_response("coder", Some(new_body));
    f.on_route_response(7, 0, 0);
    let h = f.host();
    assert_eq!(h.header("x-llmsoup-model"), Some(b"coder".as_slice()));
    assert_eq!(h.req_body, new_body.as_bytes());
    assert_eq!(h.header("content-length"), Some(new_body.len().to_string().as_bytes()));
    assert_eq!((h.cleared, h.resumed), (1, 1));

    // Response side: headers added, usage read from the passing body, report queued.
    f.host_mut().resp_headers = vec![
        (":status".into(), b"200".to_vec()),
        ("content-type".into(), b"application/json".to_vec()),
    ];
    f.host_mut().now_ms = 40;
    assert_eq!(f.on_response_headers(), Next::Continue);
    assert!(
        f.host()
            .resp_headers
            .iter()
            .any(|(k, v)| k == "x-llmsoup-model" && v == b"coder")
    );
    f.host_mut().resp_chunk = br#"{"usage":{"prompt_tokens":3,"completion_tokens":4}}"#.to_vec();
    assert_eq!(f.on_response_body(10, true), Next::Continue);
    f.on_done();
    let q = f.reports.borrow();
    assert_eq!(q.len(), 1, "reported exactly once");
    let r = &q[0];
    assert_eq!(
        (
            r.model.as_str(),
            r.status,
            r.prompt_tokens,
            r.completion_tokens,
            r.usage_seen
        ),
        ("coder", 200, 3, 4, true)
    );
    assert_eq!(r.time_to_first_byte_us, 40_000);
}

#[test]
fn without_response_accounting_bodies_are_not_read_but_requests_are_reported() {
    let body = r#"{"model":"auto","messages":[]}"#;
    let mut json: serde_json::Value = serde_json::json!({
        "sidecar_cluster": "llmsoup_sidecar",
        "models": {"small": "small-v1", "coder": "coder-v2"},
        "default_model": "small",
        "response_accounting": false,
    });
    let off = Rc::new(Plugin::parse(json.to_string().as_bytes()).unwrap());
    let mut f = filter(off, &with(&[("x-request-id", "r2")]), body);
    assert_eq!(f.on_request_headers(false), Next::Pause);
    assert_eq!(f.on_request_body(body.len(), true), Next::Pause);
    f.host_mut().grpc_resp = forward_response("coder", None);
    f.on_route_response(7, 0, 0);
    f.host_mut().resp_headers = vec![
        (":status".into(), b"200".to_vec()),
        ("content-type".into(), b"text/event-stream".to_vec()),
    ];
    f.host_mut().now_ms = 25;
    assert_eq!(f.on_response_headers(), Next::Continue);
    f.host_mut().resp_chunk = br#"data: {"usage":{"prompt_tokens":3,"completion_tokens":4}}

"#
    .to_vec();
    assert_eq!(f.on_response_body(60, false), Next::Continue);
    assert_eq!(f.on_response_body(0, true), Next::Continue);
    assert_eq!(f.host().body_reads.get(), 0, "no response chunk copied into the VM");
    let q = f.reports.borrow();
    assert_eq!(q.len(), 1);
    let r = &q[0];
    assert_eq!(
        (r.model.as_str(), r.status, r.stream, r.completion_tokens, r.usage_seen),
        ("coder", 200, true, 0, false)
    );
    assert_eq!(r.time_to_first_byte_us, 25_000);

    json["response_accounting"] = serde_json::json!(true);
    assert!(
        Plugin::parse(json.to_string().as_bytes())
            .unwrap()
            .config
            .response_accounting
    );
}

#[test]
fn auth_rejects_locally_and_strips_the_token() {
    let p = plugin(&["good"], false);
    let mut f = filter(p.clone(), BASE, "");
    assert_eq!(f.on_request_headers(false), Next::Pause);
    let (status, body) = f.host().sent.clone().unwrap();
    assert_eq!(status, 401);
    assert!(String::from_utf8(body).unwrap().contains("invalid_api_key"));
    assert_eq!(f.on_request_body(3, true), Next::Pause);
    assert!(f.host().routes.is_empty(), "no Route call after a local reply");

    let mut f = filter(p.clone(), &with(&[("authorization", "Bearer bad")]), "");
    f.on_request_headers(false);
    assert_eq!(f.host().sent.as_ref().unwrap().0, 401);

    let mut f = filter(p, &with(&[("authorization", "Bearer good")]), "{}");
    assert_eq!(f.on_request_headers(false), Next::Pause);
    assert!(f.host().sent.is_none());
    assert!(f.host().header("authorization").is_none());
    f.on_request_body(2, true);
    assert_eq!(f.host().routes[0].client, "client-good");

    // The tenant the rate limit filter reads is the checked token's name, never the client's.
    let mut f = filter(
        plugin(&["good"], false),
        &with(&[("authorization", "Bearer good"), ("x-llmsoup-tenant", "mallory")]),
        "{}",
    );
    f.on_request_headers(false);
    assert_eq!(f.host().header("x-llmsoup-tenant"), Some(b"client-good".as_slice()));
    // Without auth there is no tenant, and a client's is removed.
    let mut f = filter(plugin(&[], false), &with(&[("x-llmsoup-tenant", "mallory")]), "{}");
    f.on_request_headers(false);
    assert_eq!(f.host().header("x-llmsoup-tenant"), None);
}

#[test]
fn oversize_body_is_413() {
    let mut f = filter(plugin(&[], false), BASE, "");
    f.on_request_headers(false);
    assert_eq!(f.on_request_body(65, false), Next::Pause);
    assert_eq!(f.host().sent.as_ref().unwrap().0, 413);
}

#[test]
fn sidecar_failure_fails_open_or_closed() {
    let body = r#"{"model":"auto"}"#;
    let mut f = filter(plugin(&[], false), BASE, body);
    f.on_request_headers(false);
    f.on_request_body(body.len(), true);
    f.on_route_response(7, 14, 0); // UNAVAILABLE
    let h = f.host();
    assert_eq!(h.req_body, br#"{"model":"small-v1"}"#);
    assert_eq!(h.header("x-llmsoup-model"), Some(b"small".as_slice()));
    assert_eq!(
        h.header("x-selected-model"),
        Some(b"small".as_slice()),
        "fail-open sets the route header too"
    );
    assert_eq!((h.cleared, h.resumed), (1, 1));
    f.host_mut().resp_headers = vec![(":status".into(), b"200".to_vec())];
    f.on_response_headers();
    assert!(
        f.host()
            .resp_headers
            .iter()
            .any(|(k, v)| k == "x-llmsoup-decision" && v == b"fail-open")
    );

    let mut f = filter(plugin(&[], false), BASE, r#"{"model":"coder"}"#);
    f.host_mut().dispatch_fails = true;
    f.on_request_headers(false);
    f.on_request_body(17, true);
    assert_eq!(f.host().req_body, br#"{"model":"coder-v2"}"#);

    let mut f = filter(plugin(&[], true), BASE, body);
    f.on_request_headers(false);
    f.on_request_body(body.len(), true);
    f.on_route_response(7, 4, 0); // DEADLINE_EXCEEDED
    assert_eq!(f.host().sent.as_ref().unwrap().0, 503);
    assert_eq!(f.host().resumed, 0);
}

#[test]
fn immediate_replies_and_garbage_responses() {
    let mut f = filter(plugin(&[], false), BASE, "{");
    f.on_request_headers(false);
    f.on_request_body(1, true);
    f.host_mut().grpc_resp = v1::RouteResponse {
        action: Some(RouteAction::Reply(v1::ImmediateReply {
            status: 400,
            headers: vec![],
            body: b"{\"error\":{}}".to_vec(),
        })),
        ..Default::default()
    }
    .encode_to_vec();
    f.on_route_response(7, 0, 0);
    assert_eq!(f.host().sent.as_ref().unwrap().0, 400);

    // A response for another call is ignored; garbage fails open without panicking.
    let mut f = filter(plugin(&[], false), BASE, r#"{"model":"auto"}"#);
    f.on_request_headers(false);
    f.on_request_body(16, true);
    f.on_route_response(99, 0, 0);
    assert_eq!(f.host().resumed, 0);
    f.host_mut().grpc_resp = vec![0xff, 0xff, 0xff];
    f.on_route_response(7, 0, 3);
    assert_eq!(f.host().resumed, 1);
    assert!(f.host().warnings.borrow().iter().any(|w| w.contains("undecodable")));
}

#[test]
fn bodiless_requests_still_ask_the_sidecar() {
    let mut f = filter(plugin(&[], false), &[(":method", "GET"), (":path", "/v1/models")], "");
    assert_eq!(f.on_request_headers(true), Next::Pause);
    assert_eq!(f.host().routes.len(), 1);
    assert!(f.host().routes[0].body.is_empty());
}

#[test]
fn config_errors_are_reported() {
    assert!(Plugin::parse(b"{}").unwrap_err().contains("sidecar_cluster"));
    let bad = serde_json::json!({"sidecar_cluster": "x", "models": {"a": "b"}, "default_model": "zzz"});
    assert!(Plugin::parse(bad.to_string().as_bytes()).unwrap_err().contains("zzz"));
    let _ = HashMap::<String, String>::new();
}

#[test]
fn header_mutations_remove_then_set_then_append() {
    let body = r#"{"model":"auto"}"#;
    let mut f = filter(
        plugin(&[], false),
        &with(&[("x-debug", "1"), ("x-team", "red"), ("x-selected-model", "spoof")]),
        body,
    );
    f.on_request_headers(false);
    assert!(
        f.host().header("x-selected-model").is_none(),
        "the configured route header is stripped like x-llmsoup-*"
    );
    f.on_request_body(body.len(), true);
    let h = |name: &str, value: &str| v1::Header {
        name: name.into(),
        value: value.as_bytes().to_vec(),
    };
    f.host_mut().grpc_resp = v1::RouteResponse {
        action: Some(RouteAction::Forward(v1::Forward {
            set_headers: vec![h("x-llmsoup-model", "coder"), h("x-tier", "gold")],
            remove_headers: vec!["x-debug".into()],
            body: None,
            append_headers: vec![h("x-team", "blue")],
            ..Default::default()
        })),
        model: "coder".into(),
        ..Default::default()
    }
    .encode_to_vec();
    f.on_route_response(7, 0, 0);
    let got = &f.host().req_headers;
    assert!(!got.iter().any(|(k, _)| k == "x-debug"));
    assert_eq!(f.host().header("x-tier"), Some(b"gold".as_slice()));
    let teams: Vec<&[u8]> = got
        .iter()
        .filter(|(k, _)| k == "x-team")
        .map(|(_, v)| v.as_slice())
        .collect();
    assert_eq!(teams, [b"red".as_slice(), b"blue".as_slice()]);
    assert_eq!(f.host().resumed, 1);
}

/// HTTP/2 trailers: the body callback never says end of stream; the trailers callback routes
/// the buffered body and holds the request until the answer, whose mutations then apply.
#[test]
fn a_body_followed_by_trailers_is_routed_before_it_goes_on() {
    let body = r#"{"model":"auto","messages":[]}"#;
    let mut f = filter(plugin(&[], false), BASE, body);
    assert_eq!(f.on_request_headers(false), Next::Pause);
    assert_eq!(f.on_request_body(body.len(), false), Next::Pause);
    assert!(f.host().routes.is_empty());
    assert_eq!(f.on_request_trailers(), Next::Pause, "held until the Route answer");
    assert_eq!(f.host().routes.len(), 1);
    assert_eq!(f.host().routes[0].body, body.as_bytes());
    assert_eq!(f.host().resumed, 0);
    let new_body = r#"{"model":"coder-v2","messages":[]}"#;
    f.host_mut().grpc_resp = forward_response("coder", Some(new_body));
    f.on_route_response(7, 0, 0);
    let h = f.host();
    assert_eq!(
        h.req_body,
        new_body.as_bytes(),
        "the body mutation applies from the trailers phase"
    );
    assert_eq!(h.header("x-llmsoup-model"), Some(b"coder".as_slice()));
    assert_eq!(h.header("content-length"), Some(new_body.len().to_string().as_bytes()));
    assert_eq!((h.cleared, h.resumed), (1, 1));

    // A blocking answer (fast_response, a refusal) is a local reply; nothing resumes.
    let mut f = filter(plugin(&[], false), BASE, body);
    f.on_request_headers(false);
    f.on_request_body(body.len(), false);
    f.on_request_trailers();
    f.host_mut().grpc_resp = v1::RouteResponse {
        action: Some(RouteAction::Reply(v1::ImmediateReply {
            status: 403,
            headers: vec![],
            body: b"{\"error\":{}}".to_vec(),
        })),
        ..Default::default()
    }
    .encode_to_vec();
    f.on_route_response(7, 0, 0);
    assert_eq!((f.host().sent.as_ref().unwrap().0, f.host().resumed), (403, 0));
}

#[test]
fn trailers_only_requests_are_routed_with_an_empty_body() {
    // HEADERS then trailers, no DATA: no body callback at all.
    let mut f = filter(plugin(&[], false), BASE, "");
    assert_eq!(f.on_request_headers(false), Next::Pause);
    assert_eq!(f.on_request_trailers(), Next::Pause);
    assert_eq!(f.host().routes.len(), 1);
    assert!(f.host().routes[0].body.is_empty());
    // Sidecar down: an empty POST cannot fail open; it is a 400, not a pass.
    f.on_route_response(7, 14, 0);
    let (status, body) = f.host().sent.clone().unwrap();
    assert_eq!((status, f.host().resumed), (400, 0));
    assert!(String::from_utf8(body).unwrap().contains("invalid_json"));

    // Trailers after a body over the limit: 413, no Route call.
    let big = "x".repeat(65);
    let mut f = filter(plugin(&[], false), BASE, &big);
    f.on_request_headers(false);
    assert_eq!(f.on_request_trailers(), Next::Pause);
    assert_eq!(f.host().sent.as_ref().unwrap().0, 413);
    assert!(f.host().routes.is_empty());
}

#[test]
fn fail_open_refuses_bodies_the_sidecar_would_refuse() {
    for (body, code) in [
        (r#"{"model":"auto","model":"coder"}"#, "invalid_json"),
        (r#"{"model":"auto","mod\u0065l":"coder"}"#, "invalid_json"),
        (r#"{"model":null}"#, "missing_model"),
        (r#"{"model":["coder"]}"#, "invalid_model"),
        (r#"{"model":7}"#, "invalid_model"),
        (r#"{"messages":[]}"#, "missing_model"),
        ("{not json", "invalid_json"),
    ] {
        let mut f = filter(plugin(&[], false), BASE, body);
        f.on_request_headers(false);
        f.on_request_body(body.len(), true);
        f.on_route_response(7, 14, 0);
        let h = f.host();
        let (status, sent) = h.sent.clone().unwrap_or_else(|| panic!("{body}: forwarded"));
        let v: serde_json::Value = serde_json::from_slice(&sent).unwrap();
        assert_eq!((status, v["error"]["code"].as_str()), (400, Some(code)), "{body}");
        assert_eq!(h.resumed, 0, "{body}: never forwarded unchanged");
        assert_eq!(h.req_body, body.as_bytes());
        assert!(
            h.sent_headers
                .iter()
                .any(|(k, v)| k == "x-llmsoup-decision" && v == b"fail-open")
        );
    }
    // An escaped `model` key is the model key: rewritten like any other.
    let body = r#"{"mod\u0065l":"coder"}"#;
    let mut f = filter(plugin(&[], false), BASE, body);
    f.on_request_headers(false);
    f.on_request_body(body.len(), true);
    f.on_route_response(7, 14, 0);
    assert_eq!(f.host().req_body, br#"{"mod\u0065l":"coder-v2"}"#);
    assert_eq!(f.host().resumed, 1);
}

#[test]
fn fail_open_leaves_bodyless_non_post_requests_to_the_route_table() {
    let mut f = filter(plugin(&[], false), &[(":method", "GET"), (":path", "/v1/files")], "");
    assert_eq!(f.on_request_headers(true), Next::Pause);
    f.on_route_response(7, 14, 0);
    let h = f.host();
    // Unrouted: no x-llmsoup-model, so Envoy's route table answers 404 (no provider route).
    assert!(h.sent.is_none() && h.header("x-llmsoup-model").is_none());
    assert_eq!((h.resumed, h.cleared), (1, 0));
}

#[test]
fn a_fallback_chain_answer_names_and_accounts_the_model_that_answered() {
    let body = r#"{"model":"auto","messages":[]}"#;
    let mut f = filter(plugin(&[], false), BASE, body);
    assert_eq!(f.on_request_headers(false), Next::Pause);
    assert_eq!(f.on_request_body(body.len(), true), Next::Pause);
    let mut resp = v1::RouteResponse::decode(forward_response("prim", None).as_slice()).unwrap();
    if let Some(RouteAction::Forward(fw)) = resp.action.as_mut() {
        fw.set_headers.push(v1::Header {
            name: "x-llmsoup-chain".into(),
            value: b"prim,fb".to_vec(),
        });
    }
    f.host_mut().grpc_resp = resp.encode_to_vec();
    f.on_route_response(7, 0, 0);
    assert_eq!(f.host().header("x-llmsoup-chain"), Some(b"prim,fb".as_slice()));

    // Envoy's per-attempt filter says which models it tried: the last one answered.
    f.host_mut().resp_headers = vec![
        (":status".into(), b"200".to_vec()),
        ("content-type".into(), b"application/json".to_vec()),
        ("x-llmsoup-attempts".into(), b"prim,fb".to_vec()),
    ];
    assert_eq!(f.on_response_headers(), Next::Continue);
    let models: Vec<&[u8]> = f
        .host()
        .resp_headers
        .iter()
        .filter(|(k, _)| k == "x-llmsoup-model")
        .map(|(_, v)| v.as_slice())
        .collect();
    assert_eq!(models, [b"fb".as_slice()]);
    f.on_done();
    let q = f.reports.borrow();
    assert_eq!(
        (q[0].model.as_str(), q[0].failed_models.clone()),
        ("fb", vec!["prim".to_string()])
    );
}

#[test]
fn an_attempts_header_without_a_chain_is_not_believed() {
    let body = r#"{"model":"auto","messages":[]}"#;
    let mut f = filter(plugin(&[], false), BASE, body);
    f.on_request_headers(false);
    f.on_request_body(body.len(), true);
    f.host_mut().grpc_resp = forward_response("coder", None);
    f.on_route_response(7, 0, 0);
    // A provider sending its own header changes nothing.
    f.host_mut().resp_headers = vec![
        (":status".into(), b"200".to_vec()),
        ("x-llmsoup-attempts".into(), b"other".to_vec()),
    ];
    f.on_response_headers();
    f.on_done();
    let q = f.reports.borrow();
    assert_eq!((q[0].model.as_str(), q[0].failed_models.len()), ("coder", 0));
}

/// A translated request's response: `content-length` removed, SSE rewritten chunk by chunk (the
/// provider's bytes accounted), a JSON body held until it is whole.
#[test]
fn translated_responses_are_rewritten_in_the_filter() {
    let body = r#"{"model":"auto","messages":[]}"#;
    let routed = |sse: bool| {
        let mut f = filter(plugin(&[], false), &with(&[]), body);
        f.on_request_headers(false);
        f.on_request_body(body.len(), true);
        let (translation, include_usage) = Translation::OpenAiChatFromAnthropic { include_usage: false }.to_wire();
        f.host_mut().grpc_resp = v1::RouteResponse {
            action: Some(RouteAction::Forward(v1::Forward {
                translation: translation as i32,
                client_include_usage: include_usage,
                ..Default::default()
            })),
            model: "coder".into(),
            ..Default::default()
        }
        .encode_to_vec();
        f.on_route_response(7, 0, 0);
        f.host_mut().resp_headers = vec![
            (":status".into(), b"200".to_vec()),
            (
                "content-type".into(),
                if sse {
                    &b"text/event-stream"[..]
                } else {
                    b"application/json"
                }
                .to_vec(),
            ),
            ("content-length".into(), b"999".to_vec()),
        ];
        assert_eq!(f.on_response_headers(), Next::Continue);
        assert_eq!(f.host().removed_resp_headers, ["content-length"]);
        f
    };

    let mut f = routed(true);
    let events = [
        &b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m1\",\"model\":\"c\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_del"[..],
        b"ta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n",
        b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":7}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    ];
    for (i, e) in events.iter().enumerate() {
        f.host_mut().resp_chunk = e.to_vec();
        assert_eq!(f.on_response_body(e.len(), i == events.len() - 1), Next::Continue);
    }
    let out: Vec<String> = f
        .host()
        .resp_out
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    assert_eq!(out.len(), 3, "one replacement per chunk");
    assert!(
        out[0].starts_with("data: {") && out[0].contains("\"role\":\"assistant\""),
        "{out:?}"
    );
    assert!(out[1].contains("\"content\":\"hi\""), "{out:?}");
    assert!(out[2].contains("\"finish_reason\":\"stop\"") && out[2].ends_with("data: [DONE]\n\n"));
    let q = f.reports.borrow();
    assert_eq!(
        (q[0].prompt_tokens, q[0].completion_tokens),
        (5, 7),
        "the provider's usage is accounted"
    );
    drop(q);

    let mut f = routed(false);
    assert_eq!(
        f.on_response_body(10, false),
        Next::Pause,
        "a JSON body is held until whole"
    );
    assert!(f.host().resp_out.is_empty());
    f.host_mut().resp_chunk = br#"{"id":"m2","type":"message","model":"c","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn","usage":{"input_tokens":2,"output_tokens":3}}"#.to_vec();
    assert_eq!(f.on_response_body(20, true), Next::Continue);
    let out: serde_json::Value = serde_json::from_slice(&f.host().resp_out[0]).unwrap();
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["choices"][0]["message"]["content"], "ok");
    assert_eq!(out["usage"]["total_tokens"], 5);
}

#[test]
fn a_plan_routes_locally_without_the_route_call_and_reports_the_decision() {
    use llmsoup_contract::v1::rule_node;
    let plan = v1::LocalPlan {
        keyword_rules: vec![v1::KeywordRule {
            name: "code".into(),
            keywords: vec!["python".into()],
            ..Default::default()
        }],
        decisions: vec![v1::LocalDecision {
            name: "coding".into(),
            rule: Some(v1::RuleNode {
                node: Some(rule_node::Node::Leaf(v1::RuleLeaf {
                    kind: "keyword".into(),
                    name: "code".into(),
                })),
            }),
            model: "coder".into(),
            ..Default::default()
        }],
        auto_models: vec!["auto".into()],
        paths: vec!["/v1/chat/completions".into()],
        ..Default::default()
    };
    let json = serde_json::json!({
        "sidecar_cluster": "llmsoup_sidecar",
        "models": {"small": "small-v1", "coder": "coder-v2"},
        "default_model": "small",
        "route_header": "x-selected-model",
        "local_plan": llmsoup_contract::plugin_config::encode_plan(&plan),
    });
    let p = Rc::new(Plugin::parse(json.to_string().as_bytes()).unwrap());
    let local = crate::local::Local::new(&p).unwrap().map(Rc::new);
    let body = r#"{"model":"auto","messages":[{"role":"user","content":"python"}]}"#;
    let mut f = filter(p.clone(), &with(&[("x-request-id", "r1")]), body).with_local(local.clone());
    assert_eq!(f.on_request_headers(false), Next::Pause);
    assert_eq!(f.on_request_body(body.len(), true), Next::Continue);
    let h = f.host();
    assert!(h.routes.is_empty(), "no Route call");
    assert_eq!(h.header("x-llmsoup-model"), Some(b"coder".as_slice()));
    assert_eq!(h.header("x-selected-model"), Some(b"coder".as_slice()));
    let new_body = r#"{"model":"coder-v2","messages":[{"role":"user","content":"python"}]}"#;
    assert_eq!(h.req_body, new_body.as_bytes());
    assert_eq!(h.header("content-length"), Some(new_body.len().to_string().as_bytes()));
    assert_eq!(h.cleared, 1);
    f.host_mut().resp_headers = vec![(":status".into(), b"200".to_vec())];
    assert_eq!(f.on_response_headers(), Next::Continue);
    let decision = f
        .host()
        .resp_headers
        .iter()
        .find(|(k, _)| k == "x-llmsoup-decision")
        .cloned();
    assert_eq!(decision.map(|(_, v)| v), Some(b"coding".to_vec()));
    assert_eq!(f.on_response_body(0, true), Next::Continue);
    let q = f.reports.borrow();
    let record = q[0]
        .local_route
        .as_ref()
        .expect("the decision record rides on the report");
    assert_eq!(
        (
            q[0].model.as_str(),
            q[0].decision.as_str(),
            record.signals.as_str(),
            record.routed
        ),
        ("coder", "coding", "keyword:code", true)
    );
    drop(q);

    // Not covered by the plan (another API): the Route call as before.
    let anthropic = [
        (":method", "POST"),
        (":path", "/v1/messages"),
        ("content-type", "application/json"),
    ];
    let mut f = filter(p, &anthropic, body).with_local(local);
    f.on_request_headers(false);
    assert_eq!(f.on_request_body(body.len(), true), Next::Pause);
    assert_eq!(f.host().routes.len(), 1);
}
