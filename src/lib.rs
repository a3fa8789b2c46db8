//! # keyserver
//!
//! Envelope encryption with split knowledge (NIST SP 800-57): the key that
//! encrypts the data never sits next to the data, nor in plain form anywhere.
//!
//! 1. [`KeyServer::generate`] creates a key-encryption key (KEK, an
//!    asymmetric key pair: RSA, EC or hybrid post-quantum) and a
//!    data-encryption key (DEK, an AES key), wraps the DEK with the KEK's
//!    public half (RSA-OAEP-SHA256, or HPKE for EC and hybrid KEKs), stores
//!    only the wrapped DEK, and returns the private KEK to the caller.
//! 2. The caller keeps the KEK. With it, [`KeyServer::get`] returns the DEK,
//!    and [`KeyServer::encrypt`] / [`KeyServer::decrypt`] seal and open data
//!    in the [`envelope`] format (HKDF-SHA256 per-message keys, AES-GCM).
//! 3. The wrapping key is always at least as strong as the key it protects
//!    ([`Strength`]).
//!
//! # The shape of the crate
//!
//! This crate is the one name applications depend on. It re-exports
//! `keyserver-core` (the key service, the formats and the plugin API) and,
//! through its Cargo features, the backend crates: each cipher suite and
//! storage is a crate of its own, built only on the public [`plugin`] API,
//! as a third party's backend would be.
//!
//! The crate root is the application API: [`KeyServer`], [`KeyClient`], the
//! [`Encryption`] trait both implement (code written against it runs locally
//! or remotely unchanged), the key types ([`Kek`], [`Dek`], [`KeyId`],
//! [`Strength`]) and the one [`Error`] with its stable [`ErrorCode`]s.
//! Around it, one module per audience:
//!
//! | module | for | what |
//! | --- | --- | --- |
//! | [`api`] | everyone on the wire | the wire API, defined once: [`KeyService`] (one async method per wire method), [`api::Call`] / [`api::Reply`] and the method table |
//! | [`transports`] | integrators | [`Transport`]s (the client side of a protocol): `XmlRpc`, `JsonRpc`, [`transports::InProcess`]; and `HttpServer`, which serves any [`KeyService`] |
//! | [`backends`] | integrators | the cipher suites and storages this crate ships |
//! | `policy` | servers | the policy layers around a [`KeyService`]: authorization, lifecycle permission, audit, metrics (feature `policy`) |
//! | [`plugin`] | backend authors | the [`CipherSuite`] and [`KeyStorage`] traits and the helpers a backend needs |
//! | `testing` | backend authors | the public conformance kit: one line per trait (feature `testing`) |
//! | [`envelope`], [`stream`] | format readers | the byte formats (also in `docs/FORMAT.md`) |
//!
//! The server is composed at compile time: `KeyServer<C, S>` takes a
//! [`CipherSuite`] `C` and a [`KeyStorage`] `S`, chosen among the backends
//! enabled by Cargo features, and is itself a [`KeyService`]; the HTTP
//! listener serves it as an `Arc<dyn KeyService>`, so its type parameters
//! stop at the composition root. `KeyClient<T>` takes a [`Transport`] `T` to
//! a remote server, caches DEKs and encrypts locally (messages and streams).
//! Every transport is a [`KeyService`] too, so a listener can serve one (a
//! proxy).
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
//! | `cipher-rustcrypto` | `backends::RustCrypto` (crate `keyserver-rustcrypto`: rsa, aes-gcm, hkdf, sha2, the NIST curves, ml-kem) | yes |
//! | `cipher-openssl` | `backends::OpenSsl` (crate `keyserver-openssl`: the system's OpenSSL 3) | no |
//! | `cipher-awslc` | `backends::AwsLc` (crate `keyserver-awslc`: AWS-LC through aws-lc-rs; builds its C library) | no |
//! | `cipher-awslc-fips` | `backends::AwsLc` on AWS-LC's FIPS 140-3 module (needs cmake and Go) | no |
//! | `storage-memory` | `backends::MemoryStorage` (crate `keyserver-memory`) | yes |
//! | `storage-file` | `backends::FileStorage` (crate `keyserver-file`: durable, crash-safe, locked) | no |
//! | `storage-postgres` | `backends::PostgresStorage` (crate `keyserver-postgres`: any number of servers on one database) | no |
//! | `transport-xmlrpc-client` | `transports::XmlRpc` | yes |
//! | `transport-xmlrpc-server` | XML-RPC (`/RPC2`) in `transports::HttpServer` | no |
//! | `transport-jsonrpc-client` | `transports::JsonRpc` | yes |
//! | `transport-jsonrpc-server` | JSON-RPC (`/jsonrpc`) in `transports::HttpServer` | no |
//! | `transport-xmlrpc`, `transport-jsonrpc` | both halves of the protocol | no |
//! | `policy` | `keyserver::policy`: the server's policy layers (authorization, lifecycle permission, audit, metrics) | with any server half |
//! | `testing` | `keyserver::testing` (crate `keyserver-testing`): the conformance kit, and `MockTransport`, a ready mock of [`Transport`] | no |
//! | `shares` | `keyserver::shares`: a KEK or the audit key split into custodian shares, any K of N rebuild it (Shamir over GF(2^8), vsss-rs) | no |
//! | `seal-pkcs11` | `backends::Pkcs11Seal` (crate `keyserver-pkcs11`): records sealed under a master key in an HSM, through PKCS#11 ([`seal`]) | no |
//! | `full` | all of the above but `cipher-awslc-fips` | no |
//!
//! The default is what a client application needs: one cipher suite, the
//! clients of both protocols, and memory storage; no server, no C library,
//! no PostgreSQL. A server takes the server half of its protocol (and a
//! storage); the `keyserver` command is the package `keyserver-cli`.
//!
//! Always available: [`KeyServer`], [`KeyClient`] with its DEK cache, and
//! [`transports::InProcess`]. The wire protocol is documented in
//! `docs/PROTOCOL.md`, the byte formats ([`envelope`], [`stream`], the stored
//! [`WrappedDek`]) in `docs/FORMAT.md`.
//!
//! # Debug builds
//!
//! RSA key generation is big-integer arithmetic, about ten times slower
//! unoptimised: a dependent crate's debug build or test run would take
//! seconds per KEK. Optimise the arithmetic crates in your `Cargo.toml`
//! (profile overrides apply to dependencies; this crate's own settings do
//! not reach yours):
//!
//! ```toml
//! [profile.dev.package."*"]
//! opt-level = 2
//! ```

