//! Transports: the protocols of the wire API ([`crate::api`]).
//!
//! Each protocol is a codec of the one method table, used by its client (a
//! [`Transport`](crate::Transport)) and by its endpoint in the HTTP listener
//! alike. The listener sits above the endpoints, the endpoints and clients
//! above the codecs, the codecs above the table: arrows point one way.
//!
//! - [`InProcess`]: calls a [`KeyService`](crate::KeyService) in the same
//!   process (always available).
//! - [`Failover`]: one transport over several servers sharing a storage,
//!   moving to the next on failures (always available).
//! - `XmlRpc` (feature `transport-xmlrpc-client`): XML-RPC at `URL/RPC2`.
//! - `JsonRpc` (feature `transport-jsonrpc-client`): JSON-RPC 2.0 at
//!   `URL/jsonrpc`.
//! - `HttpServer` (feature `transport-xmlrpc-server` or
//!   `transport-jsonrpc-server`): one HTTP(S) listener serving any
//!   `KeyService` over each protocol whose server feature is on. The
//!   protocol is written down in `docs/PROTOCOL.md`. It authenticates each
//!   request's credentials through the service it serves and hands the
//!   caller to it; the policy (who may do what, the audit log, metrics) is
//!   the service's, as layers (`keyserver::policy`).
//!
//! `transport-xmlrpc` and `transport-jsonrpc` turn on both halves.

#[doc(inline)]
pub use keyserver_core::transports::{Failover, InProcess, DEFAULT_QUARANTINE};

// `_client` and `_server` are on with any protocol's client or server half.
#[cfg(feature = "_server")]
mod http;
#[cfg(any(
    feature = "transport-jsonrpc-client",
    feature = "transport-jsonrpc-server"
))]
mod jsonrpc;
#[cfg(feature = "_server")]
mod listener;
#[cfg(feature = "_client")]
mod options;
#[cfg(any(feature = "_client", feature = "_server"))]
mod tls;
#[cfg(any(
    feature = "transport-xmlrpc-client",
    feature = "transport-xmlrpc-server"
))]
mod xmlrpc;

/// The HTTP(S) listener and its settings (a protocol's server half).
#[cfg(feature = "_server")]
#[cfg_attr(
    docsrs,
    doc(cfg(any(
        feature = "transport-xmlrpc-server",
        feature = "transport-jsonrpc-server"
    )))
)]
pub use self::{
    listener::{
        HttpServer, ServerConfig, DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_LISTEN,
        DEFAULT_MAX_BATCH_EXPENSIVE, DEFAULT_MAX_BODY, DEFAULT_MAX_CONNECTIONS,
        DEFAULT_MAX_CONNECTIONS_PER_PEER, DEFAULT_MAX_PREAUTH_MEMORY, DEFAULT_MAX_REQUEST_MEMORY,
        DEFAULT_MAX_STREAMS, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SHUTDOWN_GRACE,
    },
    tls::TlsFiles,
};

/// What the network clients share (a protocol's client half).
#[cfg(feature = "_client")]
#[cfg_attr(
    docsrs,
    doc(cfg(any(
        feature = "transport-xmlrpc-client",
        feature = "transport-jsonrpc-client"
    )))
)]
pub use self::{
    options::{ClientOptions, Token},
    tls::ClientTls,
};
#[cfg(feature = "_client")]
pub(crate) use options::base_url;

#[cfg(feature = "transport-jsonrpc-client")]
#[cfg_attr(docsrs, doc(cfg(feature = "transport-jsonrpc-client")))]
pub use jsonrpc::JsonRpc;
#[cfg(any(
    feature = "transport-jsonrpc-client",
    feature = "transport-jsonrpc-server"
))]
pub use jsonrpc::JSONRPC_PATH;
#[cfg(feature = "transport-xmlrpc-client")]
#[cfg_attr(docsrs, doc(cfg(feature = "transport-xmlrpc-client")))]
pub use xmlrpc::XmlRpc;
#[cfg(any(
    feature = "transport-xmlrpc-client",
    feature = "transport-xmlrpc-server"
))]
pub use xmlrpc::XMLRPC_PATH;

/// Entry points for the fuzz targets in `fuzz/` (not a public API: it may
/// change at any time). Each runs a request decoder exactly as its endpoint
/// does, from the raw body to the calls of the wire API.
#[doc(hidden)]
#[cfg(feature = "_server")]
pub mod fuzzing {
    #[cfg(feature = "transport-jsonrpc-server")]
    pub use super::jsonrpc::codec::fuzz_request as jsonrpc_request;
    #[cfg(feature = "transport-jsonrpc-server")]
    pub use super::jsonrpc::endpoint::fuzz_single as jsonrpc_single;
    #[cfg(feature = "transport-xmlrpc-server")]
    pub use super::xmlrpc::codec::fuzz_request as xmlrpc_request;
}
