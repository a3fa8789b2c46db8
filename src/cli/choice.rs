//! The run-time choice of cipher suite and storage, written once for the
//! server and the client commands.
//!
//! The library composes `KeyServer<C, S>` at compile time; the binary picks
//! among the backends compiled in at run time. It does so with trait objects
//! (a `Box<dyn CipherSuite>` and an `Arc<dyn KeyStorage>` are a suite and a
//! storage), so there is one choice per axis and one server type, rather than
//! a generic function per combination. The cost is one indirect call per
//! primitive, nothing next to an RSA or AES-GCM operation.

use std::sync::Arc;

use keyserver::{backends, CipherSuite, KeyStorage};

use super::args::SuiteName;
use super::exit::{usage, Failure};

/// The cipher suite named `name`.
pub(crate) fn suite(name: SuiteName) -> Result<Box<dyn CipherSuite>, Failure> {
    match name {
        SuiteName::Rustcrypto => Ok(Box::new(backends::RustCrypto::new())),
        #[cfg(feature = "cipher-openssl")]
        SuiteName::Openssl => Ok(Box::new(backends::OpenSsl::new())),
        #[cfg(not(feature = "cipher-openssl"))]
        SuiteName::Openssl => Err(usage(
            "--suite openssl: this keyserver was built without the cipher-openssl feature",
        )),
    }
}

/// The storage `spec` names: `memory`, or `file:DIR` keeping `cache_records`
/// verified records in memory.
pub(crate) async fn storage(
    spec: &str,
    cache_records: usize,
) -> Result<Arc<dyn KeyStorage>, Failure> {
    if spec == "memory" {
        return Ok(Arc::new(backends::MemoryStorage::new()));
    }
    match spec.strip_prefix("file:") {
        Some(dir) if !dir.is_empty() => {
            let store = backends::FileStorage::open(dir).await?;
            // The directory lock makes this process the only writer: what
            // the record cache needs.
            Ok(Arc::new(backends::RecordCache::new(store, cache_records)))
        }
        _ => Err(usage(format!(
            "--storage: expected \"memory\" or \"file:DIR\", not {spec:?}"
        ))),
    }
}
