//! `alknet-http`: the node's HTTP front end. One axum [`router`](fn@router) serves every
//! route; this crate runs it over HTTP/1.1 and HTTP/2 on the runtime's TLS-over-TCP listener
//! ([`HttpTcpHandler`], ALPNs `h2` and `http/1.1`) with hyper, on the worker that accepted
//! the connection. The HTTP/3 adapter (`h3`) serves the same router over QUIC.
//!
//! Routes: `GET /health`, `GET /metrics` (Prometheus text), `POST /api/call/{operationId}`
//! (the call operations, same identity, ACL and deadlines as `alknet/call`) and
//! `GET /openapi.json`, DNS over HTTPS (`GET`/`POST /dns-query`) and the pkarr relay API
//! (`GET`/`PUT /pkarr/{key}`) when the node serves DNS, the live dashboard (`GET /`, fed by
//! `GET /api/dashboard/stream`), and the files of `[http] static_root` when set. Handlers need no tokio runtime: worker-local work (a call operation)
//! runs as a worker task ([`rt::run_local`]), timers are monoio's.

pub mod auth;
pub mod h3;
pub mod limits;
pub mod mcp_sessions;
mod metrics;
mod process_metrics;
mod request_counts;
pub mod router;
pub mod routes;
pub mod rt;
mod tcp;

use std::sync::{Arc, OnceLock};

use alknet_runtime::{DnsResolver, NodeStatus, OperationInvoker, PkarrRelay};

pub use auth::ConnInfo;
pub use limits::*;
pub use metrics::HttpMetrics;
pub use router::router;
pub use tcp::HttpTcpHandler;

/// The ALPNs served over TLS/TCP, in preference order.
pub const TCP_ALPNS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Scope that grants `GET /metrics` (unless `[http] public` lists it).
pub const METRICS_SCOPE: &str = "node:metrics";

/// What every route shares; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct HttpState(Arc<HttpShared>);

pub struct HttpShared {
    pub config: HttpConfig,
    /// Set once the server runs (the handlers are built before it starts).
    status: OnceLock<NodeStatus>,
    /// The call operations, when `alknet/call` is configured.
    pub invoker: Option<Arc<dyn OperationInvoker>>,
    pub metrics: HttpMetrics,
    pub version: &'static str,
    /// When the HTTP front end was first built (the node's start; kept across reloads):
    /// the dashboard's uptime.
    pub started: std::time::Instant,
    /// `[http] static_root`, opened once.
    pub static_files: Option<alknet_runtime::files::ConfinedDir>,
    /// MCP sessions, kept across reloads.
    pub mcp_sessions: Arc<mcp_sessions::McpSessions>,
    /// DoH and the pkarr relay API, when the node serves DNS (set once, by the binary).
    dns: OnceLock<DnsServices>,
    /// What `GET /api/webtransport` publishes (set once, by the binary).
    webtransport: OnceLock<WebTransportPublish>,
}

/// What a page needs to open a WebTransport session: the certificate hashes (when the
/// node keeps a browser-valid certificate) and which paths are served.
#[derive(Clone)]
pub struct WebTransportPublish {
    pub cert: Option<Arc<alknet_runtime::tls::WebTransportCert>>,
    pub config: h3::WebTransportConfig,
}

/// What the DNS handler lends the router: DoH's resolver and the pkarr relay's store.
#[derive(Clone, Default)]
pub struct DnsServices {
    /// Answers `GET`/`POST /dns-query` (RFC 8484).
    pub resolver: Option<Arc<dyn DnsResolver>>,
    /// Serves `GET`/`PUT /pkarr/{key}` (the pkarr relay API).
    pub relay: Option<Arc<dyn PkarrRelay>>,
}

/// Why the HTTP front end could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HttpStateError {
    #[error("http.static_root {path}: {source}")]
    StaticRoot {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl HttpState {
    /// Opens `[http] static_root` if it is set.
    pub fn new(
        config: HttpConfig,
        invoker: Option<Arc<dyn OperationInvoker>>,
    ) -> Result<Self, HttpStateError> {
        Self::build(
            config,
            invoker,
            HttpMetrics::default(),
            OnceLock::new(),
            Arc::default(),
            std::time::Instant::now(),
        )
    }

    /// The state a live reload serves new connections with: `config` and `invoker`
    /// replace this state's (`static_root` is opened again, and an error changes nothing);
    /// the request counters, the MCP sessions and the server status are kept. Connections open on this
    /// state keep it until they end.
    pub fn reconfigured(
        &self,
        config: HttpConfig,
        invoker: Option<Arc<dyn OperationInvoker>>,
    ) -> Result<Self, HttpStateError> {
        let status = OnceLock::new();
        if let Some(s) = self.0.status.get() {
            let _ = status.set(s.clone());
        }
        Self::build(
            config,
            invoker,
            self.0.metrics.clone(),
            status,
            self.0.mcp_sessions.clone(),
            self.0.started,
        )
    }

    fn build(
        config: HttpConfig,
        invoker: Option<Arc<dyn OperationInvoker>>,
        metrics: HttpMetrics,
        status: OnceLock<NodeStatus>,
        mcp_sessions: Arc<mcp_sessions::McpSessions>,
        started: std::time::Instant,
    ) -> Result<Self, HttpStateError> {
        let static_files = config
            .static_root
            .as_deref()
            .map(|path| {
                alknet_runtime::files::ConfinedDir::open(path).map_err(|source| {
                    HttpStateError::StaticRoot {
                        path: path.to_path_buf(),
                        source,
                    }
                })
            })
            .transpose()?;
        Ok(Self(Arc::new(HttpShared {
            config,
            status,
            invoker,
            metrics,
            version: env!("CARGO_PKG_VERSION"),
            started,
            static_files,
            mcp_sessions,
            dns: OnceLock::new(),
            webtransport: OnceLock::new(),
        })))
    }

    /// Hands the running server's status to the routes (`/health`, `/metrics`).
    pub fn set_status(&self, status: NodeStatus) {
        let _ = self.0.status.set(status);
    }

    /// Hands the router the DNS side (DoH, pkarr relay); the first call wins.
    pub fn set_dns(&self, services: DnsServices) {
        let _ = self.0.dns.set(services);
    }

    /// Hands the router what `GET /api/webtransport` publishes; the first call wins.
    pub fn set_webtransport(&self, publish: WebTransportPublish) {
        let _ = self.0.webtransport.set(publish);
    }

    pub fn webtransport(&self) -> Option<&WebTransportPublish> {
        self.0.webtransport.get()
    }

    /// DoH's resolver, when DNS over HTTPS is on.
    pub fn dns_resolver(&self) -> Option<Arc<dyn DnsResolver>> {
        self.0.dns.get().and_then(|d| d.resolver.clone())
    }

    /// The pkarr relay's store, when pkarr names are on.
    pub fn pkarr_relay(&self) -> Option<Arc<dyn PkarrRelay>> {
        self.0.dns.get().and_then(|d| d.relay.clone())
    }

    pub fn status(&self) -> Option<&NodeStatus> {
        self.0.status.get()
    }

    /// Whether `path` is listed in `[http] public`.
    pub fn is_public(&self, path: &str) -> bool {
        self.0.config.public.iter().any(|p| p == path)
    }
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState")
            .field("config", &self.0.config)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for HttpState {
    type Target = HttpShared;
    fn deref(&self) -> &HttpShared {
        &self.0
    }
}
