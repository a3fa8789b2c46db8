//! The HTTP listener that serves a `KeyServer` over XML-RPC (`/RPC2`) and
//! JSON-RPC (`/jsonrpc`), with TLS, limits, timeouts, access logs and
//! graceful shutdown; and the protocol-independent dispatch both use.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;

use crate::{
    CipherSuite, Dek, Error, Kek, KeyId, KeyServer, KeyStorage, Result, Status, Strength,
    Transport, WrappedDek,
};

use super::InProcess;

/// Default address: loopback, port 8731.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8731";
/// Default request body limit: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;
/// Default time a request may take before it is answered with an error.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Certificate and key files (PEM) for TLS, and optionally the CA that client
/// certificates must chain to (mutual TLS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain, PEM.
    pub cert: PathBuf,
    /// The server's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// If set, clients must present a certificate issued by this CA (PEM).
    pub client_ca: Option<PathBuf>,
}

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
    /// Binds `config.listen` and starts serving `keys` in the background.
    ///
    /// # Errors
    /// [`Error::Policy`] for plain HTTP on a non-loopback address without
    /// `insecure`; [`Error::Transport`] if the address cannot be bound or the
    /// TLS files cannot be read.
    pub async fn start<C: CipherSuite, S: KeyStorage>(
        keys: Arc<KeyServer<C, S>>,
        config: ServerConfig,
    ) -> Result<Self> {
        let api: Arc<dyn Transport> = Arc::new(InProcess::new(keys));
        Self::start_api(api, config).await
    }

    /// Serves any [`Transport`] (for example a proxy to another server).
    ///
    /// # Errors
    /// As for [`HttpServer::start`].
    pub async fn start_api(api: Arc<dyn Transport>, config: ServerConfig) -> Result<Self> {
        if config.tls.is_none() && !config.insecure && !config.listen.ip().is_loopback() {
            return Err(Error::policy(format!(
                "refusing to serve plain HTTP on the non-loopback address {}: KEKs would cross \
                 the network in clear. Configure TLS, or say insecure explicitly",
                config.listen
            )));
        }
        let dispatch = Arc::new(Dispatch {
            api,
            timeout: config.request_timeout,
        });
        let router = router(&dispatch, &config)?;
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
                let rustls = super::tls::server_config(files)?;
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
fn router(dispatch: &Arc<Dispatch>, config: &ServerConfig) -> Result<Router> {
    let mut router = Router::new();
    #[cfg(feature = "transport-xmlrpc")]
    {
        router = router.merge(super::xmlrpc::router(Arc::clone(dispatch), config.max_body));
    }
    #[cfg(feature = "transport-jsonrpc")]
    {
        router = router.merge(super::jsonrpc::router(
            Arc::clone(dispatch),
            config.max_body,
        )?);
    }
    Ok(router)
}

/// One call of the wire API, parsed from either protocol.
pub(crate) enum Call {
    Generate(Option<Strength>),
    GetKey(Kek),
    GetWrapped(KeyId),
    Contains(KeyId),
    Status,
}

impl Call {
    fn method(&self) -> &'static str {
        match self {
            Call::Generate(_) => "generate",
            Call::GetKey(_) => "get_key",
            Call::GetWrapped(_) => "get_wrapped",
            Call::Contains(_) => "contains",
            Call::Status => "status",
        }
    }

    fn key_id(&self) -> Option<KeyId> {
        match self {
            Call::GetKey(kek) => Some(kek.id()),
            Call::GetWrapped(id) | Call::Contains(id) => Some(*id),
            Call::Generate(_) | Call::Status => None,
        }
    }
}

/// The answer to a [`Call`].
pub(crate) enum Reply {
    Kek(Kek),
    Dek(Dek),
    Wrapped(WrappedDek),
    Bool(bool),
    Status(Status),
}

/// Runs calls against the API with a time limit and one access-log line each.
pub(crate) struct Dispatch {
    api: Arc<dyn Transport>,
    timeout: Duration,
}

