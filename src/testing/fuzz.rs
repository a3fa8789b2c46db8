//! The bodies of the fuzz targets (`fuzz/fuzz_targets/*.rs`), one function
//! each, so that `cargo fuzz` and the tests run the same checks: each fuzz
//! target is one line calling its function here, and the conformance tests
//! replay every seed input (`fuzz/seeds/TARGET/*`) through them on every
//! `cargo test --all-features` (`tests/conformance/fuzz_seeds.rs`).
//!
//! Each function takes arbitrary bytes, never fails, and panics only when a
//! check fails (a finding). The long runs are made by hand with
//! `fuzz/run.sh` (SECURITY.md records them).
//!
//! ```
//! keyserver::testing::fuzz::record(b"KSWR not a record");
//! ```

use sha2::{Digest, Sha256};

use crate::{KeyId, WrappedDek};

/// The stored wrapped-DEK record: as read (checksum first), and with the
/// checksum recomputed, so that every field check behind it is reached.
/// What decodes must encode back to the same bytes.
pub fn record(data: &[u8]) {
    let expected = match data.get(16..48) {
        Some(id) => KeyId::from_bytes(id.try_into().expect("32 bytes")), // ok: get(16..48) is 32 bytes
        None => KeyId::from_bytes([0; 32]),
    };
    let _ = WrappedDek::decode(data, &expected);
    // The same bytes as a record body with a valid checksum.
    let mut sealed = data.to_vec();
    sealed.extend_from_slice(&Sha256::digest(data));
    if let Ok(record) = WrappedDek::decode(&sealed, &expected) {
        assert_eq!(record.encode(), sealed);
    }
}

/// The message envelope, either version: header parsing, then opening.
/// The input is a 128-bit DEK followed by an envelope (the seeds are the
/// known-answer vectors of both versions with an empty context, so the
/// commitment and AEAD paths are reached). Only a sealed envelope opens:
/// sealing it again under its header's salt and nonce (version 1) or salt
/// and message number (version 2) gives the same bytes.
#[cfg(feature = "cipher-rustcrypto")]
pub fn envelope(input: &[u8]) {
    use crate::backends::RustCrypto;
    use crate::{envelope, Dek};
    let Some((key, data)) = input.split_first_chunk::<16>() else {
        return;
    };
    let dek = Dek::from_bytes(key).expect("a 128-bit DEK"); // ok: a 16-byte chunk
    let _ = envelope::Header::parse(data);
    if let Ok(plaintext) = envelope::open(&RustCrypto::new(), &dek, b"", data) {
        let header = envelope::Header::parse(data).expect("opened, so parsed"); // ok: fuzz oracle
        if data[3] == envelope::VERSION_2 {
            // A session numbers its messages below 2^32: other nonces are
            // readable, but no session writes them.
            let number = u64::from_be_bytes(header.nonce[4..].try_into().expect("8 bytes")); // ok: 12-byte nonce
            if header.nonce[..4] == [0; 4] && number < envelope::SESSION_MAX_MESSAGES {
                let session = envelope::Session::with_salt_and_counter(
                    &RustCrypto::new(),
                    &header.key_id,
                    &dek,
                    header.salt,
                    number,
                )
                .expect("a session"); // ok: fuzz oracle
                let mut again = Vec::new();
                session
                    .seal_into(&RustCrypto::new(), b"", &plaintext, &mut again)
                    .expect("sealed again"); // ok: fuzz oracle
                assert_eq!(again, data);
            }
            return;
        }
        let again = envelope::seal_with_salt_and_nonce(
            &RustCrypto::new(),
            &header.key_id,
            &dek,
            b"",
            &plaintext,
            header.salt,
            header.nonce,
        );
        assert_eq!(again.as_deref().ok(), Some(data));
    }
}

/// The streaming format: header, then chunks. The input is a 128-bit DEK
/// followed by a stream (the seeds are the known-answer vectors). A stream
/// that fails writes nothing it has not authenticated.
#[cfg(feature = "cipher-rustcrypto")]
pub fn stream(input: &[u8]) {
    use crate::backends::RustCrypto;
    use crate::{stream, Dek};
    let Some((key, data)) = input.split_first_chunk::<16>() else {
        return;
    };
    let dek = Dek::from_bytes(key).expect("a 128-bit DEK"); // ok: a 16-byte chunk
    let mut out = Vec::new();
    if let Ok(n) = stream::decrypt(&RustCrypto::new(), &dek, data, &mut out) {
        assert_eq!(n, out.len() as u64);
    } else {
        // Whatever reached `out` was a whole authenticated chunk.
        assert!(out.len() as u64 <= data.len() as u64);
    }
}

/// KEKs from callers: PEM, PKCS#8 DER (RSA and EC) and the hybrid key
/// document, and for what parses (RSA up to 4096 bits, to keep each run
/// short) the key-pair consistency check.
#[cfg(feature = "cipher-rustcrypto")]
pub fn kek(data: &[u8]) {
    use crate::backends::RustCrypto;
    use crate::crypto::{EcKek, RsaKek};
    use crate::{Kek, KekAlg};
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
            other => panic!("PKCS#8 holds RSA and EC keys only, not {other:?}"), // ok: fuzz oracle
        }
    }
    if Kek::from_hybrid_der(data).is_ok() {
        let _ = crate::hybrid::check_key_pair(&suite, data);
    }
}

/// The `/RPC2` request decoder, from raw body to a call of the wire API:
/// errors are typed, with a wire code.
#[cfg(feature = "transport-xmlrpc-server")]
pub fn xmlrpc_request(data: &[u8]) {
    if let Err(e) = crate::transports::fuzzing::xmlrpc_request(data) {
        assert!(e.kind().is_some());
    }
}

/// The `/jsonrpc` request decoder, from raw body to calls of the wire API:
/// errors are typed, with a wire code; and the endpoint's single-call path,
/// on every body it takes, reads the same call (or the same error).
#[cfg(feature = "transport-jsonrpc-server")]
pub fn jsonrpc_request(data: &[u8]) {
    let general = crate::transports::fuzzing::jsonrpc_request(data);
    for call in &general {
        if let Err(e) = call {
            assert!(e.kind().is_some());
        }
    }
    // The endpoint's single-call path, where it takes the body, reads the
    // call the general decoder reads, or refuses it with the same error.
    if let Some(single) = crate::transports::fuzzing::jsonrpc_single(data) {
        assert_eq!(general.len(), 1, "the single-call path took a batch");
        match (&single, &general[0]) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            // ok: a disagreement is the finding (this is a fuzz body)
            _ => panic!("the single-call path and the general decoder disagree"), // ok: fuzz oracle
        }
    }
}
