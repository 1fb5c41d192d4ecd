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
                let (outcome, trace) = engine
                    .handle(engine::Request {
                        path: &req.path,
                        body: &req.body,
                        request_id: &req.request_id,
                    })
                    .await;
                observer.on_route(&req.request_id, &outcome, &trace);
                Some(outcome)
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
