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

/// The HTTP(S) listener and its settings (a protocol's server half): the
/// listener is this crate's, composing the endpoints of the protocol crates
/// whose server features are on; its building blocks are `keyserver-http`'s.
#[cfg(feature = "_server")]
#[cfg_attr(
    docsrs,
    doc(cfg(any(
        feature = "transport-xmlrpc-server",
        feature = "transport-jsonrpc-server"
    )))
)]
pub use crate::listener::HttpServer;
#[cfg(feature = "_server")]
#[cfg_attr(
    docsrs,
    doc(cfg(any(
        feature = "transport-xmlrpc-server",
        feature = "transport-jsonrpc-server"
    )))
)]
#[doc(inline)]
pub use keyserver_http::{
    server::{
        ServerConfig, DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_LISTEN,
        DEFAULT_MAX_BATCH_EXPENSIVE, DEFAULT_MAX_BODY, DEFAULT_MAX_CONNECTIONS,
        DEFAULT_MAX_CONNECTIONS_PER_PEER, DEFAULT_MAX_PREAUTH_MEMORY, DEFAULT_MAX_REQUEST_MEMORY,
        DEFAULT_MAX_STREAMS, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SHUTDOWN_GRACE,
    },
    TlsFiles,
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
#[doc(inline)]
pub use keyserver_http::{ClientOptions, ClientTls, Token};

#[cfg(feature = "transport-jsonrpc-client")]
#[cfg_attr(docsrs, doc(cfg(feature = "transport-jsonrpc-client")))]
#[doc(inline)]
pub use keyserver_jsonrpc::JsonRpc;
#[cfg(any(
    feature = "transport-jsonrpc-client",
    feature = "transport-jsonrpc-server"
))]
pub use keyserver_jsonrpc::JSONRPC_PATH;
#[cfg(feature = "transport-xmlrpc-client")]
#[cfg_attr(docsrs, doc(cfg(feature = "transport-xmlrpc-client")))]
#[doc(inline)]
pub use keyserver_xmlrpc::XmlRpc;
#[cfg(any(
    feature = "transport-xmlrpc-client",
    feature = "transport-xmlrpc-server"
))]
pub use keyserver_xmlrpc::XMLRPC_PATH;

/// Entry points for the fuzz targets in `fuzz/` (not a public API: it may
/// change at any time). Each runs a request decoder exactly as its endpoint
/// does, from the raw body to the calls of the wire API.
#[doc(hidden)]
#[cfg(feature = "_server")]
pub mod fuzzing {
    #[cfg(feature = "transport-jsonrpc-server")]
    pub use keyserver_jsonrpc::fuzz_request as jsonrpc_request;
    #[cfg(feature = "transport-jsonrpc-server")]
    pub use keyserver_jsonrpc::fuzz_single as jsonrpc_single;
    #[cfg(feature = "transport-xmlrpc-server")]
    pub use keyserver_xmlrpc::fuzz_request as xmlrpc_request;
}
