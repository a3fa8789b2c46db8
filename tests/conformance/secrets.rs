//! No key material or plaintext reaches `Debug`, `Display` or an error.

use keyserver::backends::{MemoryStorage, RustCrypto};
use keyserver::{Dek, Error, KeyId, KeyServer, Plaintext};

/// Renderings of `bytes` that a leak could take.
fn forms(bytes: &[u8]) -> Vec<String> {
    let mut v = vec![
        hex::encode(bytes),
        hex::encode_upper(bytes),
        format!("{bytes:?}"),
    ];
    v.push(format!("{:?}", bytes.to_vec()));
    // Any 8-byte window in hex is already a leak.
    for w in bytes.windows(8).step_by(4) {
        v.push(hex::encode(w));
    }
    v
}

fn assert_no_leak(text: &str, secret: &[u8], what: &str) {
    for form in forms(secret) {
        assert!(!text.contains(&form), "{what} leaks: {text}");
    }
}

#[tokio::test]
async fn keys_and_plaintext_are_redacted() {
    let keys = KeyServer::new(RustCrypto::new(), MemoryStorage::new());
    let kek = keys.generate().await.unwrap();
    let dek = keys.get(&kek).await.unwrap();
    let pem = kek.to_pem();
    let pem_body: String = pem.lines().nth(3).unwrap().to_string();

    let kek_debug = format!("{kek:?} {kek:#?}");
    assert!(kek_debug.contains("redacted"));
    assert!(kek_debug.contains(&kek.id().to_string()));
    assert!(!kek_debug.contains(&pem_body));
    assert_no_leak(&kek_debug, &kek.pkcs8_der()[64..], "Kek Debug");

    let dek_debug = format!("{dek:?} {dek:#?}");
    assert!(dek_debug.contains("redacted"));
    assert_no_leak(&dek_debug, dek.as_bytes(), "Dek Debug");

    let plaintext = keys
        .decrypt(&kek, &keys.encrypt(&kek, b"Stephan Richter").await.unwrap())
        .await
        .unwrap();
    let pt_debug = format!("{plaintext:?}");
    assert!(!pt_debug.contains("Stephan"));
    assert_no_leak(&pt_debug, b"Stephan Richter", "Plaintext Debug");

    assert_no_leak(&format!("{keys:?} {keys}"), dek.as_bytes(), "KeyServer");
}

#[tokio::test]
async fn errors_never_carry_secrets() {
    let keys = KeyServer::new(RustCrypto::new(), MemoryStorage::new());
    let kek = keys.generate().await.unwrap();
    let other = keys.generate().await.unwrap();
    let dek = keys.get(&kek).await.unwrap();
    let sealed = keys
        .encrypt_with_context(&kek, b"Stephan Richter", b"ctx-secret")
        .await
        .unwrap();

    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let mut errors: Vec<Error> = vec![
        keys.decrypt(&kek, &tampered).await.unwrap_err(),
        keys.decrypt(&other, &sealed).await.unwrap_err(),
        keys.decrypt_with_context(&kek, &sealed, b"wrong")
            .await
            .unwrap_err(),
        keys.decrypt(&kek, &sealed[..10]).await.unwrap_err(),
        keyserver::Kek::from_pem(&kek.to_pem().replace('A', "B")).unwrap_err(),
        "zz".parse::<KeyId>().unwrap_err(),
        Dek::from_bytes(&dek.as_bytes()[..5]).unwrap_err(),
    ];
    // Every variant, constructed directly.
    let id = kek.id();
    errors.extend([
        Error::NotFound { key_id: id },
        Error::InvalidKey { reason: "r".into() },
        Error::UnwrapFailed { key_id: id },
        Error::Policy { reason: "p".into() },
        Error::AlreadyExists { key_id: id },
        Error::CorruptRecord {
            key_id: id,
            reason: "c".into(),
        },
        Error::storage("memory", "m", std::io::Error::other("io")),
        Error::TooLarge { size: 2, limit: 1 },
        Error::Io {
            what: "reading",
            source: std::io::Error::other("eof"),
        },
        Error::MalformedCiphertext { reason: "m".into() },
        Error::KeyMismatch {
            expected: id,
            given: other.id(),
        },
        Error::DecryptionFailed,
        Error::Crypto {
            suite: "s",
            operation: "o",
        },
        Error::Transport {
            message: "t".into(),
            source: None,
        },
        Error::Remote {
            code: 1,
            message: "r".into(),
        },
        Error::Internal("i".into()),
    ]);
    let mut codes = std::collections::BTreeSet::new();
    for err in &errors {
        let text = format!("{err} {err:?}");
        assert_no_leak(&text, dek.as_bytes(), "error");
        assert_no_leak(&text, &kek.pkcs8_der()[64..], "error");
        assert_no_leak(&text, &other.pkcs8_der()[64..], "error");
        assert!(
            !text.contains("Stephan") && !text.contains("ctx-secret"),
            "{text}"
        );
        assert!((1..=11).contains(&err.code()), "{err:?}");
        codes.insert(err.code());
    }
    assert_eq!(codes.len(), 11, "every wire code is produced by some error");
    let _ = Plaintext::default();
}
