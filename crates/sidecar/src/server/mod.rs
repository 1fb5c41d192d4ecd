//! The sidecar's network front ends: Envoy's ext_proc gRPC service, llmsoup's Router service
//! (for the wasm filter) and Envoy's rate limit service (budgets) on one port — TCP, or a Unix
//! domain socket for an Envoy beside the sidecar ([`socket`]) — with config reload and graceful
//! shutdown.

mod admin;
mod dashboard;
mod envoy_sync;
mod ext_proc;
mod grpc_auth;
mod ratelimit;
mod router;
mod socket;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessorServer;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use llmsoup_config::GrpcAddress;
use llmsoup_contract::outcome::Reply;
use llmsoup_contract::v1::router_server::RouterServer;
use llmsoup_router::engine::Engine;
use tonic::service::interceptor::InterceptedService;

pub use envoy_sync::EnvoySync;
pub use ext_proc::ExtProcService;
pub use grpc_auth::GrpcAuth;
pub use ratelimit::RateLimitServer;
pub use router::RouterService;

pub use crate::source::ConfigSource;

use crate::observe::Observer;

/// The live engine; swapped atomically on reload.
pub type EngineHandle = Arc<ArcSwap<Engine>>;

/// What every service gets: the live engine and the sidecar's observed state.
#[derive(Clone)]
pub struct Shared {
    /// The live engine (a request takes one snapshot and keeps it).
    pub engine: EngineHandle,
    /// Metrics, accounting, the feed, the decision log, the backends.
    pub observer: Arc<Observer>,
    /// What Envoy has of the running config (written on reload, reported by `/ready`).
    pub envoy: Arc<EnvoySync>,
}

impl Shared {
    /// Serves `engine`, publishing to `observer` (which must be the one the engine reads its
    /// backends from: see [`Observer::engine`]), with no view of Envoy.
    pub fn new(engine: Engine, observer: Arc<Observer>) -> Self {
        Self::with_envoy(engine, observer, Arc::new(EnvoySync::detached()))
    }

    /// [`Shared::new`], keeping Envoy's resources in step through `envoy`.
    pub fn with_envoy(engine: Engine, observer: Arc<Observer>, envoy: Arc<EnvoySync>) -> Self {
        Shared {
            engine: Arc::new(ArcSwap::from_pointee(engine)),
            observer,
            envoy,
        }
    }
}

