//! Cipher-suite conformance: every [`CipherSuite`] must pass every check
//! here: known answers from an independent implementation (pyca/cryptography,
//! RFC 5869, the GCM specification), round trips, rejections of tampered
//! input, and RSA-OAEP at every size. Run them all with one
//! [`cipher_conformance!`](crate::cipher_conformance) line.

use keyserver_core::envelope::{self, Header, HEADER_LEN, OVERHEAD};
use keyserver_core::stream;
use keyserver_core::{CipherSuite, Dek, Error, Kek, KeyId, Strength};

use super::fixtures::{fixture_kek, hex_field, pattern, vectors};

/// Seals each vector of testing/vectors/envelope_v1.json to exactly its bytes
/// and opens it back.
pub fn envelope_vectors<C: CipherSuite>(suite: &C) {
    let cases = vectors("envelope_v1.json");
    assert!(cases.len() >= 7);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let dek = Dek::from_bytes(&hex_field(case, "dek")).unwrap();
        let key_id = KeyId::from_bytes(hex_field(case, "key_id").try_into().unwrap());
        let salt: [u8; 32] = hex_field(case, "salt").try_into().unwrap();
        let nonce: [u8; 12] = hex_field(case, "nonce").try_into().unwrap();
        let context = hex_field(case, "context");
        let plaintext = hex_field(case, "plaintext");
        let expected = hex_field(case, "envelope");
        let sealed = envelope::seal_with_salt_and_nonce(
            suite, &key_id, &dek, &context, &plaintext, salt, nonce,
        )
        .unwrap();
        assert_eq!(hex::encode(&sealed), hex::encode(&expected), "{name}");
        let opened = envelope::open(suite, &dek, &context, &expected).unwrap();
        assert_eq!(&opened[..], &plaintext[..], "{name}");
        assert_eq!(Header::parse(&expected).unwrap().key_id, key_id, "{name}");
    }
}

/// RFC 5869 test case 1 (HKDF-SHA256).
pub fn hkdf_rfc5869<C: CipherSuite>(suite: &C) {
    let ikm = [0x0b; 22];
    let salt = hex::decode("000102030405060708090a0b0c").unwrap();
    let info = hex::decode("f0f1f2f3f4f5f6f7f8f9").unwrap();
    let mut okm = [0u8; 42];
    suite.hkdf_sha256(&ikm, &salt, &info, &mut okm).unwrap();
    assert_eq!(
        hex::encode(okm),
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    );
    let mut too_long = vec![0u8; 255 * 32 + 1];
    assert!(suite
        .hkdf_sha256(&ikm, &salt, &info, &mut too_long)
        .is_err());
}

/// The GCM specification's test cases 1 and 2 (AES-128, zero key and nonce).
pub fn aes_gcm_known_answers<C: CipherSuite>(suite: &C) {
    let key = [0u8; 16];
    let nonce = [0u8; 12];
    let tag_only = suite.aes_gcm_seal(&key, &nonce, b"", b"").unwrap();
    assert_eq!(hex::encode(&tag_only), "58e2fccefa7e3061367f1d57a4e7455a");
    let sealed = suite.aes_gcm_seal(&key, &nonce, b"", &[0u8; 16]).unwrap();
    assert_eq!(
        hex::encode(&sealed),
        "0388dace60b6a392f328c2b971b2fe78ab6e47d42cec13bdf53a67b21257bddf"
    );
    assert_eq!(
        &suite.aes_gcm_open(&key, &nonce, b"", &sealed).unwrap()[..],
        &[0u8; 16]
    );
    // Keys of every size work; any other size is an invalid key.
    for len in [16, 24, 32] {
        let k = vec![3u8; len];
        let s = suite.aes_gcm_seal(&k, &nonce, b"a", b"data").unwrap();
        assert_eq!(
            &suite.aes_gcm_open(&k, &nonce, b"a", &s).unwrap()[..],
            b"data"
        );
        assert!(matches!(
            suite.aes_gcm_open(&k, &nonce, b"b", &s),
            Err(Error::DecryptionFailed)
        ));
    }
    for len in [0, 15, 17, 33] {
        assert!(matches!(
            suite.aes_gcm_seal(&vec![0; len], &nonce, b"", b"x"),
            Err(Error::InvalidKey { .. })
        ));
    }
    // Shorter than a tag: an authentication failure, not a panic.
    assert!(matches!(
        suite.aes_gcm_open(&key, &nonce, b"", &[0u8; 15]),
        Err(Error::DecryptionFailed)
    ));
}

/// The in-place primitives give the same bytes as the allocating ones, and a
/// failed open leaves no unauthenticated plaintext behind (the buffer is
/// zeroed), whatever was wrong.
pub fn aes_gcm_in_place<C: CipherSuite>(suite: &C) {
    let nonce = [9u8; 12];
    for len in [16, 24, 32] {
        let key = vec![len as u8; len];
        for size in [0usize, 1, 15, 16, 17, 4096, 70_000] {
            let plaintext = pattern(size);
            let mut buf = plaintext.clone();
            let tag = suite
                .aes_gcm_seal_in_place(&key, &nonce, b"aad", &mut buf)
                .unwrap();
            let sealed = suite
                .aes_gcm_seal(&key, &nonce, b"aad", &plaintext)
                .unwrap();
            assert_eq!(&sealed[..size], &buf[..], "key {len}, size {size}");
            assert_eq!(&sealed[size..], &tag[..], "key {len}, size {size}");
            let ciphertext = buf.clone();
            suite
                .aes_gcm_open_in_place(&key, &nonce, b"aad", &mut buf, &tag)
                .unwrap();
            assert_eq!(buf, plaintext);

            // Wrong aad, wrong tag, a flipped ciphertext bit: all the same
            // error, and the buffer comes back zeroed.
            let mut bad_tag = tag;
            bad_tag[0] ^= 1;
            let mut flipped = ciphertext.clone();
            if let Some(b) = flipped.first_mut() {
                *b ^= 0x80;
            }
            for (aad, mut body, tag) in [
                (&b"AAD"[..], ciphertext.clone(), tag),
                (&b"aad"[..], ciphertext.clone(), bad_tag),
                (&b"aad"[..], flipped, if size == 0 { bad_tag } else { tag }),
            ] {
                assert!(matches!(
                    suite.aes_gcm_open_in_place(&key, &nonce, aad, &mut body, &tag),
                    Err(Error::DecryptionFailed)
                ));
                assert!(body.iter().all(|&b| b == 0), "key {len}, size {size}");
            }
        }
    }
    assert!(matches!(
        suite.aes_gcm_seal_in_place(&[0; 20], &nonce, b"", &mut [1, 2, 3]),
        Err(Error::InvalidKey { .. })
    ));
}

