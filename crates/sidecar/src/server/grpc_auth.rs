//! The gRPC port's shared secret (`server.grpc_token`): a tonic interceptor in front of the
//! ext_proc and Router services. Without it anyone who reaches the port could route requests
//! through the sidecar's engine or forge usage reports; with it only Envoy (which sends the
//! token as `initial_metadata`) and the wasm filter (which sends it on every
//! `dispatch_grpc_call`) get in. A health service, if added, is meant to stay outside it.

use llmsoup_contract::auth::{GRPC_TOKEN_METADATA, grpc_token_ok};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use super::Shared;
use crate::observe::metrics::kv;

/// Checks every call's `authorization: Bearer <grpc_token>` metadata against the running
/// config, so a reload that changes the token takes effect at once.
#[derive(Clone)]
pub struct GrpcAuth {
    shared: Shared,
}

impl GrpcAuth {
    /// Checks against the live engine's `server.grpc_token`, counting refusals in the observer.
    pub fn new(shared: Shared) -> Self {
        GrpcAuth { shared }
    }
}

impl Interceptor for GrpcAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let engine = self.shared.engine.load();
        let Some(expected) = engine.config().server.grpc_token.as_deref() else {
            return Ok(request);
        };
        let presented = request.metadata().get(GRPC_TOKEN_METADATA).map(|v| v.as_bytes());
        if grpc_token_ok(expected, presented) {
            return Ok(request);
        }
        self.shared
            .observer
            .metrics()
            .rejections
            .add(1, &[kv("code", "grpc_unauthenticated")]);
        Err(Status::unauthenticated(
            "llmsoup's gRPC port requires `authorization: Bearer <server.grpc_token>` metadata",
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use llmsoup_config::load_str;
    use llmsoup_router::engine::Engine;

    use super::*;
    use crate::observe::Observer;

    fn handle(token: Option<&str>) -> Shared {
        let server = match token {
            Some(t) => format!("server: {{grpc_token: '{t}'}}\n"),
            None => String::new(),
        };
        let text = format!(
            "{server}providers:\n  - {{name: p, base_url: 'http://127.0.0.1:1/v1'}}\nmodels:\n  - {{name: m, provider: p}}\n"
        );
        Shared::new(
            Engine::new(load_str(&text).unwrap()).unwrap(),
            Arc::new(Observer::default()),
        )
    }

    fn call(h: &Shared, metadata: Option<&str>) -> Result<(), tonic::Code> {
        let mut req = Request::new(());
        if let Some(v) = metadata {
            req.metadata_mut().insert(GRPC_TOKEN_METADATA, v.parse().unwrap());
        }
        GrpcAuth::new(h.clone()).call(req).map(|_| ()).map_err(|s| s.code())
    }

    #[test]
    fn requires_the_token_when_configured() {
        let h = handle(Some("grpc-secret-0123456789"));
        assert_eq!(call(&h, Some("Bearer grpc-secret-0123456789")), Ok(()));
        assert_eq!(call(&h, None), Err(tonic::Code::Unauthenticated));
        assert_eq!(
            call(&h, Some("Bearer grpc-secret-012345678")),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            call(&h, Some("grpc-secret-0123456789")),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(call(&h, Some("Basic Z3JwYw==")), Err(tonic::Code::Unauthenticated));
    }

    #[test]
    fn open_without_a_token_and_follows_reloads() {
        let h = handle(None);
        assert_eq!(call(&h, None), Ok(()));
        h.engine
            .store(handle(Some("grpc-secret-0123456789")).engine.load_full());
        assert_eq!(call(&h, None), Err(tonic::Code::Unauthenticated));
    }
}