// No unsafe code here: the FFI of the C-library suites and the descriptor
// limit's libc calls are in their own crates.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(test, allow(clippy::unwrap_used))]

#[doc(inline)]
pub use keyserver_core::*;

/// The cipher suites and storages this crate ships, each a crate of its
/// own, chosen by Cargo features; and the record cache any storage can sit
/// behind.
pub mod backends {
    #[cfg(feature = "cipher-awslc")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cipher-awslc")))]
    #[doc(inline)]
    pub use keyserver_awslc::AwsLc;
    #[cfg(feature = "storage-file")]
    #[cfg_attr(docsrs, doc(cfg(feature = "storage-file")))]
    #[doc(inline)]
    pub use keyserver_file::{Durability, FileStorage};
    #[cfg(feature = "storage-memory")]
    #[cfg_attr(docsrs, doc(cfg(feature = "storage-memory")))]
    #[doc(inline)]
    pub use keyserver_memory::MemoryStorage;
    #[cfg(feature = "cipher-openssl")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cipher-openssl")))]
    #[doc(inline)]
    pub use keyserver_openssl::OpenSsl;
    #[cfg(feature = "seal-pkcs11")]
    #[cfg_attr(docsrs, doc(cfg(feature = "seal-pkcs11")))]
    #[doc(inline)]
    pub use keyserver_pkcs11::{Pkcs11Seal, Pkcs11Uri};
    /// The PKCS#11 seal's token operations: making and destroying master
    /// keys.
    #[cfg(feature = "seal-pkcs11")]
    #[cfg_attr(docsrs, doc(cfg(feature = "seal-pkcs11")))]
    pub mod pkcs11 {
        #[doc(inline)]
        pub use keyserver_pkcs11::{create_key, destroy_key, key_ref};
    }
    #[cfg(feature = "storage-postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "storage-postgres")))]
    #[doc(inline)]
    pub use keyserver_postgres::{Feed, PostgresOptions, PostgresStorage, SCHEMA_VERSION};
    #[cfg(feature = "cipher-rustcrypto")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cipher-rustcrypto")))]
    #[doc(inline)]
    pub use keyserver_rustcrypto::RustCrypto;