/// The appending primitives (one buffer into another) give the same bytes
/// as the allocating ones after whatever `out` held; a failure leaves `out`
/// as it was.
pub fn aes_gcm_append<C: CipherSuite>(suite: &C) {
    let nonce = [5u8; 12];
    let prefix = b"header".as_slice();
    for len in [16, 24, 32] {
        let key = vec![len as u8 ^ 0x33; len];
        for size in [0usize, 1, 16, 17, 4096, 70_000] {
            let plaintext = pattern(size);
            let expected = suite
                .aes_gcm_seal(&key, &nonce, b"aad", &plaintext)
                .unwrap();
            let mut out = prefix.to_vec();
            suite
                .aes_gcm_seal_append(&key, &nonce, b"aad", &plaintext, &mut out)
                .unwrap();
            assert_eq!(&out[..prefix.len()], prefix, "key {len}, size {size}");
            assert_eq!(
                &out[prefix.len()..],
                &expected[..],
                "key {len}, size {size}"
            );

            let (body, tag) = expected.split_at(size);
            let tag: [u8; 16] = tag.try_into().unwrap();
            let mut opened = prefix.to_vec();
            suite
                .aes_gcm_open_append(&key, &nonce, b"aad", body, &tag, &mut opened)
                .unwrap();
            assert_eq!(&opened[..prefix.len()], prefix);
            assert_eq!(&opened[prefix.len()..], &plaintext[..]);

            // A prepared key, where the suite offers one, gives the same
            // bytes and the same failures.
            if let Some(prepared) = suite.aes_gcm_prepare(&key).unwrap() {
                let mut out = prefix.to_vec();
                prepared
                    .seal_append(&nonce, b"aad", &plaintext, &mut out)
                    .unwrap();
                assert_eq!(
                    &out[prefix.len()..],
                    &expected[..],
                    "prepared {len}, {size}"
                );
                let mut opened = prefix.to_vec();
                prepared
                    .open_append(&nonce, b"aad", body, &tag, &mut opened)
                    .unwrap();
                assert_eq!(&opened[prefix.len()..], &plaintext[..]);
                let mut out = prefix.to_vec();
                assert!(matches!(
                    prepared.open_append(&nonce, b"AAD", body, &tag, &mut out),
                    Err(Error::DecryptionFailed)
                ));
                assert_eq!(out, prefix, "prepared {len}, {size}");
            }

            // Every failure: the same error and `out` unchanged. (That the
            // memory written into is wiped is each implementation's to
            // show: safe Rust cannot read a Vec's spare capacity.)
            let mut bad_tag = tag;
            bad_tag[0] ^= 1;
            for (aad, tag) in [(&b"AAD"[..], tag), (&b"aad"[..], bad_tag)] {
                let mut out = prefix.to_vec();
                assert!(matches!(
                    suite.aes_gcm_open_append(&key, &nonce, aad, body, &tag, &mut out),
                    Err(Error::DecryptionFailed)
                ));
                assert_eq!(out, prefix, "key {len}, size {size}");
            }
        }
    }
    let mut out = b"kept".to_vec();
    assert!(matches!(
        suite.aes_gcm_seal_append(&[0; 20], &nonce, b"", b"abc", &mut out),
        Err(Error::InvalidKey { .. })
    ));
    assert_eq!(out, b"kept");
    assert!(matches!(
        suite.aes_gcm_prepare(&[0; 20]),
        Err(Error::InvalidKey { .. }) | Ok(None)
    ));
}

/// Seals each vector of testing/vectors/envelope_v2.json to exactly its bytes
/// through a [`Session`](envelope::Session) at the vector's salt and
/// message number, and opens it back.
pub fn envelope_v2_vectors<C: CipherSuite>(suite: &C) {
    let cases = vectors("envelope_v2.json");
    assert!(cases.len() >= 7);
    let mut out = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let dek = Dek::from_bytes(&hex_field(case, "dek")).unwrap();
        let key_id = KeyId::from_bytes(hex_field(case, "key_id").try_into().unwrap());
        let salt: [u8; 32] = hex_field(case, "salt").try_into().unwrap();
        let counter = case["counter"].as_u64().unwrap();
        let context = hex_field(case, "context");
        let plaintext = hex_field(case, "plaintext");
        let expected = hex_field(case, "envelope");
        let session =
            envelope::Session::with_salt_and_counter(suite, &key_id, &dek, salt, counter).unwrap();
        session
            .seal_into(suite, &context, &plaintext, &mut out)
            .unwrap();
        assert_eq!(hex::encode(&out), hex::encode(&expected), "{name}");
        assert_eq!(session.sealed(), counter + 1, "{name}");
        let opened = envelope::open(suite, &dek, &context, &expected).unwrap();
        assert_eq!(&opened[..], &plaintext[..], "{name}");
        let header = Header::parse(&expected).unwrap();
        assert_eq!(header.key_id, key_id, "{name}");
        assert_eq!(header.salt, salt, "{name}");
        assert_eq!(header.nonce[4..], counter.to_be_bytes(), "{name}");
    }
}

