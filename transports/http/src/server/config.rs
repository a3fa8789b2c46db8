//! The listener's settings: [`ServerConfig`] and its defaults.

use std::net::SocketAddr;
use std::time::Duration;

use crate::tls::TlsFiles;

/// Default address: loopback, port 8731.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8731";
/// Default request body limit: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;
/// Default time a request may take before it is answered with an error.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default number of connections one peer address may hold: a quarter of
/// the default cap.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 256;
/// Default time a client may take to send a request's headers.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a connection may stay without a byte in either direction.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default number of HTTP/2 streams at once per connection.
pub const DEFAULT_MAX_STREAMS: u32 = 32;
/// Default budget of request-body bytes held in memory, all requests together.
pub const DEFAULT_MAX_REQUEST_MEMORY: usize = 64 << 20;
/// Default budget of request-body bytes of requests that did not
/// authenticate (apart from the one above): 4 MiB.
pub const DEFAULT_MAX_PREAUTH_MEMORY: usize = 4 << 20;
/// Default number of `generate` and `get_key` calls one batch may hold.
pub const DEFAULT_MAX_BATCH_EXPENSIVE: usize = 8;
/// Default time shutdown waits for requests in flight.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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
    /// Time limit for one request: reading its body, parsing it, and every
    /// call in it (a batch or multicall as a whole).
    pub request_timeout: Duration,
    /// Connections served at once; one more is closed as soon as it is
    /// accepted. Never more than the process's descriptor limit allows
    /// (the soft limit is raised to the hard one at start).
    pub max_connections: usize,
    /// Connections one peer address may hold at once (behind a proxy that
    /// connects for every client, raise it to `max_connections`).
    pub max_connections_per_peer: usize,
    /// Time a client may take to send a request's headers. HTTP/1 also
    /// closes a keep-alive connection that waits this long for its next
    /// request.
    pub header_timeout: Duration,
    /// Time a connection (HTTP/1 or HTTP/2) may stay without a byte read or
    /// written while no request on it is in flight (a request being answered
    /// is never cut off by it).
    pub idle_timeout: Duration,
    /// HTTP/2 streams at once per connection.
    pub max_streams: u32,
    /// Bytes of request bodies held in memory at once, all requests
    /// together. A request that would exceed it waits briefly for room,
    /// then is answered "busy" (code 12, HTTP 503). One peer address may
    /// hold a quarter of it (or one body of `max_body`, if more).
    pub max_request_memory: usize,
    /// When the service controls access: bytes of request bodies held at
    /// once by requests that did not authenticate (no credentials, or
    /// credentials of nobody), a budget apart from `max_request_memory`, so
    /// that they cannot crowd out the principals who did.
    pub max_preauth_memory: usize,
    /// `generate` and `get_key` calls (the ones that cost CPU) that one
    /// JSON-RPC batch or XML-RPC `system.multicall` may hold.
    pub max_batch_expensive: usize,
    /// Host names that clients may use in the `Host` header besides the
    /// listener's own address (and `localhost` on a loopback listener);
    /// lower case. Any other name is refused with HTTP 421, so a web page
    /// cannot reach the server through DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// How long `HttpServer::shutdown` waits for requests in flight before
    /// it closes their connections.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8731)),
            tls: None,
            insecure: false,
            max_body: DEFAULT_MAX_BODY,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_streams: DEFAULT_MAX_STREAMS,
            max_request_memory: DEFAULT_MAX_REQUEST_MEMORY,
            max_preauth_memory: DEFAULT_MAX_PREAUTH_MEMORY,
            max_batch_expensive: DEFAULT_MAX_BATCH_EXPENSIVE,
            allowed_hosts: Vec::new(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}
