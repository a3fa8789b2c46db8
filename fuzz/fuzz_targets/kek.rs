//! KEKs from callers: PEM and PKCS#8 DER parsing, and for what parses (up to
//! 4096 bits, to keep each run short) the key-pair consistency check.
#![no_main]

use keyserver::backends::RustCrypto;
use keyserver::{CipherSuite, Kek};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Kek::from_pem(text);
    }
    if let Ok(kek) = Kek::from_pkcs8_der(data) {
        assert!(kek.bits() >= 2048);
        if kek.bits() <= 4096 {
            let _ = RustCrypto::new().rsa_check_key_pair(data);
        }
    }
});
