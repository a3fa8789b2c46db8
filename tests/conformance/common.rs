//! Shared helpers: fixtures and vectors.

#![allow(dead_code)]

use keyserver::Kek;

/// The checked-in KEK of `bits` bits (2048, 3072, 7680, 15360), made with
/// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:BITS`.
pub fn fixture_kek(bits: usize) -> Kek {
    let path = format!(
        "{}/tests/fixtures/kek-rsa{bits}.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let pem = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Kek::from_pem(&pem).unwrap()
}

/// A vector file under tests/vectors/, parsed.
pub fn vectors(name: &str) -> Vec<serde_json::Value> {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// A hex field of a vector.
pub fn hex_field(v: &serde_json::Value, field: &str) -> Vec<u8> {
    hex::decode(v[field].as_str().unwrap()).unwrap()
}

/// `n` bytes of a repeating, non-trivial pattern.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + i / 251) as u8).collect()
}

/// A check that cannot run on this machine (a tool or a privilege is
/// missing). In CI (`CI` set) that is a failure: `.ci/run` installs what
/// these tests need, so nothing may be skipped there. Elsewhere the skip is
/// written straight to the process's stderr, past the test harness's
/// capture, so it is seen rather than read as "ok".
pub fn unavailable(what: &str, why: impl std::fmt::Display) {
    if std::env::var_os("CI").is_some() {
        panic!("{what} cannot run: {why} (CI must provide it)");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {what}: {why}");
}
