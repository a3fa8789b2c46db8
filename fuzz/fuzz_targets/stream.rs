//! The streaming format: header, then chunks. The input is a 128-bit DEK
//! followed by a stream (the seeds are the known-answer vectors).
#![no_main]

use keyserver::backends::RustCrypto;
use keyserver::{stream, Dek};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((key, data)) = input.split_first_chunk::<16>() else {
        return;
    };
    let dek = Dek::from_bytes(key).expect("a 128-bit DEK");
        let mut out = Vec::new();
    if let Ok(n) = stream::decrypt(&RustCrypto::new(), &dek, data, &mut out) {
        assert_eq!(n, out.len() as u64);
    } else {
        // A stream that fails writes nothing it has not authenticated:
        // whatever reached `out` was a whole authenticated chunk.
        assert!(out.len() as u64 <= data.len() as u64);
    }
});
