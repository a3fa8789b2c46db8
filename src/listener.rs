//! The HTTP listener that serves any [`KeyService`] over XML-RPC (`/RPC2`)
//! and JSON-RPC (`/jsonrpc`), with TLS, limits, timeouts, access logs and
//! graceful shutdown. It sits above the protocol endpoints, which sit above
//! the codecs and the method table.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use keyserver_http::server::dispatch::Dispatch;
use keyserver_http::server::{conn, gate, Endpoint, ServerConfig};

use crate::api::KeyService;
use crate::{Error, Result};

/// A running HTTP server. Dropping it does not stop it: call
/// [`HttpServer::shutdown`].
///
/// # Example
///
/// ```
/// # #[cfg(all(feature = "cipher-rustcrypto", feature = "storage-memory"))]
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use keyserver::KeyServer;
/// use keyserver::backends::{MemoryStorage, RustCrypto};
/// use keyserver::transports::{HttpServer, ServerConfig};
///
/// let keys = Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()));
/// let config = ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() };
/// let server = HttpServer::start(keys, config).await?;
/// assert!(server.url().starts_with("http://127.0.0.1:"));
/// server.shutdown().await;
/// # Ok::<(), keyserver::Error>(())
/// # }).unwrap();
/// ```
pub struct HttpServer {
    addr: SocketAddr,
    tls: bool,
    grace: Duration,
    handle: axum_server::Handle<SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl HttpServer {
    /// Binds `config.listen` and starts serving `service` in the
    /// background: a [`KeyServer`](crate::KeyServer), or any other
    /// [`KeyService`] (a [`Transport`](crate::Transport) to another server
    /// makes a proxy).
    ///
    /// # Errors
    /// [`Error::Policy`] for plain HTTP on a non-loopback address without
    /// `insecure`; [`Error::Transport`] if the address cannot be bound or the
    /// TLS files cannot be read.
    pub async fn start(service: Arc<dyn KeyService>, config: ServerConfig) -> Result<Self> {
        if config.tls.is_none() && !config.insecure && !config.listen.ip().is_loopback() {
            return Err(Error::policy(format!(
                "refusing to serve plain HTTP on the non-loopback address {}: KEKs would cross \
                 the network in clear. Configure TLS, or say insecure explicitly",
                config.listen
            )));
        }
        let mutual_tls = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        let controls_access = service
            .authenticate(&crate::api::Credentials::default())
            .is_some();
        if !controls_access && !mutual_tls && !config.insecure && !config.listen.ip().is_loopback()
        {
            return Err(Error::policy(format!(
                "refusing to serve {} without access control: anyone who reaches it could \
                 mint and fetch keys. Give an auth file (--auth) or client certificates \
                 (--client-ca), or say insecure explicitly",
                config.listen
            )));
        }
        let dispatch = Arc::new(Dispatch::with_config(service, &config, controls_access));
        let room = conn::connection_room();
        let max_connections = config.max_connections.min(room);
        if max_connections < config.max_connections {
            tracing::warn!(
                target: "keyserver::server",
                "serving at most {max_connections} connections: the descriptor limit leaves \
                 no room for {}",
                config.max_connections
            );
        }
        let limit = conn::Limit::new(
            max_connections,
            config.max_connections_per_peer,
            config.idle_timeout,
        );
        let router = router(&dispatch, &config, &limit);
        let listener = TcpListener::bind(config.listen)
            .map_err(|e| transport_error(format!("cannot listen on {}", config.listen), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| transport_error("cannot read the bound address", e))?;
        let handle = axum_server::Handle::new();
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        let tls = config.tls.is_some();
        let task = match &config.tls {
            Some(files) => {
                let rustls = keyserver_http::server_config(files)?;
                let acceptor = axum_server::tls_rustls::RustlsConfig::from_config(rustls);
                let mut server = axum_server::from_tcp_rustls(listener, acceptor)
                    .map_err(|e| transport_error("cannot start the listener", e))?
                    .map(|tls| {
                        keyserver_http::server::peer::PeerCerts(
                            tls.handshake_timeout(config.header_timeout).acceptor(limit),
                        )
                    })
                    .handle(handle.clone())
                    .first_request_timeout(config.header_timeout);
                configure_http(server.http_builder(), &config);
                tokio::spawn(server.serve(service))
            }
            None => {
                let mut server = axum_server::from_tcp(listener)
                    .map_err(|e| transport_error("cannot start the listener", e))?
                    .acceptor(limit)
                    .handle(handle.clone())
                    .first_request_timeout(config.header_timeout);
                configure_http(server.http_builder(), &config);
                tokio::spawn(server.serve(service))
            }
        };
        tracing::info!(
            target: "keyserver::server",
            "listening on {}://{addr}",
            if tls { "https" } else { "http" }
        );
        Ok(HttpServer {
            addr,
            tls,
            grace: config.shutdown_grace,
            handle,
            task,
        })
    }

    /// The former name of [`HttpServer::start`], which now serves any
    /// [`KeyService`].
    ///
    /// # Errors
    /// As for [`HttpServer::start`].
    #[deprecated(note = "use HttpServer::start, which takes any Arc<dyn KeyService>")]
    pub async fn start_api(service: Arc<dyn KeyService>, config: ServerConfig) -> Result<Self> {
        Self::start(service, config).await
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// Stops accepting connections, lets requests in flight finish (up to
    /// [`ServerConfig::shutdown_grace`]), and returns when the server has
    /// stopped. Work a request left on the blocking pool (an RSA key being
    /// generated) is not waited for: a process that exits after this should
    /// not wait for its runtime's blocking threads either (the `keyserver`
    /// binary gives them half a second).
    pub async fn shutdown(self) {
        self.handle.graceful_shutdown(Some(self.grace));
        let _ = self.task.await;
    }

    /// Runs until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }
}

/// `GET /metrics` in the Prometheus text format, to callers the service
/// lets read them ([`KeyService::may_read_metrics`]: by default those on the
/// loopback interface; with the policy layers also principals granted
/// `metrics`); 403 to anyone else. The listener's own gauges come first,
/// then the service's metrics ([`KeyService::encode_metrics`]).
fn metrics_route(dispatch: Arc<Dispatch>, connections: conn::Limit) -> Router {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let gauges = Arc::new(ListenerGauges::new());
    Router::new().route(
        "/metrics",
        axum::routing::get(move |caller: Option<axum::Extension<crate::api::Caller>>| {
            let dispatch = dispatch.bind(caller.map(|axum::Extension(c)| c));
            let connections = connections.clone();
            let gauges = Arc::clone(&gauges);
            async move {
                if !dispatch.service().may_read_metrics(dispatch.caller()) {
                    return (StatusCode::FORBIDDEN, "not permitted\n").into_response();
                }
                let mut text = String::new();
                gauges.encode(
                    &mut text,
                    connections.open() as u64,
                    dispatch.request_bytes_held() as u64,
                );
                dispatch.service().encode_metrics(&mut text);
                text.push_str("# EOF\n");
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )
                    .into_response()
            }
        }),
    )
}

/// What the listener itself holds: connections and request bodies.
struct ListenerGauges {
    registry: prometheus_client::registry::Registry,
    connections: prometheus_client::metrics::gauge::Gauge,
    request_bytes: prometheus_client::metrics::gauge::Gauge,
    scrape: std::sync::Mutex<()>,
}

impl ListenerGauges {
    fn new() -> Self {
        use prometheus_client::metrics::gauge::Gauge;
        let mut registry = prometheus_client::registry::Registry::with_prefix("keyserver");
        let connections = Gauge::default();
        registry.register("connections_open", "Connections open", connections.clone());
        let request_bytes = Gauge::default();
        registry.register(
            "request_bytes_held",
            "Bytes of request bodies held in memory",
            request_bytes.clone(),
        );
        ListenerGauges {
            registry,
            connections,
            request_bytes,
            scrape: std::sync::Mutex::new(()),
        }
    }

    fn encode(&self, out: &mut String, connections: u64, request_bytes: u64) {
        let _one = self
            .scrape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.connections
            .set(i64::try_from(connections).unwrap_or(i64::MAX));
        self.request_bytes
            .set(i64::try_from(request_bytes).unwrap_or(i64::MAX));
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(out, &self.registry);
    }
}

/// `GET /healthz` (the process serves: always 200) and `GET /readyz` (the
/// service is ready, [`KeyService::ready`]: it answers, its storage can be
/// read, and with the policy layers the audit log can be written: 200, or
/// 503 with a one-line reason), for load balancers and orchestrators.
/// Neither needs credentials; neither says more than that.
fn probes(dispatch: Arc<Dispatch>) -> Router {
    use axum::http::StatusCode;
    use axum::routing::get;
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route(
            "/readyz",
            get(move || {
                let dispatch = Arc::clone(&dispatch);
                async move {
                    match dispatch.ready().await {
                        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                        Err(e) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: error {}\n", e.code()),
                        ),
                    }
                }
            }),
        )
}

/// hyper's settings: the header time-out (HTTP/1), a small read buffer
/// (what hyper holds per connection outside the request memory budget), and
/// HTTP/2's stream count and flow-control windows (what it may buffer).
fn configure_http(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    config: &ServerConfig,
) {
    builder
        .http1()
        .header_read_timeout(config.header_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .max_concurrent_streams(config.max_streams)
        // What HTTP/2 may buffer per connection outside the request-memory
        // budget: as little as HTTP/1's read buffer.
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(64 * 1024)
        .max_header_list_size(64 * 1024)
        .max_pending_accept_reset_streams(64)
        .max_send_buf_size(256 * 1024);
}

fn transport_error(
    message: impl Into<String>,
    e: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::Transport {
        message: message.into(),
        source: Some(Box::new(e)),
    }
}

/// The protocols this build serves: each protocol crate's endpoint whose
/// server feature is on.
fn endpoints() -> Vec<Endpoint> {
    [
        #[cfg(feature = "transport-xmlrpc-server")]
        keyserver_xmlrpc::endpoint(),
        #[cfg(feature = "transport-jsonrpc-server")]
        keyserver_jsonrpc::endpoint(),
    ]
    .into()
}

fn router(dispatch: &Arc<Dispatch>, config: &ServerConfig, limit: &conn::Limit) -> Router {
    let endpoints = endpoints();
    let mut router = Router::new();
    for endpoint in &endpoints {
        router = router.merge((endpoint.router)(Arc::clone(dispatch)));
    }
    router = router.merge(probes(Arc::clone(dispatch)));
    router = router.merge(metrics_route(Arc::clone(dispatch), limit.clone()));
    let gate = gate::Gate::new(
        config.listen,
        &config.allowed_hosts,
        Some(Arc::clone(&dispatch.shared_service())),
        &endpoints,
    );
    router.layer(axum::middleware::from_fn(move |request, next| {
        gate::check(Arc::clone(&gate), request, next)
    }))
}
