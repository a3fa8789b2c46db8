//! No key material or plaintext reaches `Debug`, `Display` or an error.

use keyserver::backends::{MemoryStorage, RustCrypto};
use keyserver::{Dek, Error, KeyId, KeyServer};

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
    // Every other variant, from an operation on these real keys (the
    // errors' fields are whatever the code put there, not dummies).
    let id = kek.id();
    let stranger = crate::common::fixture_kek(3072);
    errors.push(keys.get(&stranger).await.unwrap_err()); // NotFound
    let forged = {
        // The victim's public key with every private field replaced.
        let mut der = kek.pkcs8_der().to_vec();
        let tail = der.len() - 300;
        der[tail..].iter_mut().for_each(|b| *b ^= 0x5a);
        keyserver::Kek::from_pkcs8_der(&der)
    };
    if let Err(e) = forged {
        errors.push(e); // InvalidKey (or a parse error: also InvalidKey)
    }
    // UnwrapFailed: a record under `other`'s id wrapped under `kek`.
    let wrapped = keyserver::crypto::RsaKek::rsa_oaep_wrap(
        &RustCrypto::new(),
        kek.public_key_der(),
        dek.as_bytes(),
    )
    .unwrap();
    let misfiled = keyserver::WrappedDek::new(
        stranger.id(),
        3072,
        keyserver::Strength::S128,
        0,
        wrapped.clone(),
    )
    .unwrap();
    keyserver::KeyStorage::put(keys.storage(), &misfiled)
        .await
        .unwrap();
    errors.push(keys.get(&stranger).await.unwrap_err()); // UnwrapFailed
    errors.push(
        KeyServer::new(RustCrypto::new(), MemoryStorage::new())
            .with_min_strength(keyserver::Strength::S192)
            .generate_with_strength(keyserver::Strength::S128)
            .await
            .unwrap_err(),
    ); // Policy
    errors.push(
        keyserver::KeyStorage::put(keys.storage(), &misfiled)
            .await
            .unwrap_err(),
    ); // AlreadyExists
    let mut record = keyserver::KeyStorage::get(keys.storage(), &id)
        .await
        .unwrap()
        .encode();
    record[60] ^= 1;
    errors.push(keyserver::WrappedDek::decode(&record, &id).unwrap_err()); // CorruptRecord
    let not_a_dir = tempfile::NamedTempFile::new().unwrap();
    if let Err(e) = keyserver::backends::FileStorage::open(not_a_dir.path()).await {
        errors.push(e); // Storage
    }
    // Io: a stream of the plaintext into a writer that fails.
    struct Broken;
    impl std::io::Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("broken pipe"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    errors.push(
        keyserver::stream::encrypt(
            &RustCrypto::new(),
            &id,
            &dek,
            &b"Stephan Richter"[..],
            Broken,
        )
        .unwrap_err(),
    );
    // TooLarge, Transport and Protocol come from the wire.
    let config = keyserver::transports::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        max_body: 1024,
        ..Default::default()
    };
    let shared = std::sync::Arc::new(keys);
    let http = keyserver::transports::HttpServer::start(shared.clone(), config)
        .await
        .unwrap();
    let xml = keyserver::transports::XmlRpc::new(&http.url()).unwrap();
    use keyserver::KeyService;
    errors.push(xml.get_key(&kek).await.unwrap_err()); // TooLarge: the KEK is > 1 KiB
    let url = http.url();
    http.shutdown().await;
    errors.push(
        keyserver::transports::JsonRpc::new(&url)
            .unwrap()
            .get_key(&kek)
            .await
            .unwrap_err(),
    ); // Transport: nobody listens any more
    errors.push(
        keyserver::api::Call::from_params(
            "get_key",
            vec![
                keyserver::api::Value::Str(kek.to_pem()),
                keyserver::api::Value::Int(1),
            ],
            ('(', ')'),
        )
        .unwrap_err(),
    ); // Protocol: parameters that do not fit
    errors.push(keyserver::Error::from_wire(
        99,
        "a newer server's error".into(),
        Some(id),
    )); // Remote
        // Crypto and Internal carry fixed texts only (no field can hold data).
    errors.push(Error::Crypto {
        suite: "rustcrypto",
        operation: "RSA key generation",
    });
    errors.push(Error::Internal("the request timed out".into()));
    // Busy's reason is built from fixed words and counts.
    errors.push(Error::Busy {
        reason: "all 2 key-generation workers are busy and 16 requests are queued".into(),
    });
    errors.push(Error::NotPermitted);
    let keys = shared;
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
        assert!(
            !text.contains(kek.to_pem().lines().nth(2).unwrap()),
            "a PEM line in {text}"
        );
        codes.insert(err.code());
    }
    for code in 1..=13 {
        assert!(codes.contains(&code), "no error of code {code} was checked");
    }
    assert!(codes.contains(&-32602), "a protocol error was checked");
    drop(keys);
}
