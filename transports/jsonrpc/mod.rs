//! JSON-RPC 2.0: the codec, the `JsonRpc` client, and the `/jsonrpc` endpoint
//! of the HTTP listener.

#[cfg(feature = "transport-jsonrpc-client")]
mod client;
// Each half uses part of the codec.
#[cfg_attr(
    not(all(
        feature = "transport-jsonrpc-client",
        feature = "transport-jsonrpc-server"
    )),
    allow(dead_code)
)]
pub(crate) mod codec;
#[cfg(feature = "transport-jsonrpc-server")]
pub(crate) mod endpoint;

#[cfg(feature = "transport-jsonrpc-client")]
pub use client::JsonRpc;

/// The path JSON-RPC is served at.
pub const JSONRPC_PATH: &str = "/jsonrpc";
