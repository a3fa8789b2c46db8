//! The `/jsonrpc` request decoder, from raw body to calls of the wire API.
#![no_main]

use keyserver::transports::fuzzing::jsonrpc_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for call in jsonrpc_request(data) {
        if let Err(e) = call {
            assert!(e.kind().is_some());
        }
    }
});
