//! XML-RPC: the codec, the `XmlRpc` client, and the `/RPC2` endpoint of the
//! HTTP listener.

#[cfg(feature = "transport-xmlrpc-client")]
mod client;
// Each half uses part of the codec.
#[cfg_attr(
    not(all(
        feature = "transport-xmlrpc-client",
        feature = "transport-xmlrpc-server"
    )),
    allow(dead_code)
)]
pub(crate) mod codec;
#[cfg(feature = "transport-xmlrpc-server")]
pub(crate) mod endpoint;

#[cfg(feature = "transport-xmlrpc-client")]
pub use client::XmlRpc;

/// The path XML-RPC is served at.
pub const XMLRPC_PATH: &str = "/RPC2";
