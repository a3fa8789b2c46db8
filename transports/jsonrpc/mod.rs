//! JSON-RPC 2.0: the codec, the `JsonRpc` client, and the `/jsonrpc` endpoint
//! of the HTTP listener.

mod client;
pub(crate) mod codec;
pub(crate) mod endpoint;

pub use client::JsonRpc;

/// The path JSON-RPC is served at.
pub const JSONRPC_PATH: &str = "/jsonrpc";