/// Envelope v2 sessions: round trips at every strength through reused
/// buffers; consecutive nonces under one salt, a new salt per session;
/// many threads sealing through one session never share a nonce; a spent
/// session seals nothing; and every wrong DEK, context, truncation and
/// changed byte (the commitment's too) is refused with a typed error.
pub fn envelope_v2_sessions<C: CipherSuite>(suite: &C) {
    use envelope::{Session, HEADER_LEN_V2, OVERHEAD_V2, SESSION_MAX_MESSAGES};

    let id = KeyId::from_bytes([7; 32]);
    let (mut sealed, mut opened) = (pattern(50_000), pattern(50_000));
    for strength in Strength::ALL {
        let dek = Dek::from_bytes(&pattern(strength.aes_key_len())).unwrap();
        let session = Session::new(suite, &id, &dek).unwrap();
        assert_eq!((session.key_id(), session.strength()), (id, strength));
        for (n, (size, context_len)) in [
            (0usize, 0usize),
            (1, 3),
            (1 << 20, 0),
            (10, 600),
            (16_384, 5),
        ]
        .into_iter()
        .enumerate()
        {
            let plaintext = pattern(size);
            let context = pattern(context_len);
            session
                .seal_into(suite, &context, &plaintext, &mut sealed)
                .unwrap();
            assert_eq!(sealed.len(), size + OVERHEAD_V2);
            let header = Header::parse(&sealed).unwrap();
            assert_eq!(header.nonce[..4], [0; 4]);
            assert_eq!(
                header.nonce[4..],
                (n as u64).to_be_bytes(),
                "{strength} {size}"
            );
            envelope::open_into(suite, &dek, &context, &sealed, &mut opened).unwrap();
            assert!(opened == plaintext, "{strength} {size}");
            let whole = envelope::open(suite, &dek, &context, &sealed).unwrap();
            assert!(whole[..] == plaintext[..]);
        }
        assert_eq!(session.sealed(), 5);
        assert!(!session.is_spent());
    }

    let dek = Dek::from_bytes(&[1; 16]).unwrap();
    let (a, b) = (
        Session::new(suite, &id, &dek).unwrap(),
        Session::new(suite, &id, &dek).unwrap(),
    );
    let (mut first, mut second) = (Vec::new(), Vec::new());
    a.seal_into(suite, b"", b"same", &mut first).unwrap();
    b.seal_into(suite, b"", b"same", &mut second).unwrap();
    assert_ne!(
        Header::parse(&first).unwrap().salt,
        Header::parse(&second).unwrap().salt,
        "each session draws its own salt"
    );
    assert_ne!(first, second);
    // A reader's session key opens its session's messages, and only those.
    let reader =
        envelope::SessionKey::derive(suite, &dek, Header::parse(&first).unwrap().salt).unwrap();
    assert!(reader.is_for(&first) && !reader.is_for(&second));
    let mut out = b"old".to_vec();
    reader.open_into(suite, b"", &first, &mut out).unwrap();
    assert_eq!(out, b"same");
    assert!(matches!(
        reader.open_into(suite, b"", &second, &mut out),
        Err(Error::DecryptionFailed)
    ));
    assert!(out.is_empty());
    a.key().open_into(suite, b"", &first, &mut out).unwrap();
    assert_eq!(out, b"same");

    // Threads sharing one session take distinct message numbers.
    let shared = std::sync::Arc::new(Session::new(suite, &id, &dek).unwrap());
    let numbers: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let shared = std::sync::Arc::clone(&shared);
                let dek = dek.clone();
                scope.spawn(move || {
                    let (mut sealed, mut opened) = (Vec::new(), Vec::new());
                    (0..250)
                        .map(|i| {
                            let message = [t as u8, i as u8];
                            shared
                                .seal_into(suite, b"t", &message, &mut sealed)
                                .unwrap();
                            envelope::open_into(suite, &dek, b"t", &sealed, &mut opened).unwrap();
                            assert_eq!(opened, message);
                            let nonce = Header::parse(&sealed).unwrap().nonce;
                            u64::from_be_bytes(nonce[4..].try_into().unwrap())
                        })
                        .collect()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut all: Vec<u64> = numbers.into_iter().flatten().collect();
    all.sort_unstable();
    assert_eq!(all, (0..1000).collect::<Vec<u64>>(), "every number once");

    // The last message number is sealed; after it, nothing.
    let last = Session::with_salt_and_counter(suite, &id, &dek, [3; 32], SESSION_MAX_MESSAGES - 1)
        .unwrap();
    let mut out = b"old".to_vec();
    last.seal_into(suite, b"", b"last", &mut out).unwrap();
    assert!(last.is_spent());
    assert!(matches!(
        last.seal_into(suite, b"", b"one more", &mut out),
        Err(Error::Policy { .. })
    ));
    assert!(out.is_empty(), "a refused message leaves nothing");

    // Rejections.
    let session = Session::new(suite, &id, &dek).unwrap();
    let mut sealed = Vec::new();
    session
        .seal_into(suite, b"ctx", b"Stephan Richter", &mut sealed)
        .unwrap();
    let other = Dek::from_bytes(&[2; 16]).unwrap();
    let bigger = Dek::from_bytes(&[1; 32]).unwrap();
    for (dek, context) in [
        (&other, &b"ctx"[..]),
        (&bigger, b"ctx"),
        (&dek, b"ctx2"),
        (&dek, b""),
    ] {
        assert!(matches!(
            envelope::open(suite, dek, context, &sealed),
            Err(Error::DecryptionFailed)
        ));
    }
    for len in 0..sealed.len() {
        let err = envelope::open(suite, &dek, b"ctx", &sealed[..len]).unwrap_err();
        let expected = if len < OVERHEAD_V2 {
            matches!(err, Error::MalformedCiphertext { .. })
        } else {
            matches!(err, Error::DecryptionFailed)
        };
        assert!(expected, "truncated to {len}: {err:?}");
    }
    let mut appended = sealed.clone();
    appended.push(0);
    assert!(envelope::open(suite, &dek, b"ctx", &appended).is_err());
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        let err = envelope::open(suite, &dek, b"ctx", &bad).unwrap_err();
        let typed = matches!(
            err,
            Error::MalformedCiphertext { .. } | Error::DecryptionFailed
        );
        assert!(typed, "byte {i}: {err:?}");
        if (HEADER_LEN..HEADER_LEN_V2).contains(&i) {
            // A changed commitment fails before AES-GCM runs.
            assert!(
                matches!(err, Error::DecryptionFailed),
                "commitment byte {i}"
            );
        }
    }
    // The commitment is checked on its own: a message under the right
    // session key and with a valid tag, but with another commitment (what
    // a ciphertext made to open under two DEKs would need), is refused.
    let salt = [9u8; 32];
    let sealed_with = |commitment: &[u8]| {
        let mut key = [0u8; 16];
        suite
            .hkdf_sha256(&[1; 16], &salt, b"keyserver envelope v2 key\x01", &mut key)
            .unwrap();
        let mut header = b"KSE\x02\x01".to_vec();
        header.extend_from_slice(id.as_bytes());
        header.extend_from_slice(&salt);
        header.extend_from_slice(&[0; 12]);
        header.extend_from_slice(commitment);
        let body = suite
            .aes_gcm_seal(&key, &[0; 12], &header, b"chosen")
            .unwrap();
        [header, body].concat()
    };
    let mut true_commitment = [0u8; 32];
    suite
        .hkdf_sha256(
            &[1; 16],
            &salt,
            b"keyserver envelope v2 commitment\x01",
            &mut true_commitment,
        )
        .unwrap();
    let honest = sealed_with(&true_commitment);
    assert_eq!(
        &envelope::open(suite, &dek, b"", &honest).unwrap()[..],
        b"chosen"
    );
    assert!(matches!(
        envelope::open(suite, &dek, b"", &sealed_with(&[0xaa; 32])),
        Err(Error::DecryptionFailed)
    ));

    // A version 2 envelope relabelled as version 1 is refused, not misread.
    let mut relabelled = sealed.clone();
    relabelled[3] = envelope::VERSION;
    assert!(matches!(
        envelope::open(suite, &dek, b"ctx", &relabelled),
        Err(Error::DecryptionFailed)
    ));
}

/// HKDF edge cases agree between suites: RFC 5869 test case 3 (empty salt
/// and info) and an empty output.
pub fn hkdf_edges<C: CipherSuite>(suite: &C) {
    let mut okm = [0u8; 42];
    // A call with other inputs first: nothing may carry over between calls
    // (a suite that reused a context could keep a previous salt: OpenSSL
    // 3.0 does when given an empty one).
    suite
        .hkdf_sha256(&[7; 40], &[1; 32], b"earlier info", &mut okm)
        .unwrap();
    suite.hkdf_sha256(&[0x0b; 22], b"", b"", &mut okm).unwrap();
    assert_eq!(
        hex::encode(okm),
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    );
    suite
        .hkdf_sha256(&[1; 16], &[2; 32], b"x", &mut [])
        .unwrap();
    // An empty input key is unusual but well defined (RFC 5869 allows it);
    // expected value from Python's hmac/hashlib.
    let mut short = [0u8; 16];
    suite.hkdf_sha256(b"", &[1; 32], b"x", &mut short).unwrap();
    assert_eq!(hex::encode(short), "3a5f845ef43022f3d9d6a56ce9fd917e");
}

/// Random bytes come from a CSPRNG: two draws differ and are not all zero.
pub fn random_bytes<C: CipherSuite>(suite: &C) {
    let mut a = [0u8; 32];
    let mut b = [0u8; 32];
    suite.fill_random(&mut a).unwrap();
    suite.fill_random(&mut b).unwrap();
    assert_ne!(a, b);
    assert_ne!(a, [0u8; 32]);
}

/// Round trips for empty, 1-byte, 1 MiB and 16 MiB plaintexts, with and
/// without associated data, at every strength.
pub fn envelope_round_trips<C: CipherSuite>(suite: &C) {
    let id = KeyId::from_bytes([9; 32]);
    for strength in Strength::ALL {
        let dek = Dek::from_bytes(&pattern(strength.aes_key_len())).unwrap();
        for size in [0usize, 1, 1 << 20, 16 << 20] {
            if strength != Strength::S128 && size > 1 << 20 {
                continue; // 16 MiB once is enough
            }
            let plaintext = pattern(size);
            for context in [&b""[..], b"tenant=acme"] {
                let sealed = envelope::seal(suite, &id, &dek, context, &plaintext).unwrap();
                assert_eq!(sealed.len(), size + OVERHEAD);
                let opened = envelope::open(suite, &dek, context, &sealed).unwrap();
                assert!(opened[..] == plaintext[..], "{strength} {size}");
            }
        }
    }
    // The caller-buffer forms write the same format through reused
    // buffers (holding a longer message before), with a context past the
    // stack-allocated associated data (512 bytes with the header) too.
    let dek = Dek::from_bytes(&pattern(16)).unwrap();
    let (mut sealed, mut opened) = (pattern(100_000), pattern(100_000));
    // The last message outgrows both buffers (they are wiped, then grown).
    for (size, context_len) in [
        (1000usize, 0usize),
        (10, 430),
        (0, 431),
        (5, 5000),
        (200_000, 3),
    ] {
        let plaintext = pattern(size);
        let context = pattern(context_len);
        envelope::seal_into(suite, &id, &dek, &context, &plaintext, &mut sealed).unwrap();
        assert_eq!(sealed.len(), size + OVERHEAD);
        let whole = envelope::open(suite, &dek, &context, &sealed).unwrap();
        assert!(whole[..] == plaintext[..], "{size} {context_len}");
        envelope::open_into(suite, &dek, &context, &sealed, &mut opened).unwrap();
        assert_eq!(opened, plaintext, "{size} {context_len}");
        let by_seal = envelope::seal(suite, &id, &dek, &context, &plaintext).unwrap();
        envelope::open_into(suite, &dek, &context, &by_seal, &mut opened).unwrap();
        assert_eq!(opened, plaintext, "{size} {context_len}");
    }
}

/// Wrong DEK, wrong context, truncation, an unknown version and every
/// single-byte change are all rejected with typed errors.
pub fn envelope_rejections<C: CipherSuite>(suite: &C) {
    let id = KeyId::from_bytes([5; 32]);
    let dek = Dek::from_bytes(&[1; 16]).unwrap();
    let other = Dek::from_bytes(&[2; 16]).unwrap();
    let sealed = envelope::seal(suite, &id, &dek, b"ctx", b"Stephan Richter").unwrap();

    assert!(matches!(
        envelope::open(suite, &other, b"ctx", &sealed),
        Err(Error::DecryptionFailed)
    ));
    let bigger = Dek::from_bytes(&[1; 32]).unwrap();
    assert!(matches!(
        envelope::open(suite, &bigger, b"ctx", &sealed),
        Err(Error::DecryptionFailed)
    ));
    assert!(matches!(
        envelope::open(suite, &dek, b"ctx2", &sealed),
        Err(Error::DecryptionFailed)
    ));
    assert!(matches!(
        envelope::open(suite, &dek, b"", &sealed),
        Err(Error::DecryptionFailed)
    ));
    for len in 0..sealed.len() {
        let err = envelope::open(suite, &dek, b"ctx", &sealed[..len]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::MalformedCiphertext { .. } | Error::DecryptionFailed
            ),
            "truncated to {len}: {err:?}"
        );
    }
    let mut appended = sealed.clone();
    appended.push(0);
    assert!(envelope::open(suite, &dek, b"ctx", &appended).is_err());

    let mut future = sealed.clone();
    future[3] = 3;
    assert!(matches!(
        envelope::open(suite, &dek, b"ctx", &future),
        Err(Error::MalformedCiphertext {
            reason: r
        }) if r == "unsupported format version"
    ));

    for i in 0..sealed.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = sealed.clone();
            bad[i] ^= flip;
            let err = envelope::open(suite, &dek, b"ctx", &bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::MalformedCiphertext { .. } | Error::DecryptionFailed
                ),
                "byte {i} ^ {flip:#x}: {err:?}"
            );
        }
    }
    // Into a caller's buffer: every refusal leaves it empty, and the
    // envelope is only read (nothing is lost).
    let mut out = b"old contents".to_vec();
    let mut bad = sealed.clone();
    bad[HEADER_LEN] ^= 1;
    let kept = bad.clone();
    for (dek, envelope, context) in [
        (&dek, &bad[..], &b"ctx"[..]),
        (&other, &sealed[..], b"ctx"),
        (&dek, &sealed[..], b"ctx2"),
        (&dek, &sealed[..sealed.len() - 1], b"ctx"),
    ] {
        assert!(envelope::open_into(suite, dek, context, envelope, &mut out).is_err());
        assert!(out.is_empty());
        out.extend_from_slice(b"old contents");
    }
    assert_eq!(bad, kept);
    // The header carries the key id in clear (so a client knows which DEK to
    // fetch) and it is authenticated.
    assert_eq!(Header::parse(&sealed).unwrap().key_id, id);
    assert!(HEADER_LEN < sealed.len());
}

