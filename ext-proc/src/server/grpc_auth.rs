//! The gRPC port's shared secret (`server.grpc_token`): a tonic interceptor in front of the
//! ext_proc and Router services. Without it anyone who reaches the port could route requests
//! through the sidecar's engine or forge usage reports; with it only Envoy (which sends the
//! token as `initial_metadata`) and the wasm filter (which sends it on every
//! `dispatch_grpc_call`) get in. A health service, if added, is meant to stay outside it.

use llmsoup_proto::auth::{GRPC_TOKEN_METADATA, grpc_token_ok};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use super::EngineHandle;
use crate::metrics::{self, kv};

/// Checks every call's `authorization: Bearer <grpc_token>` metadata against the running
/// config, so a reload that changes the token takes effect at once.
#[derive(Clone)]
pub struct GrpcAuth {
    engine: EngineHandle,
}

impl GrpcAuth {
    /// Checks against `engine`'s `server.grpc_token`.
    pub fn new(engine: EngineHandle) -> Self {
        GrpcAuth { engine }
    }
}

impl Interceptor for GrpcAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let engine = self.engine.load();
        let Some(expected) = engine.config().server.grpc_token.as_deref() else {
            return Ok(request);
        };
        let presented = request.metadata().get(GRPC_TOKEN_METADATA).map(|v| v.as_bytes());
        if grpc_token_ok(expected, presented) {
            return Ok(request);
        }
        metrics::get().rejections.add(1, &[kv("code", "grpc_unauthenticated")]);
        Err(Status::unauthenticated(
            "llmsoup's gRPC port requires `authorization: Bearer <server.grpc_token>` metadata",
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arc_swap::ArcSwap;

    use super::*;
    use crate::config::load_str;
    use crate::engine::Engine;

    fn handle(token: Option<&str>) -> EngineHandle {
        let server = match token {
            Some(t) => format!("server: {{grpc_token: '{t}'}}\n"),
            None => String::new(),
        };
        let text = format!(
            "{server}providers:\n  - {{name: p, base_url: 'http://127.0.0.1:1/v1'}}\nmodels:\n  - {{name: m, provider: p}}\n"
        );
        Arc::new(ArcSwap::from_pointee(Engine::new(load_str(&text).unwrap()).unwrap()))
    }

    fn call(h: &EngineHandle, metadata: Option<&str>) -> Result<(), tonic::Code> {
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
        h.store(handle(Some("grpc-secret-0123456789")).load_full());
        assert_eq!(call(&h, None), Err(tonic::Code::Unauthenticated));
    }
}
