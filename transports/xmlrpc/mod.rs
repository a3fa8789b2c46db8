//! XML-RPC: the codec, the `XmlRpc` client, and the `/RPC2` endpoint of the
//! HTTP listener.

mod client;
pub(crate) mod codec;
pub(crate) mod endpoint;

pub use client::XmlRpc;

/// The path XML-RPC is served at.
pub const XMLRPC_PATH: &str = "/RPC2";