/// An engine reply as an HTTP response.
fn reply(r: Reply) -> Response {
    let mut resp = (
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        r.body,
    )
        .into_response();
    for (k, v) in r.headers {
        if let Ok(v) = v.parse() {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

/// Largest gRPC message accepted: Envoy sends whole buffered bodies in one message, so tonic's
/// 4 MiB default would refuse large prompts.
const MAX_GRPC_MESSAGE: usize = 64 * 1024 * 1024;

/// Runs the gRPC server on `config` (loaded from `source`) until SIGINT/SIGTERM; SIGHUP reloads
/// the config from `source` (a bad one is refused
/// and the running one kept). With an xDS directory (`xds_dir`, else `gateway.xds_dir`), Envoy's
/// resource files there are written at start and after every reload ([`EnvoySync`]).
pub async fn serve(
    source: ConfigSource,
    config: llmsoup_config::Config,
    xds_dir: Option<String>,
) -> anyhow::Result<()> {
    let observer = Arc::new(Observer::with_prometheus()?);
    let engine = observer.engine(config)?;
    log_model_problems(&engine);
    llmsoup_envoy::local_plan::log_status(engine.config(), engine.config().gateway.mode);
    let restored = observer.restore(&engine);
    if restored != Default::default() {
        tracing::info!(
            routes = restored.routes,
            feedback = restored.feedback,
            calibration_scores = restored.scores,
            "restored what the decision log holds"
        );
    }
    let envoy = {
        let config = engine.config().clone();
        tokio::task::spawn_blocking(move || EnvoySync::start(xds_dir, &config))
            .await
            .context("writing the Envoy resources")??
    };
    let address = engine.config().server.grpc_address()?;
    let listener = GrpcListener::bind(&address)?;
    warn_if_exposed(engine.config(), &listener);
    let shared = Shared::with_envoy(engine, observer, Arc::new(envoy));

    tokio::spawn(reload_on_sighup(source, shared.clone()));
    if let Some(admin) = &shared.engine.load().config().server.admin_listen {
        let admin: SocketAddr = admin
            .parse()
            .with_context(|| format!("server.admin_listen `{admin}` is not host:port"))?;
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = admin::serve(admin, shared).await {
                tracing::error!(error = format!("{e:#}"), "admin endpoint failed");
            }
        });
    }

    tracing::info!(%address, "llmsoup sidecar listening (ext_proc + Router gRPC)");
    // `grpc.health.v1.Health` for Envoy's active health check of the sidecar cluster (the
    // sidecar circuit breaker, see `envoy::sidecar_health_check`). Deliberately outside any
    // authentication: it reveals nothing, and Envoy's health checker sends no credentials.
    let (health, health_service) = tonic_health::server::health_reporter();
    let services = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(InterceptedService::new(
            ExternalProcessorServer::new(ExtProcService::new(shared.clone()))
                .max_decoding_message_size(MAX_GRPC_MESSAGE)
                .max_encoding_message_size(MAX_GRPC_MESSAGE),
            GrpcAuth::new(shared.clone()),
        ))
        .add_service(InterceptedService::new(
            RouterServer::new(RouterService::new(shared.clone()))
                .max_decoding_message_size(MAX_GRPC_MESSAGE)
                .max_encoding_message_size(MAX_GRPC_MESSAGE),
            GrpcAuth::new(shared.clone()),
        ))
        // Envoy's rate limit filter (budgets): same port, same token.
        .add_service(InterceptedService::new(
            RateLimitServiceServer::new(RateLimitServer::new(shared.clone())),
            GrpcAuth::new(shared.clone()),
        ));
    let drain = async move {
        shutdown_signal().await;
        // NOT_SERVING first, so Envoy stops sending new requests while in-flight ones drain.
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    };
    match listener {
        GrpcListener::Tcp(incoming) => services.serve_with_incoming_shutdown(incoming, drain).await,
        GrpcListener::Unix(socket) => {
            // The file goes when serving ends (a stale one would be replaced at the next start).
            let (incoming, _file) = socket.into_incoming();
            services.serve_with_incoming_shutdown(incoming, drain).await
        }
    }
    .context("gRPC server")?;
    tracing::info!("llmsoup sidecar stopped");
    Ok(())
}

/// The bound gRPC listener.
enum GrpcListener {
    Tcp(tonic::transport::server::TcpIncoming),
    Unix(socket::UnixSocket),
}

impl GrpcListener {
    /// Binds `address` before anything is served, so a port or socket in use stops the start.
    fn bind(address: &GrpcAddress) -> anyhow::Result<Self> {
        Ok(match address {
            GrpcAddress::Tcp(addr) => {
                let addr: SocketAddr = addr
                    .parse()
                    .with_context(|| format!("server.grpc_listen `{addr}` is not host:port"))?;
                // Nagle + delayed ACKs would add ~40 ms to every small ext_proc message.
                let incoming = tonic::transport::server::TcpIncoming::bind(addr)
                    .map_err(|e| anyhow::anyhow!("binding gRPC listener on {addr}: {e}"))?
                    .with_nodelay(Some(true));
                GrpcListener::Tcp(incoming)
            }
            GrpcAddress::Unix(path) => {
                GrpcListener::Unix(socket::UnixSocket::bind(path).context("server.grpc_listen")?)
            }
        })
    }
}

/// Loud warnings for listeners that anyone on the network can reach without a secret.
fn warn_if_exposed(config: &llmsoup_config::Config, grpc: &GrpcListener) {
    // A Unix socket is reachable only through the file system (mode 0660).
    let grpc = match grpc {
        GrpcListener::Tcp(incoming) => incoming.local_addr().ok(),
        GrpcListener::Unix(_) => None,
    };
    if let Some(grpc) = grpc
        && !grpc.ip().is_loopback()
        && config.server.grpc_token.is_none()
    {
        tracing::warn!(
            %grpc,
            "the gRPC port listens beyond loopback without `server.grpc_token`: anyone who reaches it \
             can route through the sidecar and forge usage reports"
        );
    }
    let admin = config
        .server
        .admin_listen
        .as_deref()
        .and_then(|a| a.parse::<SocketAddr>().ok());
    if let Some(admin) = admin
        && !admin.ip().is_loopback()
        && config.auth.tokens.is_empty()
    {
        tracing::warn!(
            %admin,
            "the admin endpoint listens beyond loopback without `auth.tokens`: /metrics, /stats, \
             /dashboard and /v1/feedback are open to anyone who reaches it"
        );
    }
}

/// Model signals that cannot load: an error when a blocking decision depends on one (it will
/// answer with its blocking plugin, and `/ready` says 503), else a warning (its decisions never
/// match).
fn log_model_problems(engine: &Engine) {
    for p in engine.model_problems() {
        if p.is_error() {
            tracing::error!("config: {p}");
        } else {
            tracing::warn!("config: {p}");
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

/// The config file's stamp, read off the async threads.
async fn stamp(source: &ConfigSource) -> crate::source::Stamp {
    let source = source.clone();
    tokio::task::spawn_blocking(move || source.stamp()).await.ok().flatten()
}

/// How often `server.watch_config` looks at the config file.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Reloads on SIGHUP, and when `server.watch_config` is on and the file changed. One reload at a
/// time: a signal or change during a reload is handled after it.
async fn reload_on_sighup(source: ConfigSource, shared: Shared) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seen = stamp(&source).await;
    loop {
        tokio::select! {
            signal = hup.recv() => if signal.is_none() { return },
            _ = tick.tick() => {
                if !shared.engine.load().config().server.watch_config {
                    continue;
                }
                let now = stamp(&source).await;
                if now == seen {
                    continue;
                }
                tracing::info!("config file changed; reloading");
            }
        }
        // Taken before loading, so a write that lands during the load triggers another one.
        seen = stamp(&source).await;
        reload(&source, &shared).await;
    }
}

/// Loads the config again and, when it is valid, hands Envoy its resources first (so routes,
/// clusters and tokens a reload adds are there as soon as the sidecar routes to them) and then
/// swaps the engine. Clusters the reload dropped leave Envoy a moment later, once no route can
/// still send to them.
async fn reload(source: &ConfigSource, shared: &Shared) {
    let engine = match source.load().and_then(|c| shared.observer.engine(c)) {
        Ok(engine) => engine,
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "configuration reload refused; keeping the running config"
            );
            return;
        }
    };
    log_model_problems(&engine);
    llmsoup_envoy::local_plan::log_status(engine.config(), engine.config().gateway.mode);
    let config = engine.config().clone();
    let envoy = shared.envoy.clone();
    let prune = tokio::task::spawn_blocking(move || envoy.apply(&config))
        .await
        .unwrap_or(false);
    shared.engine.store(Arc::new(engine));
    tracing::info!("configuration reloaded");
    if prune {
        let envoy = shared.envoy.clone();
        tokio::spawn(async move {
            tokio::time::sleep(envoy_sync::PRUNE_DELAY).await;
            let _ = tokio::task::spawn_blocking(move || envoy.prune()).await;
        });
    }
}
