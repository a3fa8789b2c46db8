//! For backend authors: what a cipher suite or a storage backend implements,
//! and the helpers it may use, apart from the application API at the crate
//! root (as `rustls::crypto` is for crypto providers).
//!
//! - [`CipherSuite`]: primitives only (RSA key generation and OAEP-SHA256,
//!   HKDF-SHA256, AES-GCM, random bytes; EC key generation, ECDH and
//!   HKDF with SHA-2 for EC KEKs). The core owns every format (HPKE included) and
//!   enforces every size limit of its formats before it calls a suite; a
//!   suite knows the limits of its primitives ([`GCM_MAX_PLAINTEXT`],
//!   [`MIN_RSA_BITS`]..=[`MAX_RSA_BITS`]) and nothing of the data formats.
//! - [`KeyStorage`]: create-only records by key id.
//! - [`blocking`], [`rsa_public_parts`], [`ec_private_parts`],
//!   [`ec_public_point`], [`ec_pkcs8_der`], [`unsupported`] and [`async_trait`](macro@async_trait) (re-exported so
//!   a backend crate's `#[async_trait]` matches this crate's).
//!
//! A backend proves itself with the conformance kit (feature `testing`):
//! `keyserver::cipher_conformance!` or `keyserver::storage_conformance!`,
//! one line. `examples/custom_storage.rs` is a complete third-party storage.

pub use crate::blocking::blocking;
pub use crate::cache::{RecordCache, DEFAULT_CACHE_RECORDS};
pub use crate::crypto::{
    ec_kek, hybrid_kek, reserve_wiped, unsupported, Aead, CipherSuite, EcKek, GcmKey, HkdfHash,
    HybridKek, Kdf, MlKem, RsaKek, SecureRandom, GCM_MAX_PLAINTEXT, GCM_NONCE_LEN, GCM_TAG_LEN,
};
pub use crate::ec::{
    check_point_form, ec_pkcs8_der, ec_private_parts, ec_public_point, EcPrivateParts,
};
pub use crate::error::NotSent;
pub use crate::key::{rsa_public_parts, MAX_RSA_BITS, MIN_RSA_BITS};
pub use crate::record::{unwrap_now, wrap_dek};
pub use crate::storage::{KeyLock, KeyStorage, Lease};
pub use async_trait::async_trait;
