//! The stored wrapped-DEK record: as read (checksum first), and with the
//! checksum recomputed, so that every field check behind it is reached.
//!
//! The body is `keyserver::testing::fuzz::record` (shared with the seed
//! replay in the tests).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| keyserver::testing::fuzz::record(data));
