//! The message envelope: header parsing, then opening. The input is a
//! 128-bit DEK followed by an envelope (the seeds are the known-answer
//! vectors with an empty context, so the AEAD path is reached).
//!
//! The body is `keyserver::testing::fuzz::envelope` (shared with the seed
//! replay in the tests).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| keyserver::testing::fuzz::envelope(data));
