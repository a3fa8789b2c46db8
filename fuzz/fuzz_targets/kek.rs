//! KEKs from callers: PEM, PKCS#8 DER (RSA and EC) and the hybrid key
//! document, and for what parses (RSA up to 4096 bits, to keep each run
//! short) the key-pair consistency check.
#![no_main]

use keyserver::backends::RustCrypto;
use keyserver::{CipherSuite, Kek, KekAlg};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Kek::from_pem(text);
    }
    let suite = RustCrypto::new();
    if let Ok(kek) = Kek::from_pkcs8_der(data) {
        match kek.alg() {
            KekAlg::Rsa => {
                assert!(kek.bits() >= 2048);
                if kek.bits() <= 4096 {
                    let _ = suite.rsa_check_key_pair(data);
                }
            }
            KekAlg::Ec => {
                assert!(kek.curve().is_some());
                let _ = suite.ec_check_key_pair(data);
            }
            // ok: a kind PKCS#8 cannot hold is a bug the fuzzer must report.
            _ => unreachable!("PKCS#8 holds RSA and EC keys only"),
        }
    }
    if Kek::from_hybrid_der(data).is_ok() {
        let _ = keyserver::hybrid::check_key_pair(&suite, data);
    }
});
