//! Interoperability, both directions, at every strength: a deployment can
//! switch between the RustCrypto and OpenSSL suites without losing a key or a
//! ciphertext. And the `openssl` command line, an outside reference, agrees
//! with both.

use std::sync::Arc;

use keyserver::backends::{MemoryStorage, OpenSsl, RustCrypto};
use keyserver::crypto::RsaKek;
use keyserver::{
    envelope, CipherSuite, Dek, Kek, KeyId, KeyServer, KeyStorage, Strength, WrappedDek,
};

use crate::common::{fixture_kek, openssl, pattern};

/// KEKs for each strength: fresh from both suites at 128 (generating 7680 and
/// 15360 bits takes minutes), checked-in fixtures at 192 and 256.
fn keks() -> Vec<(Strength, Kek, &'static str)> {
    vec![
        (
            Strength::S128,
            Kek::from_pkcs8_der(&RustCrypto::new().generate_rsa(3072).unwrap()).unwrap(),
            "rustcrypto-generated",
        ),
        (
            Strength::S128,
            Kek::from_pkcs8_der(&OpenSsl::new().generate_rsa(3072).unwrap()).unwrap(),
            "openssl-generated",
        ),
        #[cfg(feature = "cipher-awslc")]
        (
            Strength::S128,
            Kek::from_pkcs8_der(
                &keyserver::backends::AwsLc::new()
                    .generate_rsa(3072)
                    .unwrap(),
            )
            .unwrap(),
            "awslc-generated",
        ),
        (Strength::S192, fixture_kek(7680), "fixture"),
        (Strength::S256, fixture_kek(15360), "fixture"),
    ]
}

fn suites() -> Vec<(&'static str, Box<dyn CipherSuite>)> {
    vec![
        ("rustcrypto", Box::new(RustCrypto::new())),
        ("openssl", Box::new(OpenSsl::new())),
        #[cfg(feature = "cipher-awslc")]
        ("awslc", Box::new(keyserver::backends::AwsLc::new())),
    ]
}

#[test]
fn dek_wrapped_by_one_suite_unwraps_with_the_other() {
    for (strength, kek, origin) in keks() {
        // The same KeyId whoever made the key: it is defined by the core.
        let again = Kek::from_pem(&kek.to_pem()).unwrap();
        assert_eq!(again.id(), kek.id());
        let dek = pattern(strength.aes_key_len());
        for (from, a) in suites() {
            let wrapped = a.rsa_oaep_wrap(kek.public_key_der(), &dek).unwrap();
            for (to, b) in suites() {
                let got = b.rsa_oaep_unwrap(kek.pkcs8_der(), &wrapped).unwrap();
                assert_eq!(&got[..], &dek[..], "{origin} {strength}: {from} -> {to}");
            }
        }
    }
}

#[test]
fn envelopes_are_byte_identical_and_open_across_suites() {
    for strength in Strength::ALL {
        let dek = Dek::from_bytes(&pattern(strength.aes_key_len())).unwrap();
        let id = KeyId::from_bytes([3; 32]);
        let plaintext = pattern(100_000);
        let seal = |suite: &dyn CipherSuite| {
            envelope::seal_with_salt_and_nonce(
                suite, &id, &dek, b"ctx", &plaintext, [1; 32], [2; 12],
            )
            .unwrap()
        };
        let reference = seal(&RustCrypto::new());
        for (name, suite) in suites() {
            assert_eq!(
                seal(&*suite),
                reference,
                "{strength}: same inputs, same bytes ({name})"
            );
        }
        for (_, a) in suites() {
            let sealed = envelope::seal(&*a, &id, &dek, b"ctx", &plaintext).unwrap();
            for (_, b) in suites() {
                assert!(envelope::open(&*b, &dek, b"ctx", &sealed).unwrap()[..] == plaintext[..]);
            }
        }
    }
}

