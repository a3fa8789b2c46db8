//! The streaming format: header, then chunks. The input is a 128-bit DEK
//! followed by a stream (the seeds are the known-answer vectors).
//!
//! The body is `keyserver::testing::fuzz::stream` (shared with the seed
//! replay in the tests).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| keyserver::testing::fuzz::stream(data));
