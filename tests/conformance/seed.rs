//! The original key server's narrative, step by step, on a local `KeyServer`.

use keyserver::backends::{MemoryStorage, RustCrypto};
use keyserver::{Encryption, Error, Kek, KeyServer, KeyStorage};

#[tokio::test]
async fn seed_narrative() {
    // A new key server holds no keys.
    let keys = KeyServer::new(RustCrypto::new(), MemoryStorage::new());
    assert_eq!(keys.to_string(), "<KeyServer (0)>");
    assert!(keys.is_empty());

    // generate() returns the private KEK and stores one wrapped DEK.
    let kek = keys.generate().await.unwrap();
    assert_eq!(keys.to_string(), "<KeyServer (1)>");
    assert_eq!(keys.len(), 1);
    assert_eq!(kek.bits(), 3072);
    assert!(kek.to_pem().starts_with("-----BEGIN PRIVATE KEY-----\n"));

    // `key in keys`
    assert!(keys.contains(&kek.id()).await.unwrap());
    let stranger = keys.suite().generate_rsa_kek_for_test();
    assert!(!keys.contains(&stranger.id()).await.unwrap());

    // get(kek) returns the DEK, the same one every time.
    let dek = keys.get(&kek).await.unwrap();
    assert_eq!(dek.as_bytes().len(), 16);
    assert_eq!(keys.get(&kek).await.unwrap(), dek);

    // Only the wrapped DEK is stored: neither the DEK, the private KEK nor its
    // public half appear in the record.
    let record = keys.storage().get(&kek.id()).await.unwrap();
    let stored = record.encode();
    assert!(!contains(&stored, dek.as_bytes()));
    assert!(!contains(&stored, kek.public_key_der()));
    assert!(!contains(&stored, &kek.pkcs8_der()[40..80]));

    // The server used through the IEncryption-like interface.
    let enc: &dyn Encryption = &keys;
    let secret = b"Stephan Richter";
    let sealed = enc.encrypt(&kek, secret).await.unwrap();
    assert!(!contains(&sealed, secret));
    assert_eq!(&enc.decrypt(&kek, &sealed).await.unwrap()[..], secret);

    // The ciphertext differs on every encrypt.
    let again = enc.encrypt(&kek, secret).await.unwrap();
    assert_ne!(sealed, again);
    assert_eq!(&enc.decrypt(&kek, &again).await.unwrap()[..], secret);

    // The caller keeps the KEK as PEM and comes back with it later.
    let restored = Kek::from_pem(&kek.to_pem()).unwrap();
    assert_eq!(restored.id(), kek.id());
    assert_eq!(&enc.decrypt(&restored, &sealed).await.unwrap()[..], secret);

    // A second KEK is a different key and cannot open the first one's data.
    let kek2 = enc.generate().await.unwrap();
    assert_ne!(kek2.id(), kek.id());
    assert_eq!(keys.to_string(), "<KeyServer (2)>");
    assert!(matches!(
        enc.decrypt(&kek2, &sealed).await,
        Err(Error::KeyMismatch { .. })
    ));
    assert!(matches!(
        enc.get(&stranger).await,
        Err(Error::NotFound { key_id }) if key_id == stranger.id()
    ));
}

#[tokio::test]
async fn encryption_context_must_match() {
    let keys = KeyServer::new(RustCrypto::new(), MemoryStorage::new());
    let kek = keys.generate().await.unwrap();
    let sealed = keys
        .encrypt_with_context(&kek, b"salary: 100", b"table=payroll;row=7")
        .await
        .unwrap();
    let opened = keys
        .decrypt_with_context(&kek, &sealed, b"table=payroll;row=7")
        .await
        .unwrap();
    assert_eq!(&opened[..], b"salary: 100");
    for wrong in [&b""[..], b"table=payroll;row=8"] {
        assert!(matches!(
            keys.decrypt_with_context(&kek, &sealed, wrong).await,
            Err(Error::DecryptionFailed)
        ));
    }
}

#[tokio::test]
async fn delete_makes_the_data_unrecoverable() {
    let keys = KeyServer::new(RustCrypto::new(), MemoryStorage::new());
    let kek = keys.generate().await.unwrap();
    let sealed = keys.encrypt(&kek, b"gone").await.unwrap();
    assert!(keys.storage().delete(&kek.id()).await.unwrap());
    assert_eq!(keys.to_string(), "<KeyServer (0)>");
    assert!(matches!(
        keys.decrypt(&kek, &sealed).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn status_describes_the_server() {
    let keys = KeyServer::new(RustCrypto::new(), MemoryStorage::new());
    keys.generate().await.unwrap();
    let status = keys.status();
    assert_eq!(status.keys, 1);
    assert_eq!(status.suite, "rustcrypto");
    assert_eq!(status.storage, "memory");
    assert_eq!(status.strength, 128);
    assert_eq!(status.version, keyserver::VERSION);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_kek_pool_serves_generate() {
    let keys = KeyServer::new(RustCrypto::new(), MemoryStorage::new()).with_kek_pool(2, 1);
    assert_eq!(keys.kek_pool_capacity(), 2);
    // Bounded wait for the background worker (no timing assertion).
    for _ in 0..600 {
        if keys.kek_pool_ready() >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(keys.kek_pool_ready() >= 1, "the pool warmed up");
    let kek = keys.generate().await.unwrap();
    assert_eq!(keys.kek_pool_served(), 1);
    assert_eq!(kek.bits(), 3072);
    let sealed = keys.encrypt(&kek, b"pooled").await.unwrap();
    assert_eq!(&keys.decrypt(&kek, &sealed).await.unwrap()[..], b"pooled");
    // Without a pool, every key is generated inline.
    let without = KeyServer::new(RustCrypto::new(), MemoryStorage::new());
    assert_eq!(without.kek_pool_capacity(), 0);
    without.generate().await.unwrap();
    assert_eq!(without.kek_pool_served(), 0);
    drop(keys); // stops the worker and wipes the pooled keys, without waiting
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A KEK the server never saw.
trait FreshKek {
    fn generate_rsa_kek_for_test(&self) -> Kek;
}

impl FreshKek for RustCrypto {
    fn generate_rsa_kek_for_test(&self) -> Kek {
        use keyserver::crypto::RsaKek;
        Kek::from_pkcs8_der(&self.generate_rsa(3072).unwrap()).unwrap()
    }
}