impl Dispatch {
    pub(crate) async fn run(&self, protocol: &'static str, call: Call) -> Result<Reply> {
        let start = Instant::now();
        let method = call.method();
        let mut key_id = call.key_id();
        let work = async {
            match call {
                Call::Generate(strength) => self.api.generate(strength).await.map(Reply::Kek),
                Call::GetKey(kek) => self.api.get_key(&kek).await.map(Reply::Dek),
                Call::GetWrapped(id) => self.api.get_wrapped(&id).await.map(Reply::Wrapped),
                Call::Contains(id) => self.api.contains(&id).await.map(Reply::Bool),
                Call::Status => self.api.status().await.map(Reply::Status),
            }
        };
        let result = match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(Error::Internal("the request timed out")),
        };
        if let Ok(Reply::Kek(kek)) = &result {
            key_id = Some(kek.id());
        }
        log_request(protocol, method, key_id.as_ref(), &result, start);
        result
    }
}

/// One access-log line: protocol, method, key id, outcome, latency. Never a key.
pub(crate) fn log_request<T>(
    protocol: &str,
    method: &str,
    key_id: Option<&KeyId>,
    result: &Result<T>,
    start: Instant,
) {
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    let key_id = key_id.map(|k| k.to_string()).unwrap_or_else(|| "-".into());
    match result {
        Ok(_) => tracing::info!(
            target: "keyserver::access",
            protocol, method, key_id = %key_id, outcome = "ok", latency_ms,
            "{protocol} {method} {key_id} ok {latency_ms:.2}ms"
        ),
        Err(e) => tracing::warn!(
            target: "keyserver::access",
            protocol, method, key_id = %key_id, outcome = "error", code = e.code(), latency_ms,
            "{protocol} {method} {key_id} error {} ({e}) {latency_ms:.2}ms", e.code()
        ),
    }
}

/// Wire code for a parameter that is missing or of the wrong type, on both
/// protocols (the JSON-RPC 2.0 "invalid params" code).
pub(crate) const INVALID_PARAMS: i32 = -32602;
/// Wire code for an unknown method (JSON-RPC 2.0 "method not found").
pub(crate) const METHOD_NOT_FOUND: i32 = -32601;
/// Wire code for a request that is not a valid call object (JSON-RPC 2.0
/// "invalid request").
pub(crate) const INVALID_REQUEST: i32 = -32600;
/// Wire code for a request that does not parse (JSON-RPC 2.0 "parse error").
pub(crate) const PARSE_ERROR: i32 = -32700;

/// Parses the `strength` parameter of `generate`.
pub(crate) fn parse_strength(bits: i64) -> Result<Strength> {
    u32::try_from(bits)
        .map_err(|_| Error::policy("strength must be 128, 192 or 256"))
        .and_then(Strength::from_bits)
}

/// Maps a wire error (code, message) back to a typed error on the client.
pub(crate) fn error_from_wire(code: i32, message: String, key_id: Option<KeyId>) -> Error {
    use crate::error::codes;
    match (code, key_id) {
        (codes::NOT_FOUND, Some(key_id)) => Error::NotFound { key_id },
        (codes::UNWRAP_FAILED, Some(key_id)) => Error::UnwrapFailed { key_id },
        (codes::POLICY, _) => Error::Policy { reason: message },
        _ => Error::Remote { code, message },
    }
}

/// Reads a request body of at most `max` bytes into memory that is wiped on
/// drop. A larger body is read on and thrown away up to a cap (so the client,
/// still sending, gets the "too large" answer rather than a reset
/// connection), then refused with [`Error::TooLarge`].
pub(crate) async fn read_body(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    max: usize,
) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    use http_body_util::BodyExt;
    use zeroize::Zeroize;
    let limit = max as u64;
    let cap = limit.saturating_mul(4).max(16 << 20);
    let too_large = |size| Error::TooLarge { size, limit };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(size) = declared.filter(|&n| n > cap) {
        return Err(too_large(size));
    }
    let mut body = body;
    let mut buf =
        zeroize::Zeroizing::new(Vec::with_capacity(declared.unwrap_or(0).min(limit) as usize));
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(Error::Transport {
                message: "the request body could not be read".into(),
                source: None,
            });
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len() as u64;
        if total <= limit {
            buf.extend_from_slice(&data);
        } else {
            buf.zeroize();
            if total > cap {
                break;
            }
        }
        if let Ok(mut owned) = data.try_into_mut() {
            owned.as_mut().zeroize();
        }
    }
    if total > limit {
        return Err(too_large(total));
    }
    Ok(buf)
}
