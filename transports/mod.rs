//! Transports: the protocols of the wire API ([`crate::api`]).
//!
//! Each protocol is a codec of the one method table, used by its client (a
//! [`Transport`](crate::Transport)) and by its endpoint in the HTTP listener
//! alike. The listener sits above the endpoints, the endpoints and clients
//! above the codecs, the codecs above the table: arrows point one way.
//!
//! - [`InProcess`]: calls a [`KeyService`](crate::KeyService) in the same
//!   process (always available).
//! - `XmlRpc` (feature `transport-xmlrpc`): XML-RPC at `URL/RPC2`.
//! - `JsonRpc` (feature `transport-jsonrpc`): JSON-RPC 2.0 at `URL/jsonrpc`.
//! - `HttpServer` (either feature): one HTTP(S) listener serving any
//!   `KeyService` over both protocols (each when its feature is on). The
//!   protocol is written down in `docs/PROTOCOL.md`.

mod in_process;

pub use in_process::InProcess;

#[cfg(any(feature = "transport-xmlrpc", feature = "transport-jsonrpc"))]
mod http;
#[cfg(feature = "transport-jsonrpc")]
mod jsonrpc;
#[cfg(any(feature = "transport-xmlrpc", feature = "transport-jsonrpc"))]
mod options;
#[cfg(any(feature = "transport-xmlrpc", feature = "transport-jsonrpc"))]
mod tls;
#[cfg(feature = "transport-xmlrpc")]
mod xmlrpc;

#[cfg(any(feature = "transport-xmlrpc", feature = "transport-jsonrpc"))]
pub use http::{
    HttpServer, ServerConfig, DEFAULT_LISTEN, DEFAULT_MAX_BODY, DEFAULT_REQUEST_TIMEOUT,
};
#[cfg(feature = "transport-jsonrpc")]
pub use jsonrpc::{JsonRpc, JSONRPC_PATH};
#[cfg(any(feature = "transport-xmlrpc", feature = "transport-jsonrpc"))]
pub(crate) use options::base_url;
#[cfg(any(feature = "transport-xmlrpc", feature = "transport-jsonrpc"))]
pub use options::ClientOptions;
#[cfg(any(feature = "transport-xmlrpc", feature = "transport-jsonrpc"))]
pub use tls::{ClientTls, TlsFiles};
#[cfg(feature = "transport-xmlrpc")]
pub use xmlrpc::{XmlRpc, XMLRPC_PATH};
