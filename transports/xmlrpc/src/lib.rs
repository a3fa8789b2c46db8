//! XML-RPC: the codec, the `XmlRpc` client, and the `/RPC2` endpoint of the
//! HTTP listener.
//!
//! A crate of [keyserver](https://github.com/keyserver/keyserver), built on
//! the public API of `keyserver-core` and `keyserver-http`: feature
//! `client` is the [`Transport`](keyserver_core::Transport), feature
//! `server` the [`endpoint`] the `keyserver` crate's `HttpServer` mounts.
//! Applications reach it as `keyserver::transports`.

#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

#[cfg(feature = "client")]
mod client;
// Each half uses part of the codec.
#[cfg_attr(not(all(feature = "client", feature = "server")), allow(dead_code))]
mod codec;
#[cfg(feature = "server")]
mod endpoint;

#[cfg(feature = "client")]
pub use client::XmlRpc;

/// The path XML-RPC is served at.
pub const XMLRPC_PATH: &str = "/RPC2";

/// The listener's endpoint of this protocol: its path, media types and
/// routes.
#[cfg(feature = "server")]
pub fn endpoint() -> keyserver_http::server::Endpoint {
    keyserver_http::server::Endpoint {
        path: XMLRPC_PATH,
        protocol: "xmlrpc",
        media_types: &["text/xml", "application/xml"],
        router: endpoint::router,
    }
}

/// For the fuzz targets (`keyserver::testing::fuzz`): the request decoder.
#[doc(hidden)]
#[cfg(feature = "server")]
pub use codec::fuzz_request;
