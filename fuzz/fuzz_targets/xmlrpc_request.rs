//! The `/RPC2` request decoder, from raw body to a call of the wire API.
//!
//! The body is `keyserver::testing::fuzz::xmlrpc_request` (shared with the seed
//! replay in the tests).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| keyserver::testing::fuzz::xmlrpc_request(data));
