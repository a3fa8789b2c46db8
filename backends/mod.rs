//! Backends: cipher suites ([`CipherSuite`](crate::CipherSuite)) and storages
//! ([`KeyStorage`](crate::KeyStorage)), each behind its own Cargo feature.
//!
//! Backends use only the crate's public API (the backend authors' part of it
//! is [`crate::plugin`]), as an outside crate would.

#[cfg(feature = "cipher-awslc")]
mod awslc;
#[cfg(feature = "storage-file")]
mod file;
#[cfg(feature = "storage-memory")]
mod memory;
#[cfg(feature = "cipher-openssl")]
mod openssl;
#[cfg(feature = "storage-postgres")]
mod postgres;
#[cfg(feature = "cipher-rustcrypto")]
mod rustcrypto;

#[cfg(feature = "cipher-openssl")]
#[cfg_attr(docsrs, doc(cfg(feature = "cipher-openssl")))]
pub use self::openssl::OpenSsl;
#[cfg(feature = "cipher-awslc")]
#[cfg_attr(docsrs, doc(cfg(feature = "cipher-awslc")))]
pub use awslc::AwsLc;
#[cfg(feature = "storage-file")]
#[cfg_attr(docsrs, doc(cfg(feature = "storage-file")))]
pub use file::{Durability, FileStorage};
#[cfg(feature = "storage-memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "storage-memory")))]
pub use memory::MemoryStorage;
#[cfg(feature = "storage-postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "storage-postgres")))]
pub use postgres::{Feed, PostgresOptions, PostgresStorage, SCHEMA_VERSION};
#[cfg(feature = "cipher-rustcrypto")]
#[cfg_attr(docsrs, doc(cfg(feature = "cipher-rustcrypto")))]
pub use rustcrypto::RustCrypto;

pub use crate::cache::{RecordCache, DEFAULT_CACHE_RECORDS};