#[tokio::test]
async fn servers_on_either_suite_share_one_store() {
    for (strength, kek, origin) in keks() {
        let store = Arc::new(MemoryStorage::new());
        let rc = KeyServer::new(RustCrypto::new(), Arc::clone(&store)).with_min_strength(strength);
        let os = KeyServer::new(OpenSsl::new(), Arc::clone(&store)).with_min_strength(strength);

        // A record written as a server on one suite would write it...
        let dek = pattern(strength.aes_key_len());
        let wrapped = os
            .suite()
            .rsa_oaep_wrap(kek.public_key_der(), &dek)
            .unwrap();
        let record =
            WrappedDek::new(kek.id(), kek.bits(), strength, WrappedDek::now(), wrapped).unwrap();
        store.put(&record).await.unwrap();

        // ...is read by the server on the other, and data crosses both ways.
        assert_eq!(rc.get(&kek).await.unwrap().as_bytes(), &dek[..], "{origin}");
        assert_eq!(os.get(&kek).await.unwrap().as_bytes(), &dek[..], "{origin}");
        let by_rc = rc
            .encrypt_with_context(&kek, b"migrate me", b"c")
            .await
            .unwrap();
        let by_os = os
            .encrypt_with_context(&kek, b"migrate me", b"c")
            .await
            .unwrap();
        assert_eq!(
            &os.decrypt_with_context(&kek, &by_rc, b"c").await.unwrap()[..],
            b"migrate me"
        );
        assert_eq!(
            &rc.decrypt_with_context(&kek, &by_os, b"c").await.unwrap()[..],
            b"migrate me"
        );
    }

    // generate() on one suite, everything else on the other (fresh at 128).
    let store = Arc::new(MemoryStorage::new());
    let rc = KeyServer::new(RustCrypto::new(), Arc::clone(&store));
    let os = KeyServer::new(OpenSsl::new(), Arc::clone(&store));
    for (maker, user) in [
        (
            &rc as &dyn keyserver::Encryption,
            &os as &dyn keyserver::Encryption,
        ),
        (&os, &rc),
    ] {
        let kek = maker.generate().await.unwrap();
        assert_eq!(
            maker.get(&kek).await.unwrap(),
            user.get(&kek).await.unwrap()
        );
        let sealed = maker.encrypt(&kek, b"Stephan Richter").await.unwrap();
        assert_eq!(
            &user.decrypt(&kek, &sealed).await.unwrap()[..],
            b"Stephan Richter"
        );
    }
    assert_eq!(store.count(), 2);
}

#[test]
fn the_openssl_command_line_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let generated = [
        ("rustcrypto", RustCrypto::new().generate_rsa(3072).unwrap()),
        ("openssl", OpenSsl::new().generate_rsa(3072).unwrap()),
    ];
    for (origin, der) in generated {
        let kek = Kek::from_pkcs8_der(&der).unwrap();
        let pem_path = dir.path().join(format!("{origin}.pem"));
        std::fs::write(&pem_path, kek.to_pem().as_bytes()).unwrap();
        let pem = pem_path.to_str().unwrap();

        // Read as an RSA key of the expected size.
        let Some(text) = openssl(&["pkey", "-in", pem, "-noout", "-text"]) else {
            return;
        };
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains("Private-Key: (3072 bit"),
            "{origin}: {text:.80}"
        );

        // KeyId = SHA-256 of `openssl pkey -pubout -outform DER`.
        let spki = openssl(&["pkey", "-in", pem, "-pubout", "-outform", "DER"]).unwrap();
        assert_eq!(spki, kek.public_key_der(), "{origin}: SPKI bytes");
        assert_eq!(KeyId::from_spki_der(&spki), kek.id());

        // A DEK wrapped by either suite is unwrapped by `openssl pkeyutl` with
        // OAEP, SHA-256 and MGF1-SHA-256.
        for (suite_name, suite) in suites() {
            let dek = pattern(16);
            let wrapped = suite.rsa_oaep_wrap(kek.public_key_der(), &dek).unwrap();
            let in_path = dir.path().join(format!("{origin}-{suite_name}.bin"));
            std::fs::write(&in_path, &wrapped).unwrap();
            let out = openssl(&[
                "pkeyutl",
                "-decrypt",
                "-inkey",
                pem,
                "-in",
                in_path.to_str().unwrap(),
                "-pkeyopt",
                "rsa_padding_mode:oaep",
                "-pkeyopt",
                "rsa_oaep_md:sha256",
                "-pkeyopt",
                "rsa_mgf1_md:sha256",
            ])
            .unwrap();
            assert_eq!(out, dek, "{origin} key, {suite_name} wrap");
        }
    }
}