/// RSA-OAEP-SHA256 wrap/unwrap round trips with fresh and fixture keys, and
/// rejects the wrong key, a changed ciphertext and malformed keys.
pub fn rsa_wrap_unwrap<C: CipherSuite>(suite: &C) {
    let fresh = Kek::from_pkcs8_der(&suite.generate_rsa(3072).unwrap()).unwrap();
    assert_eq!(fresh.bits(), 3072);
    let other = fixture_kek(3072);
    for dek_len in [16, 24, 32] {
        let dek = pattern(dek_len);
        let wrapped = suite.rsa_oaep_wrap(fresh.public_key_der(), &dek).unwrap();
        assert_eq!(wrapped.len(), 384);
        // OAEP is randomised.
        assert_ne!(
            wrapped,
            suite.rsa_oaep_wrap(fresh.public_key_der(), &dek).unwrap()
        );
        assert_eq!(
            &suite.rsa_oaep_unwrap(fresh.pkcs8_der(), &wrapped).unwrap()[..],
            &dek[..]
        );
        assert!(matches!(
            suite.rsa_oaep_unwrap(other.pkcs8_der(), &wrapped),
            Err(Error::DecryptionFailed)
        ));
        let mut bad = wrapped.clone();
        bad[100] ^= 1;
        assert!(matches!(
            suite.rsa_oaep_unwrap(fresh.pkcs8_der(), &bad),
            Err(Error::DecryptionFailed)
        ));
        assert!(suite
            .rsa_oaep_unwrap(fresh.pkcs8_der(), &wrapped[..383])
            .is_err());
    }
    assert!(matches!(
        suite.rsa_oaep_wrap(b"not a key", &[0; 16]),
        Err(Error::InvalidKey { .. })
    ));
    assert!(matches!(
        suite.rsa_oaep_unwrap(b"not a key", &[0; 384]),
        Err(Error::InvalidKey { .. })
    ));
    assert!(suite.generate_rsa(1024).is_err(), "RSA below 2048 bits");
}

