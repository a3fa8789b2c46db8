//! The HTTP listener that serves any [`KeyService`] over XML-RPC (`/RPC2`)
//! and JSON-RPC (`/jsonrpc`), with TLS, limits, timeouts, access logs and
//! graceful shutdown. It sits above the protocol endpoints, which sit above
//! the codecs and the method table.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use crate::api::KeyService;
use crate::transports::http::dispatch::Dispatch;
use crate::transports::TlsFiles;
use crate::{Error, Result};

/// Default address: loopback, port 8731.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8731";
/// Default request body limit: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;
/// Default time a request may take before it is answered with an error.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How the HTTP listener is set up.
///
/// ```
/// use keyserver::transports::ServerConfig;
///
/// let config = ServerConfig::default();
/// assert_eq!(config.listen.to_string(), "127.0.0.1:8731");
/// assert_eq!(config.max_body, 1 << 20);
/// ```
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// TLS: `None` serves plain HTTP (refused off loopback unless `insecure`).
    pub tls: Option<TlsFiles>,
    /// Allow plain HTTP on a non-loopback address. KEKs would cross the
    /// network in clear: only behind a TLS-terminating proxy.
    pub insecure: bool,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// Time limit for one request.
    pub request_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8731)),
            tls: None,
            insecure: false,
            max_body: DEFAULT_MAX_BODY,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

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
        let dispatch = Arc::new(Dispatch::new(service, config.request_timeout));
        let router = router(&dispatch, &config);
        let listener = TcpListener::bind(config.listen)
            .map_err(|e| transport_error(format!("cannot listen on {}", config.listen), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| transport_error("cannot read the bound address", e))?;
        let handle = axum_server::Handle::new();
        let service = router.into_make_service();
        let tls = config.tls.is_some();
        let task = match &config.tls {
            Some(files) => {
                let rustls = crate::transports::tls::server_config(files)?;
                let acceptor = axum_server::tls_rustls::RustlsConfig::from_config(rustls);
                let server = axum_server::from_tcp_rustls(listener, acceptor)
                    .map_err(|e| transport_error("cannot start the listener", e))?
                    .handle(handle.clone());
                tokio::spawn(server.serve(service))
            }
            None => {
                let server = axum_server::from_tcp(listener)
                    .map_err(|e| transport_error("cannot start the listener", e))?
                    .handle(handle.clone());
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

    /// Stops accepting connections, lets requests in flight finish (up to 30
    /// seconds), and returns when the server has stopped.
    pub async fn shutdown(self) {
        self.handle.graceful_shutdown(Some(Duration::from_secs(30)));
        let _ = self.task.await;
    }

    /// Runs until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }
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

#[allow(unused_mut, unused_variables)]
fn router(dispatch: &Arc<Dispatch>, config: &ServerConfig) -> Router {
    let mut router = Router::new();
    #[cfg(feature = "transport-xmlrpc-server")]
    {
        router = router.merge(crate::transports::xmlrpc::endpoint::router(
            Arc::clone(dispatch),
            config.max_body,
        ));
    }
    #[cfg(feature = "transport-jsonrpc-server")]
    {
        router = router.merge(crate::transports::jsonrpc::endpoint::router(
            Arc::clone(dispatch),
            config.max_body,
        ));
    }
    router
}
