//! JSON-RPC 2.0: the codec, the `JsonRpc` client, and the `/jsonrpc` endpoint
//! of the HTTP listener.
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
pub use client::JsonRpc;

/// The path JSON-RPC is served at.
pub const JSONRPC_PATH: &str = "/jsonrpc";

/// The listener's endpoint of this protocol: its path, media types and
/// routes.
#[cfg(feature = "server")]
pub fn endpoint() -> keyserver_http::server::Endpoint {
    keyserver_http::server::Endpoint {
        path: JSONRPC_PATH,
        protocol: "jsonrpc",
        media_types: &["application/json"],
        router: endpoint::router,
    }
}

/// For the fuzz targets (`keyserver::testing::fuzz`): the request decoders.
#[doc(hidden)]
#[cfg(feature = "server")]
pub use {codec::fuzz_request, endpoint::fuzz_single};