/// `rsa_check_key_pair` accepts genuine key pairs (fixtures and a freshly
/// generated one) and refuses a key whose private fields do not all belong
/// to its public key: each of d, p, q, dp, dq and qinv changed by one bit,
/// p and q swapped (qinv then wrong), and every private field replaced.
pub fn rsa_key_pair_check<C: CipherSuite>(suite: &C) {
    use der::asn1::UintRef;
    use der::Decode;

    let generated = suite.generate_rsa(2048).unwrap();
    for (name, der) in [
        ("fixture 2048", fixture_kek(2048).pkcs8_der().to_vec()),
        ("fixture 3072", fixture_kek(3072).pkcs8_der().to_vec()),
        ("generated", generated.to_vec()),
    ] {
        suite
            .rsa_check_key_pair(&der)
            .unwrap_or_else(|e| panic!("{name}: a genuine key refused: {e}"));
    }

    let kek = fixture_kek(3072);
    let info = pkcs8::PrivateKeyInfoRef::from_der(kek.pkcs8_der()).unwrap();
    let key = pkcs1::RsaPrivateKeyRef::from_der(info.private_key.as_bytes()).unwrap();
    let rebuild = super::fixtures::rsa_pkcs8_der;
    // The re-encoding itself is faithful.
    suite.rsa_check_key_pair(&rebuild(&key)).unwrap();

    let flip = |u: UintRef<'_>| {
        let mut bytes = u.as_bytes().to_vec();
        if let Some(last) = bytes.last_mut() {
            *last ^= 0x02;
        }
        bytes
    };
    type Field = for<'a, 'k> fn(&'a mut pkcs1::RsaPrivateKeyRef<'k>) -> &'a mut UintRef<'k>;
    let fields: [(&str, Field); 6] = [
        ("d", |k| &mut k.private_exponent),
        ("p", |k| &mut k.prime1),
        ("q", |k| &mut k.prime2),
        ("dp", |k| &mut k.exponent1),
        ("dq", |k| &mut k.exponent2),
        ("qinv", |k| &mut k.coefficient),
    ];
    // Every malformed KEK is refused with the same error, code 2 (invalid
    // key), by the path every KEK takes: the core's parse, then the suite's
    // check. The same set runs against every suite, so suites agree.
    let mut malformed: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, field) in fields {
        let mut bad = key.clone();
        let changed = flip(*field(&mut bad));
        *field(&mut bad) = UintRef::new(&changed).unwrap();
        malformed.push((format!("{name} with a bit flipped"), rebuild(&bad)));
    }
    let mut swapped = key.clone();
    std::mem::swap(&mut swapped.prime1, &mut swapped.prime2);
    std::mem::swap(&mut swapped.exponent1, &mut swapped.exponent2);
    malformed.push(("p and q swapped".into(), rebuild(&swapped)));
    let one = UintRef::new(&[1]).unwrap();
    let forged = pkcs1::RsaPrivateKeyRef {
        private_exponent: one,
        prime1: one,
        prime2: one,
        exponent1: one,
        exponent2: one,
        coefficient: one,
        ..key.clone()
    };
    malformed.push(("every private field 1".into(), rebuild(&forged)));
    // Longer than the modulus allows (the OpenSSL CPU-burn of the hardening
    // issue: 10 KB to 200 KB exponents).
    let n_len = key.modulus.as_bytes().len();
    for (name, len) in [("d", 4 * n_len), ("d", 50_000), ("p", n_len)] {
        let big = vec![0x7f; len];
        let mut bad = key.clone();
        let field = if name == "d" {
            &mut bad.private_exponent
        } else {
            &mut bad.prime1
        };
        *field = UintRef::new(&big).unwrap();
        malformed.push((format!("{name} of {len} bytes"), rebuild(&bad)));
    }
    let modulus = key.modulus.as_bytes().to_vec();
    let mut bad = key.clone();
    bad.private_exponent = UintRef::new(&modulus).unwrap();
    malformed.push(("d equal to n".into(), rebuild(&bad)));
    let zero = UintRef::new(&[0]).unwrap();
    let mut bad = key.clone();
    bad.private_exponent = zero;
    malformed.push(("d zero".into(), rebuild(&bad)));
    let mut bad = key.clone();
    bad.public_exponent = one;
    malformed.push(("e = 1".into(), rebuild(&bad)));
    // Made-up factors of the modulus's width whose product exceeds it: a
    // CRT result could then reach n, which AWS-LC's CRT code asserts never
    // happens; a suite checks n = p·q before its private operation.
    let wide = vec![0xff; n_len / 2];
    let mut bad = key.clone();
    bad.prime1 = UintRef::new(&wide).unwrap();
    bad.prime2 = UintRef::new(&wide).unwrap();
    malformed.push(("p·q > n".into(), rebuild(&bad)));
    let mut bad = key.clone();
    let big_e = vec![0x41; 64];
    bad.public_exponent = UintRef::new(&big_e).unwrap();
    malformed.push(("e of 512 bits".into(), rebuild(&bad)));

    // The core never unwraps before the check, but a suite's unwrap may
    // skip checks of its own (AWS-LC's parse-time one): given any of these
    // keys it fails, or (a CRT key with a wrong d decrypts without d) it
    // gives the right DEK; never another value, never a panic.
    let dek = pattern(16);
    let wrapped = suite.rsa_oaep_wrap(kek.public_key_der(), &dek).unwrap();
    for (name, der) in &malformed {
        let err = keyserver_core::Kek::from_pkcs8_der(der)
            .and_then(|kek| suite.rsa_check_key_pair(kek.pkcs8_der()))
            .expect_err(name);
        assert!(matches!(err, Error::InvalidKey { .. }), "{name}: {err:?}");
        assert_eq!(err.code(), 2, "{name}: {err}");
        // Several times: some failures are a matter of chance per call.
        for _ in 0..8 {
            if let Ok(unwrapped) = suite.rsa_oaep_unwrap(der, &wrapped) {
                assert_eq!(&unwrapped[..], &dek[..], "{name}: a wrong DEK");
            }
        }
    }
}

