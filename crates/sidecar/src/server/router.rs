//! llmsoup's own `Router` gRPC service, called by the proxy-wasm filter: one unary Route call per
//! request (the same engine as ext_proc), and Report for response-side facts.

use llmsoup_contract::outcome::Outcome;
use llmsoup_contract::v1::{
    self, ReportAck, RouteRequest, RouteResponse, UsageReports, route_response::Action, router_server::Router,
};
use llmsoup_router::engine;
use tonic::{Request, Response, Status};

use super::Shared;
use crate::observe::accounting;

/// The Router gRPC service.
#[derive(Clone)]
pub struct RouterService {
    shared: Shared,
}

impl RouterService {
    /// Serves with the live engine, publishing to the observer.
    pub fn new(shared: Shared) -> Self {
        RouterService { shared }
    }
}

fn header(name: &str, value: impl Into<Vec<u8>>) -> v1::Header {
    v1::Header {
        name: name.to_string(),
        value: value.into(),
    }
}

/// Maps the engine's answer to the wire.
pub fn to_response(outcome: Option<Outcome>) -> RouteResponse {
    match outcome {
        None => RouteResponse::default(),
        Some(Outcome::Reply(r)) => RouteResponse {
            action: Some(Action::Reply(v1::ImmediateReply {
                status: u32::from(r.status),
                headers: r.headers.iter().map(|(k, v)| header(k, v.as_bytes())).collect(),
                body: r.body,
            })),
            ..Default::default()
        },
        Some(Outcome::Forward(f)) => RouteResponse {
            response_headers: f
                .summary
                .response_headers()
                .into_iter()
                .map(|(k, v)| header(k, v.into_bytes()))
                .collect(),
            model: f.summary.model.clone(),
            decision: f.summary.decision.clone().unwrap_or_default(),
            action: Some(Action::Forward({
                let (translation, client_include_usage) = f.translation.to_wire();
                v1::Forward {
                    set_headers: f.set_headers.iter().map(|(k, v)| header(k, v.as_bytes())).collect(),
                    remove_headers: f.remove_headers.into_iter().map(String::from).collect(),
                    body: f.body,
                    append_headers: f.append_headers.iter().map(|(k, v)| header(k, v.as_bytes())).collect(),
                    translation: translation as i32,
                    client_include_usage,
                }
            })),
            ..Default::default()
        },
    }
}

#[tonic::async_trait]
impl Router for RouterService {
    async fn route(&self, request: Request<RouteRequest>) -> Result<Response<RouteResponse>, Status> {
        let req = request.into_inner();
        let engine = self.shared.engine.load_full();
        let observer = &self.shared.observer;
        // The same gate as ext_proc's headers phase: only a POST with a body is routed.
        let outcome = match engine.on_headers(&req.method, &req.path, !req.body.is_empty()) {
            Some((reply, trace)) => {
                observer.on_gate(&trace);
                Some(reply)
            }
            None => {
                let (mut outcome, mut trace) = engine
                    .handle(engine::Request {
                        path: &req.path,
                        body: &req.body,
                        request_id: &req.request_id,
                        client: &req.client,
                    })
                    .await;
                let ticket = crate::cache::apply(observer.cache(), &engine, &mut outcome, &mut trace).await;
                observer.on_route(&req.request_id, &outcome, &trace);
                let mut response = to_response(Some(outcome));
                if let Some(key) = ticket {
                    // The filter captures the answer and returns it with its usage report.
                    response.cache_key = hex::encode(key);
                    response.cache_capture_bytes =
                        u32::try_from(observer.cache().max_entry_bytes()).unwrap_or(u32::MAX);
                }
                return Ok(Response::new(response));
            }
        };
        Ok(Response::new(to_response(outcome)))
    }

