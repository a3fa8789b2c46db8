//! The message envelope: header parsing, then opening. The input is a
//! 128-bit DEK followed by an envelope (the seeds are the known-answer
//! vectors with an empty context, so the AEAD path is reached).
#![no_main]

use keyserver::backends::RustCrypto;
use keyserver::{envelope, Dek};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((key, data)) = input.split_first_chunk::<16>() else {
        return;
    };
    let dek = Dek::from_bytes(key).expect("a 128-bit DEK");
    let _ = envelope::Header::parse(data);
        if let Ok(plaintext) = envelope::open(&RustCrypto::new(), &dek, b"", data) {
        // Only a sealed envelope opens: sealing it again under the header's
        // salt and nonce gives the same bytes.
        let header = envelope::Header::parse(data).expect("opened, so parsed");
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
});
