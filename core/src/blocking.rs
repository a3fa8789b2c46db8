//! [`blocking`]: CPU-heavy or blocking work off the async runtime.

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
