//! The public conformance kit on this suite, from its own crate: what any
//! third-party suite runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

keyserver_testing::cipher_conformance!(rustcrypto, keyserver_rustcrypto::RustCrypto::new());
