//! HTTP for keyserver's protocols: what their clients share (options,
//! tokens, TLS to the server: feature `client`) and the building blocks of
//! the listener and its endpoints (feature `server`).
//!
//! A crate of [keyserver](https://github.com/keyserver/keyserver), built on
//! the public API of `keyserver-core`. Applications reach it through
//! `keyserver::transports`.

// No unsafe code, except the two libc calls that read and raise the
// descriptor limit (`server/conn.rs`), which opt in explicitly.
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

#[cfg(feature = "client")]
mod options;
#[cfg(feature = "server")]
pub mod server;
#[cfg(any(feature = "client", feature = "server"))]
mod tls;

#[cfg(feature = "client")]
pub use options::{base_url, check_clear, shown_url, ClientOptions, Token};
#[cfg(any(feature = "client", feature = "server"))]
pub use tls::provider;
#[cfg(feature = "client")]
pub use tls::{client_config, ClientTls};
#[cfg(feature = "server")]
pub use tls::{server_config, TlsFiles};
