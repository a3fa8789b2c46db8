//! The `/RPC2` request decoder, from raw body to a call of the wire API.
#![no_main]

use keyserver::transports::fuzzing::xmlrpc_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = xmlrpc_request(data) {
        // Errors are typed, with a wire code, and never quote the request.
        assert!(e.kind().is_some());
    }
});
