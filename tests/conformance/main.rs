//! One test binary (one link on a small machine) holding the library's
//! tests through the `keyserver` facade. (The conformance kit runs on each
//! backend from the backend's own crate, `backends/*/tests/conformance.rs`;
//! the `keyserver` command's tests are in `cli/tests`.)
//! - `file`: what only the file backend promises (durability, locking,
//!   permissions, corruption detection), and `crash`: kill -9 at random
//!   moments loses no acknowledged record;
//! - `seed`: the original key server's narrative, step by step;
//! - `transport`: the client narrative and cache rules over every transport,
//!   one macro line each (in-process, XML-RPC and JSON-RPC on loopback);
//! - `wire`: raw bad input against running servers, TLS and mutual TLS;
//! - `docs`: the Python and curl examples of docs/PROTOCOL.md, run as written;
//! - `formats`: known-answer vectors of the record format;
//! - `fuzz_seeds`: every fuzz target's seed inputs, through the fuzz bodies;
//! - `properties`: property tests of the envelope and the parsers;
//! - `policy`: SP 800-57 strengths end to end, with fixture KEKs;
//! - `forgery`: a KEK forged from a public key gets no DEK anywhere;
//! - `durability`: the fsync discipline, on the system calls (strace);
//! - `secrets`: no key material in `Debug`, `Display` or errors;
//! - `awslc`: the AWS-LC suite's hybrid keys across suites, and the FIPS
//!   status over both protocols;
//! - `interop`: RustCrypto, OpenSSL and AWS-LC read each other's keys, records and
//!   ciphertexts, and the `openssl` command line agrees with both.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[cfg(all(
    feature = "cipher-awslc",
    feature = "cipher-rustcrypto",
    feature = "storage-memory",
    feature = "transport-xmlrpc",
    feature = "transport-jsonrpc"
))]
mod awslc;
#[cfg(all(feature = "storage-file", feature = "cipher-rustcrypto"))]
mod compat;
#[cfg(all(feature = "storage-file", feature = "testing"))]
mod crash;
#[cfg(all(feature = "storage-file", feature = "testing"))]
mod durability;
#[cfg(all(
    feature = "cipher-rustcrypto",
    feature = "cipher-openssl",
    feature = "storage-memory",
    feature = "testing"
))]
mod ec;
#[cfg(all(feature = "storage-file", feature = "testing"))]
mod file;
#[cfg(all(
    feature = "testing",
    any(
        feature = "cipher-rustcrypto",
        feature = "cipher-openssl",
        feature = "cipher-awslc"
    )
))]
mod forgery;
mod formats;
#[cfg(feature = "testing")]
mod fuzz_seeds;
#[cfg(all(
    feature = "cipher-rustcrypto",
    feature = "storage-memory",
    feature = "policy",
    feature = "testing"
))]
mod guarantees;
#[cfg(all(
    feature = "cipher-rustcrypto",
    feature = "storage-memory",
    feature = "storage-file",
    feature = "transport-xmlrpc",
    feature = "transport-jsonrpc"
))]
mod lifecycle;
#[cfg(all(feature = "cipher-rustcrypto", feature = "storage-memory"))]
mod limits;

#[cfg(all(
    feature = "cipher-rustcrypto",
    feature = "testing",
    feature = "transport-xmlrpc",
    feature = "transport-jsonrpc"
))]
mod docs;
#[cfg(all(
    feature = "cipher-rustcrypto",
    feature = "cipher-openssl",
    feature = "storage-memory"
))]
mod interop;
#[cfg(all(feature = "cipher-rustcrypto", feature = "testing"))]
mod policy;
#[cfg(feature = "cipher-rustcrypto")]
mod properties;
#[cfg(all(
    feature = "cipher-rustcrypto",
    feature = "storage-memory",
    feature = "storage-file",
    feature = "transport-xmlrpc",
    feature = "transport-jsonrpc"
))]
mod secrets;
#[cfg(all(feature = "cipher-rustcrypto", feature = "storage-memory"))]
mod seed;
#[cfg(all(feature = "cipher-rustcrypto", feature = "testing"))]
mod transport;
#[cfg(all(
    feature = "cipher-rustcrypto",
    feature = "testing",
    feature = "transport-xmlrpc",
    feature = "transport-jsonrpc"
))]
mod wire;
