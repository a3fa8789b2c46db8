//! The building blocks of an HTTP(S) listener serving a
//! [`KeyService`](keyserver_core::KeyService), and of the protocol endpoints
//! it mounts: the gate every request passes before its body is read
//! ([`gate`]), body budgets ([`body`]), connection limits ([`conn`]), the
//! dispatcher every call goes through ([`dispatch`]), client certificates
//! ([`peer`]), and the settings ([`ServerConfig`]). The `keyserver` crate's
//! `HttpServer` puts them together with the endpoints of the protocols its
//! features name; a protocol crate provides an [`Endpoint`].

pub mod body;
mod config;
pub mod conn;
pub mod dispatch;
pub mod gate;
pub mod peer;

use std::sync::Arc;

pub use config::{
    ServerConfig, DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_LISTEN,
    DEFAULT_MAX_BATCH_EXPENSIVE, DEFAULT_MAX_BODY, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_PEER, DEFAULT_MAX_PREAUTH_MEMORY, DEFAULT_MAX_REQUEST_MEMORY,
    DEFAULT_MAX_STREAMS, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SHUTDOWN_GRACE,
};

/// A protocol the listener serves at one path: what `keyserver-xmlrpc` and
/// `keyserver-jsonrpc` each provide (their `endpoint()`), and what a
/// third-party protocol would.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint {
    /// The path (`/RPC2`).
    pub path: &'static str,
    /// Its name in access logs and in the caller's `protocol` (`xmlrpc`).
    pub protocol: &'static str,
    /// The media types its request bodies may have, compared without case
    /// and without parameters (`charset`); any other is refused with 415
    /// before the body is read, which keeps web pages' simple requests out.
    pub media_types: &'static [&'static str],
    /// Its routes; every call goes through the dispatcher.
    pub router: fn(Arc<dispatch::Dispatch>) -> axum::Router,
}