/// The large fixture KEKs (7680 and 15360 bits) work through PEM, SPKI and
/// OAEP: beyond the 8192-bit limit of some parsers.
pub fn rsa_large_fixtures<C: CipherSuite>(suite: &C) {
    for (bits, strength) in [(7680, Strength::S192), (15360, Strength::S256)] {
        let kek = fixture_kek(bits);
        assert_eq!(kek.bits(), bits);
        assert_eq!(kek.security_bits(), strength.bits());
        let dek = pattern(strength.aes_key_len());
        let wrapped = suite.rsa_oaep_wrap(kek.public_key_der(), &dek).unwrap();
        assert_eq!(wrapped.len(), bits / 8);
        assert_eq!(
            &suite.rsa_oaep_unwrap(kek.pkcs8_der(), &wrapped).unwrap()[..],
            &dek[..]
        );
    }
}

fn stream_header(strength: Strength, chunk: u32) -> stream::StreamHeader {
    stream::StreamHeader {
        strength,
        key_id: KeyId::from_bytes([4; 32]),
        salt: [5; 32],
        prefix: [6; 7],
        chunk,
    }
}

/// The stream format: known-answer vectors (testing/vectors/stream_v1.json)
/// and round trips at every chunk boundary.
pub fn stream_vectors_and_round_trips<C: CipherSuite>(suite: &C) {
    for case in &vectors("stream_v1.json") {
        let name = case["name"].as_str().unwrap();
        let dek = Dek::from_bytes(&hex_field(case, "dek")).unwrap();
        let header = stream::StreamHeader {
            strength: dek.strength(),
            key_id: KeyId::from_bytes(hex_field(case, "key_id").try_into().unwrap()),
            salt: hex_field(case, "salt").try_into().unwrap(),
            prefix: hex_field(case, "prefix").try_into().unwrap(),
            chunk: case["chunk"].as_u64().unwrap() as u32,
        };
        let plaintext = hex_field(case, "plaintext");
        let expected = hex_field(case, "stream");
        let mut sealed = Vec::new();
        stream::encrypt_with_header(suite, &dek, &header, &plaintext[..], &mut sealed).unwrap();
        assert!(sealed == expected, "{name}");
        let mut opened = Vec::new();
        stream::decrypt(suite, &dek, &expected[..], &mut opened).unwrap();
        assert!(opened == plaintext, "{name}");
    }
    let dek = Dek::from_bytes(&[8; 16]).unwrap();
    for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 100] {
        let data = pattern(len);
        let mut sealed = Vec::new();
        let n = stream::encrypt_with_header(
            suite,
            &dek,
            &stream_header(Strength::S128, 16),
            &data[..],
            &mut sealed,
        )
        .unwrap();
        assert_eq!(n, len as u64);
        let chunks = len.div_ceil(16).max(1);
        assert_eq!(
            sealed.len(),
            stream::HEADER_LEN + len + 16 * chunks,
            "len {len}"
        );
        let mut opened = Vec::new();
        assert_eq!(
            stream::decrypt(suite, &dek, &sealed[..], &mut opened).unwrap(),
            len as u64
        );
        assert_eq!(opened, data);
    }
    // The default chunk size with random salt and prefix, 1 MiB + 1.
    let data = pattern((1 << 20) + 1);
    let mut sealed = Vec::new();
    stream::encrypt(
        suite,
        &KeyId::from_bytes([1; 32]),
        &dek,
        &data[..],
        &mut sealed,
    )
    .unwrap();
    let mut opened = Vec::new();
    stream::decrypt(suite, &dek, &sealed[..], &mut opened).unwrap();
    assert!(opened == data);
}