    async fn report(&self, request: Request<UsageReports>) -> Result<Response<ReportAck>, Status> {
        let engine = self.shared.engine.load_full();
        let reports = request.into_inner().reports;
        for r in reports.iter().take(accounting::MAX_REPORTS_PER_CALL) {
            self.shared.observer.report(&engine, r);
        }
        let excess = reports.len().saturating_sub(accounting::MAX_REPORTS_PER_CALL);
        if excess > 0 {
            tracing::warn!(excess, "Report call over the per-call bound; extra reports dropped");
            accounting::dropped(&self.shared.observer, accounting::Dropped::TooMany, excess as u64);
        }
        Ok(Response::new(ReportAck {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmsoup_contract::outcome::{Forward, Reply, Summary, Translation};

    /// A request the wasm filter routed with its plan is published from its report as a Route
    /// call's trace would be: the decision log has it, feedback knows its id, the backends
    /// count it; a record the running config does not know is not published, its usage still is.
    #[tokio::test]
    async fn a_local_route_record_is_published_like_a_route_call() {
        use llmsoup_contract::v1::{LocalRoute, UsageReport};
        use std::sync::Arc;

        let dir = std::env::temp_dir().join(format!("llmsoup-local-{}", std::process::id()));
        let path = dir.join("decisions.jsonl");
        let text = format!(
            "
providers: [{{name: p, base_url: 'http://127.0.0.1:1/v1'}}]
models: [{{name: small, provider: p}}, {{name: coder, provider: p}}]
signals:
  keywords: [{{name: code, keywords: [python]}}]
decisions:
  - {{name: coding, rules: {{type: keyword, name: code}}, modelRefs: [{{model: coder}}]}}
routing: {{default_model: small}}
decision_log: {{path: '{}'}}
",
            path.display()
        );
        let observer = Arc::new(crate::observe::Observer::with_prometheus().unwrap());
        let engine = observer.engine(llmsoup_config::load_str(&text).unwrap()).unwrap();
        let service = RouterService::new(Shared::new(engine, observer.clone()));
        let report = |id: &str, decision: &str, signals: &str| UsageReport {
            request_id: id.into(),
            model: "coder".into(),
            decision: decision.into(),
            status: 200,
            duration_us: 1_000,
            local_route: Some(LocalRoute {
                decision: decision.into(),
                confidence: 1.0,
                signals: signals.into(),
                prompt_tokens: 3,
                latency_us: 25,
                prompt_sha256: "0".repeat(64),
                prompt: None,
                routed: true,
            }),
            ..UsageReport::default()
        };
        let reports = vec![
            report("r1", "coding", "keyword:code"),
            // A plan from before a reload that dropped the rule.
            report("r2", "coding", "keyword:gone"),
        ];
        service.report(Request::new(UsageReports { reports })).await.unwrap();

        let engine = service.shared.engine.load_full();
        let got = observer.feedback(&engine, "r1", 1.0).unwrap();
        assert_eq!(
            (got.to.decision.as_deref(), got.to.model.as_str()),
            (Some("coding"), "coder")
        );
        assert_eq!(observer.feedback(&engine, "r2", 1.0).unwrap_err().status, 404);
        let stats = observer.stats();
        assert_eq!(stats.total.requests, 2, "both usages are accounted");
        let coder = &engine.backends().snapshot()["coder"];
        assert_eq!(coder.requests, 2);
        let metrics = observer.render_metrics();
        assert!(metrics.contains("local_route_invalid"), "{metrics}");

        // The decision log's writer thread is asynchronous.
        let mut log = String::new();
        for _ in 0..200 {
            log = std::fs::read_to_string(&path).unwrap_or_default();
            if log.contains("\"feedback\"") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let routes: Vec<serde_json::Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "route")
            .collect();
        assert_eq!(routes.len(), 1, "{log}");
        assert_eq!(routes[0]["request_id"], "r1");
        assert_eq!(routes[0]["signals"], "keyword:code");
        assert_eq!(routes[0]["latency_us"], 25);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn forward_carries_every_header_mutation() {
        let r = to_response(Some(Outcome::Forward(Forward {
            remove_headers: vec!["x-debug".into()],
            set_headers: vec![("x-llmsoup-model".into(), "m".into())],
            append_headers: vec![("x-team".into(), "math".into())],
            body: None,
            translation: Translation::OpenAiChatFromAnthropic { include_usage: true },
            summary: Summary {
                model: "m".into(),
                compat: vec![("x-vsr-response-path", "upstream".into())],
                ..Summary::default()
            },
        })));
        let Some(Action::Forward(f)) = r.action else {
            panic!("expected forward")
        };
        assert_eq!(f.remove_headers, ["x-debug"]);
        assert_eq!(
            Translation::from_wire(f.translation, f.client_include_usage),
            Translation::OpenAiChatFromAnthropic { include_usage: true }
        );
        assert_eq!(
            (f.set_headers[0].name.as_str(), f.set_headers[0].value.as_slice()),
            ("x-llmsoup-model", b"m".as_slice())
        );
        assert_eq!(
            (f.append_headers[0].name.as_str(), f.append_headers[0].value.as_slice()),
            ("x-team", b"math".as_slice())
        );
        assert!(r.response_headers.iter().any(|h| h.name == "x-vsr-response-path"));
        assert_eq!(r.model, "m");

        let r = to_response(Some(Outcome::Reply(Reply {
            status: 403,
            headers: vec![("content-type", "application/json".into())],
            body: b"{}".to_vec(),
        })));
        assert!(matches!(r.action, Some(Action::Reply(ref x)) if x.status == 403));
        assert!(r.model.is_empty(), "a local reply is never reported as upstream usage");
    }
}
