//! KEKs from callers: PEM, PKCS#8 DER (RSA and EC) and the hybrid key
//! document, and for what parses (RSA up to 4096 bits, to keep each run
//! short) the key-pair consistency check.
//!
//! The body is `keyserver::testing::fuzz::kek` (shared with the seed
//! replay in the tests).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| keyserver::testing::fuzz::kek(data));