/// A stream of many batches of chunks (sealed on a second thread while the
/// next are read): a chunk altered far in is refused, with exactly the
/// chunks before it written out and nothing after; an input or an output
/// that fails midway is an I/O error, in both directions, never a hang.
pub fn stream_failures_midway<C: CipherSuite>(suite: &C) {
    struct FailingWriter(usize);
    impl std::io::Write for FailingWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0 < buf.len() {
                return Err(std::io::Error::other("disk full"));
            }
            self.0 -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    struct FailingReader<'a>(&'a [u8]);
    impl std::io::Read for FailingReader<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Err(std::io::Error::other("device gone"));
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let dek = Dek::from_bytes(&[8; 16]).unwrap();
    let chunk = 4096usize;
    let data = pattern(3 << 20);
    let header = stream_header(Strength::S128, chunk as u32);
    let mut sealed = Vec::new();
    stream::encrypt_with_header(suite, &dek, &header, &data[..], &mut sealed).unwrap();
    let sealed_chunk = chunk + 16;
    for bad in [0usize, 1, 300, 700] {
        let mut altered = sealed.clone();
        altered[stream::HEADER_LEN + bad * sealed_chunk + 7] ^= 1;
        let mut out = Vec::new();
        assert!(matches!(
            stream::decrypt(suite, &dek, &altered[..], &mut out),
            Err(Error::DecryptionFailed)
        ));
        assert_eq!(out.len(), bad * chunk, "chunk {bad} altered");
        assert!(out[..] == data[..bad * chunk]);
    }
    for limit in [0usize, 10_000, 2 << 20] {
        let err =
            stream::encrypt_with_header(suite, &dek, &header, &data[..], FailingWriter(limit))
                .unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        let err = stream::decrypt(suite, &dek, &sealed[..], FailingWriter(limit)).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        let err = stream::encrypt_with_header(
            suite,
            &dek,
            &header,
            FailingReader(&data[..limit]),
            std::io::sink(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        let cut = limit.max(stream::HEADER_LEN);
        let err = stream::decrypt(suite, &dek, FailingReader(&sealed[..cut]), std::io::sink())
            .unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
    }
}

/// Reordered, dropped, truncated, appended or altered chunks, a wrong DEK and
/// a damaged header are all rejected.
pub fn stream_rejections<C: CipherSuite>(suite: &C) {
    let dek = Dek::from_bytes(&[8; 16]).unwrap();
    let data = pattern(40); // chunks of 16, 16, 8
    let mut sealed = Vec::new();
    stream::encrypt_with_header(
        suite,
        &dek,
        &stream_header(Strength::S128, 16),
        &data[..],
        &mut sealed,
    )
    .unwrap();
    let h = stream::HEADER_LEN;
    let c = 32; // sealed full chunk
    let open = |bytes: &[u8]| {
        let mut out = Vec::new();
        stream::decrypt(suite, &dek, bytes, &mut out)
    };
    assert!(open(&sealed).is_ok());
    // Swap the first two chunks.
    let mut swapped = sealed[..h].to_vec();
    swapped.extend_from_slice(&sealed[h + c..h + 2 * c]);
    swapped.extend_from_slice(&sealed[h..h + c]);
    swapped.extend_from_slice(&sealed[h + 2 * c..]);
    assert!(matches!(open(&swapped), Err(Error::DecryptionFailed)));
    // Drop the final chunk, or the middle one.
    assert!(matches!(
        open(&sealed[..h + 2 * c]),
        Err(Error::DecryptionFailed)
    ));
    let mut dropped = sealed[..h + c].to_vec();
    dropped.extend_from_slice(&sealed[h + 2 * c..]);
    assert!(open(&dropped).is_err());
    // Every truncation and an appended byte.
    for len in 0..sealed.len() {
        assert!(open(&sealed[..len]).is_err(), "truncated to {len}");
    }
    let mut appended = sealed.clone();
    appended.push(0);
    assert!(open(&appended).is_err());
    // Every single-byte change.
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x20;
        let err = open(&bad).unwrap_err();
        assert!(
            matches!(
                err,
                Error::DecryptionFailed | Error::MalformedCiphertext { .. }
            ),
            "byte {i}: {err:?}"
        );
    }
    // The wrong DEK.
    let other = Dek::from_bytes(&[9; 16]).unwrap();
    assert!(matches!(
        stream::decrypt(suite, &other, &sealed[..], &mut Vec::new()),
        Err(Error::DecryptionFailed)
    ));
    // An absurd chunk size in the header is refused before any allocation.
    let mut huge = sealed.clone();
    huge[76..80].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        open(&huge),
        Err(Error::MalformedCiphertext { .. })
    ));
}

