//! Transports: the client side of the wire protocol
//! ([`Transport`](crate::Transport)) and the server that speaks it.
//!
//! - [`InProcess`]: calls a [`KeyServer`](crate::KeyServer) directly (always
//!   available).
//! - `XmlRpc` (feature `transport-xmlrpc`): XML-RPC at `URL/RPC2`.
//! - `JsonRpc` (feature `transport-jsonrpc`): JSON-RPC 2.0 at `URL/jsonrpc`.
//! - `HttpServer` (either feature): one HTTP(S) listener serving both
//!   protocols (each when its feature is on). The protocol is written down in
//!   `docs/PROTOCOL.md`.

mod in_process;

pub use in_process::InProcess;

#[cfg(any(feature = "transport-xmlrpc", feature = "transport-jsonrpc"))]
mod http;
#[cfg(feature = "transport-jsonrpc")]
mod jsonrpc;
#[cfg(any(feature = "transport-xmlrpc", feature = "transport-jsonrpc"))]
mod tls;
#[cfg(feature = "transport-xmlrpc")]
mod xmlrpc;

#[cfg(any(feature = "transport-xmlrpc", feature = "transport-jsonrpc"))]
pub use http::{
    HttpServer, ServerConfig, TlsFiles, DEFAULT_LISTEN, DEFAULT_MAX_BODY, DEFAULT_REQUEST_TIMEOUT,
};
#[cfg(feature = "transport-jsonrpc")]
pub use jsonrpc::{JsonRpc, JSONRPC_PATH};
#[cfg(any(feature = "transport-xmlrpc", feature = "transport-jsonrpc"))]
pub use tls::ClientTls;
#[cfg(feature = "transport-xmlrpc")]
pub use xmlrpc::{XmlRpc, XMLRPC_PATH};

/// Options of the network clients ([`XmlRpc`], [`JsonRpc`]).
///
/// ```
/// let options = keyserver::transports::ClientOptions::default();
/// assert_eq!(options.timeout.as_secs(), 30);
/// ```
#[cfg(any(feature = "transport-xmlrpc", feature = "transport-jsonrpc"))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// Time limit for connecting and for each request.
    pub timeout: std::time::Duration,
    /// TLS settings for `https://` URLs.
    pub tls: ClientTls,
}

#[cfg(any(feature = "transport-xmlrpc", feature = "transport-jsonrpc"))]
impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: std::time::Duration::from_secs(30),
            tls: ClientTls::default(),
        }
    }
}

/// `http(s)://host[:port]` without a trailing slash or the protocol path.
#[cfg(any(feature = "transport-xmlrpc", feature = "transport-jsonrpc"))]
fn base_url(url: &str) -> crate::Result<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let trimmed = trimmed
        .strip_suffix("/RPC2")
        .or_else(|| trimmed.strip_suffix("/jsonrpc"))
        .unwrap_or(trimmed);
    if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
        return Err(crate::Error::Transport {
            message: format!("not an http:// or https:// URL: {trimmed}"),
            source: None,
        });
    }
    Ok(trimmed.to_string())
}
