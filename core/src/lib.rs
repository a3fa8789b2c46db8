//! # keyserver-core
//!
//! The core of [keyserver](https://github.com/keyserver/keyserver): the key
//! service and the plugin API its backends are written against. Applications
//! depend on the `keyserver` crate, which re-exports this one and adds the
//! backends chosen by its Cargo features; backend authors depend on this one
//! (see [`plugin`]).
//!
//! What is here: [`KeyServer`] and [`KeyClient`], the [`Encryption`] trait
//! both implement, the key types ([`Kek`], [`Dek`], [`KeyId`], [`Strength`]),
//! the one [`Error`] with its stable [`ErrorCode`]s, the wire API ([`api`]),
//! the byte formats ([`envelope`], [`stream`], [`transfer`]), the KEK
//! algorithms ([`hpke`], [`hybrid`]), the generic transports
//! ([`transports`]) and, with the feature `policy`, the server's policy
//! layers. No cipher suite, storage or network protocol is in this crate:
//! each is a crate of its own on the public [`plugin`] API.
//!
//! Every example in these docs is written as an application sees it, through
//! the `keyserver` crate.

// No unsafe code, except one reviewed FFI module in each C-library suite
// (`backends/openssl.rs`, `mod kdf`; `backends/awslc.rs`, `mod ffi`) and the two libc calls that read and
// raise the descriptor limit (`transports/http/src/server/conn.rs`), which opt in
// explicitly.
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(test, allow(clippy::unwrap_used))]

// The unit tests compile the memory storage and the RustCrypto suite into
// this crate's test build (see `test_backends`), whose sources name the core
// by its crate name.
#[cfg(test)]
extern crate self as keyserver_core;

pub mod api;
mod blocking;
mod caller;
mod client;
pub mod crypto;
mod encryption;
pub mod error;
mod format;
mod kek;
pub mod plugin;
pub mod seal;
mod server;
#[cfg(feature = "shares")]
#[cfg_attr(docsrs, doc(cfg(feature = "shares")))]
pub mod shares;
mod storage;

// The public modules of the folders, where applications have always found
// them, and short names for the crate's own paths (`crate::ec`).
use client::transport;
pub use client::transports;
use format::record;
pub use format::{envelope, stream, transfer};
use kek::{ec, key};
pub use kek::{hpke, hybrid};
use server::{cache, keeper, lifecycle, pool, work};

#[cfg(feature = "policy")]
#[cfg_attr(docsrs, doc(cfg(feature = "policy")))]
pub mod policy;

pub use api::{KeyService, Status};
#[allow(deprecated)]
pub use client::DEFAULT_CACHE_TIMEOUT;
pub use client::{KeyClient, UnwrapMode, DEFAULT_CACHE_CAPACITY, DEFAULT_CACHE_TTL};
pub use crypto::{CipherSuite, HkdfHash, MlKem};
pub use ec::Curve;
pub use encryption::Encryption;
pub use error::{Error, ErrorCode, Result};
pub use hybrid::HybridKem;
pub use keeper::Clock;
pub use key::{Dek, Kek, KekAlg, KeyId, Plaintext, Strength};
pub use lifecycle::{
    Change, KeyFilter, KeyInfo, KeyMeta, KeyPage, KeyState, Target, DEFAULT_CRYPTOPERIOD,
    DEFAULT_DESTROY_WINDOW, MAX_PAGE,
};
pub use record::WrappedDek;
pub use server::{default_generate_workers, KeyServer, DEFAULT_GENERATE_QUEUE};
pub use storage::KeyStorage;
pub use transport::Transport;

/// Re-exported for implementing this crate's async traits ([`KeyStorage`],
/// [`KeyService`], [`Transport`]) outside it, with the same version.
pub use async_trait::async_trait;

// Former homes of the backend authors' helpers, now in `plugin`: kept so
// code written against them still compiles.
#[doc(hidden)]
pub use plugin::{
    blocking, rsa_public_parts, GCM_NONCE_LEN, GCM_TAG_LEN, MAX_RSA_BITS, MIN_RSA_BITS,
};

/// The backends the unit tests run on (see the file).
#[cfg(test)]
mod test_backends;

/// This crate's version, as reported by `status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