/// Runs the whole cipher-suite conformance kit on a suite: one module named
/// `$name`, one `#[test]` per check, so a failure names both.
///
/// ```
/// # #[cfg(feature = "cipher-rustcrypto")]
/// # mod demo {
/// keyserver::cipher_conformance!(rustcrypto, keyserver::backends::RustCrypto::new());
/// # }
/// ```
#[macro_export]
macro_rules! cipher_conformance {
    ($name:ident, $suite:expr) => {
        mod $name {
            #[test]
            fn envelope_vectors() {
                $crate::cipher::envelope_vectors(&$suite);
            }
            #[test]
            fn hkdf_rfc5869() {
                $crate::cipher::hkdf_rfc5869(&$suite);
            }
            #[test]
            fn aes_gcm_known_answers() {
                $crate::cipher::aes_gcm_known_answers(&$suite);
            }
            #[test]
            fn aes_gcm_in_place() {
                $crate::cipher::aes_gcm_in_place(&$suite);
            }
            #[test]
            fn aes_gcm_append() {
                $crate::cipher::aes_gcm_append(&$suite);
            }
            #[test]
            fn hkdf_edges() {
                $crate::cipher::hkdf_edges(&$suite);
            }
            #[test]
            fn random_bytes() {
                $crate::cipher::random_bytes(&$suite);
            }
            #[test]
            fn envelope_v2_vectors() {
                $crate::cipher::envelope_v2_vectors(&$suite);
            }
            #[test]
            fn envelope_v2_sessions() {
                $crate::cipher::envelope_v2_sessions(&$suite);
            }
            #[test]
            fn envelope_round_trips() {
                $crate::cipher::envelope_round_trips(&$suite);
            }
            #[test]
            fn envelope_rejections() {
                $crate::cipher::envelope_rejections(&$suite);
            }
            #[test]
            fn stream_vectors_and_round_trips() {
                $crate::cipher::stream_vectors_and_round_trips(&$suite);
            }
            #[test]
            fn stream_failures_midway() {
                $crate::cipher::stream_failures_midway(&$suite);
            }
            #[test]
            fn stream_rejections() {
                $crate::cipher::stream_rejections(&$suite);
            }
            #[test]
            fn rsa_wrap_unwrap() {
                $crate::cipher::rsa_wrap_unwrap(&$suite);
            }
            #[test]
            fn rsa_large_fixtures() {
                $crate::cipher::rsa_large_fixtures(&$suite);
            }
            #[test]
            fn rsa_key_pair_check() {
                $crate::cipher::rsa_key_pair_check(&$suite);
            }
            #[test]
            fn hpke_rfc9180_vectors() {
                $crate::ec::hpke_rfc9180_vectors(&$suite);
            }
            #[test]
            fn ec_keys_and_hpke() {
                $crate::ec::ec_keys_and_hpke(&$suite);
            }
            #[test]
            fn ec_records() {
                $crate::ec::ec_records(&$suite);
            }
            #[test]
            fn ec_key_rejections() {
                $crate::ec::ec_key_rejections(&$suite);
            }
            #[test]
            fn hybrid_vectors() {
                $crate::ec::hybrid_vectors(&$suite);
            }
        }
    };
}
