//! The public conformance kit (feature `testing`): the checks this crate's
//! own backends pass, for any backend, including one written in another
//! crate, to run with one line per trait.
//!
//! - [`cipher`]: every [`CipherSuite`] primitive against
//!   known answers, round trips and rejections:
//!   [`cipher_conformance!`](crate::cipher_conformance).
//! - [`storage`]: the [`KeyStorage`](keyserver_core::KeyStorage) contract:
//!   [`storage_conformance!`](crate::storage_conformance).
//! - [`transport`]: a [`Transport`](keyserver_core::Transport) to a live server, with
//!   the client's cache rules and typed errors:
//!   [`transport_conformance!`](crate::transport_conformance).
//! - [`set_up_rpc`]: the original key server's `testing.setUpRPC`, a [`KeyClient`] wired to
//!   an in-process server.
//!
//! The checks panic on the first failure, with a message naming what broke,
//! as test code does. The macros expand to plain `#[test]` functions that
//! run on their own Tokio runtime: a dependent crate needs no test
//! dependencies of its own. `examples/custom_storage.rs` shows a third-party
//! storage backend proving itself this way.
//!
//! ```
//! # #[cfg(feature = "cipher-rustcrypto")]
//! # keyserver::testing::run(async {
//! use keyserver::Encryption;
//! use keyserver::backends::RustCrypto;
//!
//! let (server, client) = keyserver::testing::set_up_rpc(RustCrypto::new());
//! let kek = client.generate().await?;
//! let sealed = client.encrypt(&kek, b"data").await?;
//! assert_eq!(&server.decrypt(&kek, &sealed).await?[..], b"data");
//! # Ok::<(), keyserver::Error>(())
//! # }).unwrap();
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::sync::Arc;

use keyserver_core::transports::InProcess;
use keyserver_core::{CipherSuite, KeyClient, KeyServer};

pub mod cipher;
pub mod ec;
pub mod fixtures;
pub mod mock;
pub mod storage;
pub mod transport;

pub use mock::MockTransport;

/// The storage the kit's transport checks and [`set_up_rpc`] run on.
pub use keyserver_memory::MemoryStorage;

/// The core, for the kit's macros (`$crate::__core::KeyServer`).
#[doc(hidden)]
pub use keyserver_core as __core;

/// Runs `future` to completion on a new two-worker Tokio runtime (what the
/// kit's macros use for each check).
///
/// # Panics
/// If the runtime cannot be built.
pub fn run<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime")
        .block_on(future)
}

/// The original key server's `testing.setUpRPC`: a key server on memory storage with
/// `suite`, and a [`KeyClient`] wired to it in process, encrypting locally
/// with a copy of the suite.
pub fn set_up_rpc<C: CipherSuite + Clone>(
    suite: C,
) -> (Arc<KeyServer<C, MemoryStorage>>, KeyClient<InProcess>) {
    let server = Arc::new(KeyServer::new(suite, MemoryStorage::new()));
    let client = InProcess::client(Arc::clone(&server));
    (server, client)
}
