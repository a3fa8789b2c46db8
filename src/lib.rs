//! # keyserver
//!
//! Envelope encryption with split knowledge (NIST SP 800-57): the key that
//! encrypts the data never sits next to the data, nor in plain form anywhere.
//!
//! 1. [`KeyServer::generate`] creates a key-encryption key (KEK, an RSA key
//!    pair) and a data-encryption key (DEK, an AES key), wraps the DEK with the
//!    KEK's public half (RSA-OAEP-SHA256), stores only the wrapped DEK, and
//!    returns the private KEK to the caller.
//! 2. The caller keeps the KEK. With it, [`KeyServer::get`] returns the DEK,
//!    and [`KeyServer::encrypt`] / [`KeyServer::decrypt`] seal and open data
//!    in the [`envelope`] format (HKDF-SHA256 per-message keys, AES-GCM).
//! 3. The wrapping key is always at least as strong as the key it protects
//!    ([`Strength`]).
//!
//! The server is composed at compile time: `KeyServer<C, S>` takes a
//! [`CipherSuite`] `C` and a [`KeyStorage`] `S`, chosen among the backends
//! enabled by Cargo features; `KeyClient<T>` takes a [`Transport`] `T` to a
//! remote server and encrypts locally. Code written against the
//! [`Encryption`] trait runs unchanged on a local server or a remote one.
//!
//! ```
//! # #[cfg(all(feature = "cipher-rustcrypto", feature = "storage-memory"))]
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use keyserver::KeyServer;
//! use keyserver::backends::{MemoryStorage, RustCrypto};
//!
//! let keys = KeyServer::new(RustCrypto::new(), MemoryStorage::new());
//! let kek = keys.generate().await?;           // give this to the application
//! let sealed = keys.encrypt(&kek, b"Stephan Richter").await?;
//! assert_eq!(&keys.decrypt(&kek, &sealed).await?[..], b"Stephan Richter");
//! # Ok::<(), keyserver::Error>(())
//! # }).unwrap();
//! ```
//!
//! # Feature flags
//!
//! Features are additive and named by axis. Enabling two backends of one axis
//! is fine: the type parameter chooses, never the set of enabled features.
//!
//! | feature | what it adds | default |
//! | --- | --- | --- |
//! | `cipher-rustcrypto` | `backends::RustCrypto` (rsa, aes-gcm, hkdf, sha2) | yes |
//! | `cipher-openssl` | `backends::OpenSsl` (the system's OpenSSL 3) | no |
//! | `storage-memory` | `backends::MemoryStorage` | yes |
//! | `storage-file` | `backends::FileStorage` (durable, crash-safe, locked) | yes |
//! | `transport-xmlrpc` | `transports::XmlRpc`, XML-RPC in `transports::HttpServer` | yes |
//! | `transport-jsonrpc` | `transports::JsonRpc`, JSON-RPC in `transports::HttpServer` | yes |
//! | `cli` | the `keyserver` binary | yes |
//! | `full` | all of the above | no |
//!
//! Always available: [`KeyServer`], [`KeyClient`] with its DEK cache, and
//! [`transports::InProcess`]. The wire protocol is documented in
//! `docs/PROTOCOL.md`, the byte formats ([`envelope`], [`stream`], the stored
//! [`WrappedDek`]) in `docs/FORMAT.md`.

// No unsafe code, except one reviewed FFI module in the OpenSSL suite
// (`backends/openssl.rs`, `mod kdf`) that opts in explicitly.
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod api;
mod client;
mod encryption;
pub mod envelope;
pub mod error;
mod format;
mod key;
mod pool;
mod record;
mod server;
mod storage;
pub mod stream;
mod suite;
mod transport;

#[path = "../backends/mod.rs"]
pub mod backends;
#[path = "../transports/mod.rs"]
pub mod transports;

#[cfg(feature = "testing")]
pub mod testing;

pub use api::{KeyService, Status};
pub use client::{KeyClient, UnwrapMode, DEFAULT_CACHE_CAPACITY, DEFAULT_CACHE_TIMEOUT};
pub use encryption::Encryption;
pub use error::{Error, ErrorCode, Result};
pub use key::{rsa_public_parts, Dek, Kek, KeyId, Plaintext, Strength, MAX_RSA_BITS, MIN_RSA_BITS};
pub use record::WrappedDek;
pub use server::KeyServer;
pub use storage::KeyStorage;
pub use suite::{CipherSuite, GCM_NONCE_LEN, GCM_TAG_LEN};
pub use transport::Transport;

/// Re-exported for implementing this crate's async traits ([`KeyStorage`],
/// [`KeyService`], [`Transport`]) outside it, with the same version.
pub use async_trait::async_trait;

/// This crate's version, as reported by `status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs blocking work (CPU-heavy cryptography, file I/O) on Tokio's blocking
/// thread pool when called inside a Tokio runtime, and inline otherwise, so
/// that it never stalls other tasks and never panics for want of a runtime.
///
/// Backends use it for their blocking system calls.
///
/// # Errors
/// [`Error::Internal`] if the work panicked on the blocking pool.
///
/// # Example
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let n = keyserver::blocking(|| 6 * 7).await?;
/// assert_eq!(n, 42);
/// # Ok::<(), keyserver::Error>(())
/// # }).unwrap();
/// ```
pub async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle
            .spawn_blocking(f)
            .await
            .map_err(|_| Error::Internal("a blocking task did not complete".into())),
        Err(_) => Ok(f()),
    }
}