    #[doc(inline)]
    pub use keyserver_core::plugin::{RecordCache, DEFAULT_CACHE_RECORDS};
}

#[cfg(feature = "_server")]
mod listener;
pub mod transports;

/// The public conformance kit (crate `keyserver-testing`): checks and
/// macros any backend runs with one line per trait, and a ready mock of
/// [`Transport`].
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing {
    #[doc(inline)]
    pub use keyserver_testing::*;

    pub mod fuzz;
}

#[cfg(feature = "testing")]
#[doc(inline)]
pub use keyserver_testing::{cipher_conformance, storage_conformance, transport_conformance};

/// The README's Rust examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[cfg(test)]
mod feature_table {
    /// The feature table above names every public feature of Cargo.toml,
    /// and nothing else; its "yes" rows are the default features.
    #[test]
    fn the_feature_table_is_cargo_toml_s() {
        let manifest = include_str!("../Cargo.toml");
        let section = manifest
            .split("\n[features]\n")
            .nth(1)
            .and_then(|rest| rest.split("\n[").next())
            .unwrap_or_default();
        let mut features = std::collections::BTreeSet::new();
        let mut default = std::collections::BTreeSet::new();
        for line in section.lines() {
            let Some((name, value)) = line.split_once(" = ") else {
                continue;
            };
            let name = name.trim();
            if name == "default" {
                default = value
                    .split('"')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned)
                    .collect();
            } else if !name.starts_with('_') && !name.starts_with('#') {
                features.insert(name.to_owned());
            }
        }
        // The crate docs' table and README's say the same as Cargo.toml,
        // default features included.
        for (name, text, header, prefix) in [
            (
                "src/lib.rs",
                include_str!("lib.rs"),
                "//! | feature | what it adds | default |",
                "//! | ",
            ),
            (
                "README.md",
                include_str!("../README.md"),
                "| feature | adds | default |",
                "| ",
            ),
        ] {
            let mut tabled = std::collections::BTreeSet::new();
            let mut tabled_default = std::collections::BTreeSet::new();
            let rows = text
                .lines()
                .skip_while(|l| *l != header)
                .skip(2)
                .map_while(|l| l.strip_prefix(prefix));
            for row in rows {
                let cells: Vec<&str> = row.split(" | ").collect();
                let (Some(names), Some(default_cell)) = (cells.first(), cells.last()) else {
                    continue;
                };
                for feature in names.split('`').skip(1).step_by(2) {
                    if default_cell.trim_end_matches(" |").trim() == "yes" {
                        tabled_default.insert(feature.to_owned());
                    }
                    tabled.insert(feature.to_owned());
                }
            }
            assert_eq!(tabled, features, "{name}'s feature table and Cargo.toml");
            assert_eq!(tabled_default, default, "{name}'s default features");
        }
    }

    /// docs.rs badges name the features a user turns on, never the
    /// internal `_client`/`_server`: every public item gated by one of
    /// those says which public features it comes with.
    #[test]
    fn no_public_item_is_badged_with_an_internal_feature() {
        for (name, text) in [
            ("src/lib.rs", include_str!("lib.rs")),
            ("src/transports.rs", include_str!("transports.rs")),
        ] {
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let line = line.trim();
                if line != "#[cfg(feature = \"_server\")]"
                    && line != "#[cfg(feature = \"_client\")]"
                {
                    continue;
                }
                // The attributes up to the item they are on.
                let item: Vec<&str> = lines[i..]
                    .iter()
                    .map(|l| l.trim())
                    .take_while(|l| {
                        !l.starts_with("pub ") && !l.starts_with("mod ") && !l.starts_with("fn ")
                    })
                    .collect();
                let public = lines[i + item.len()..]
                    .first()
                    .is_some_and(|l| l.trim().starts_with("pub "));
                // Attributes above the gate count too.
                let above = lines[..i]
                    .iter()
                    .rev()
                    .take_while(|l| l.trim().starts_with("#["))
                    .any(|l| l.contains("doc(hidden)"));
                let hidden = above || item.iter().any(|l| l.contains("doc(hidden)"));
                if public && !hidden {
                    assert!(
                        item.iter().any(|l| l.contains("doc(cfg(")),
                        "{name}:{}: a public item behind an internal feature needs doc(cfg(..))",
                        i + 1
                    );
                }
            }
        }
    }
}
