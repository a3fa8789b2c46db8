//! The stored wrapped-DEK record: as read (checksum first), and with the
//! checksum recomputed, so that every field check behind it is reached.
#![no_main]

use keyserver::{KeyId, WrappedDek};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    let expected = match data.get(16..48) {
        Some(id) => KeyId::from_bytes(id.try_into().expect("32 bytes")),
        None => KeyId::from_bytes([0; 32]),
    };
    let _ = WrappedDek::decode(data, &expected);
    // The same bytes as a record body with a valid checksum.
    let mut sealed = data.to_vec();
    sealed.extend_from_slice(&Sha256::digest(data));
    if let Ok(record) = WrappedDek::decode(&sealed, &expected) {
        // What decodes encodes back to the same bytes.
        assert_eq!(record.encode(), sealed);
    }
});
