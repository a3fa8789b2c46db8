//! For backend authors: what a cipher suite or a storage backend implements,
//! and the helpers it may use, apart from the application API at the crate
//! root (as `rustls::crypto` is for crypto providers).
//!
//! - [`CipherSuite`]: primitives only (RSA key generation and OAEP-SHA256,
//!   HKDF-SHA256, AES-GCM, random bytes). The core owns every format and
//!   enforces every size limit of its formats before it calls a suite; a
//!   suite knows the limits of its primitives ([`GCM_MAX_PLAINTEXT`],
//!   [`MIN_RSA_BITS`]..=[`MAX_RSA_BITS`]) and nothing of the data formats.
//! - [`KeyStorage`]: create-only records by key id.
//! - [`blocking`], [`rsa_public_parts`], and [`async_trait`](macro@async_trait) (re-exported so
//!   a backend crate's `#[async_trait]` matches this crate's).
//!
//! A backend proves itself with the conformance kit (feature `testing`):
//! `keyserver::cipher_conformance!` or `keyserver::storage_conformance!`,
//! one line. `examples/custom_storage.rs` is a complete third-party storage.

pub use crate::key::{rsa_public_parts, MAX_RSA_BITS, MIN_RSA_BITS};
pub use crate::storage::KeyStorage;
pub use crate::suite::{CipherSuite, GCM_MAX_PLAINTEXT, GCM_NONCE_LEN, GCM_TAG_LEN};
pub use async_trait::async_trait;

use crate::{Error, Result};

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
/// let n = keyserver::plugin::blocking(|| 6 * 7).await?;
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
