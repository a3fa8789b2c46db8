//! The seal against a real token: SoftHSM2 (Debian's `softhsm2`), with
//! throwaway tokens this test makes in its own folder. Run with
//! `cargo test -p keyserver-pkcs11 -- --ignored` (CI does).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use keyserver::seal::{reseal_all, Seal, SealedStorage};
use keyserver::{Error, KeyServer, KeyStorage};
use keyserver_pkcs11::{create_key, destroy_key, key_ref, Pkcs11Seal, Pkcs11Uri};

const PIN: &str = "246810";
const TOKENS: [&str; 5] = ["basic", "store", "reseal", "refuse", "threads"];

/// The module SoftHSM2 installs.
fn module() -> PathBuf {
    for path in [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ] {
        if std::path::Path::new(path).exists() {
            return PathBuf::from(path);
        }
    }
    panic!("SoftHSM2 is not installed (apt-get install softhsm2)");
}

/// One folder of tokens for the whole test binary, made before the module
/// is first initialised (it reads `SOFTHSM2_CONF` then, once per process),
/// and a PIN file only its owner reads.
fn setup() -> &'static (tempfile::TempDir, PathBuf) {
    static SETUP: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        for label in TOKENS {
            let out = Command::new("softhsm2-util")
                .args(["--init-token", "--free", "--label", label])
                .args(["--pin", PIN, "--so-pin", "13579111"])
                .env("SOFTHSM2_CONF", &conf)
                .output()
                .expect("softhsm2-util (apt-get install softhsm2)");
            assert!(out.status.success(), "{out:?}");
        }
        // Set once, before any thread of this binary loads the module.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        let pin = dir.path().join("pin");
        std::fs::write(&pin, format!("{PIN}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
        (dir, pin)
    })
}

fn uri(token: &str, object: &str) -> Pkcs11Uri {
    let (_, pin) = setup();
    format!(
        "pkcs11:token={token};object={object}?module-path={}&pin-source=file:{}",
        module().display(),
        pin.display()
    )
    .parse()
    .unwrap()
}

#[test]
#[ignore = "needs SoftHSM2 (apt-get install softhsm2)"]
fn softhsm_the_token_seals_and_finds_every_change() {
    let uri = uri("basic", "master-1");
    let reference = create_key(&uri).unwrap();
    assert_ne!(
        reference,
        key_ref("master-1", &[]),
        "the key's random id is part of it"
    );
    // A second key of the same label is refused.
    let err = create_key(&uri).unwrap_err().to_string();
    assert!(err.contains("exists already"), "{err}");
    let seal = Pkcs11Seal::open(&uri).unwrap();
    assert_eq!(seal.current_key(), reference);
    let sealed = seal.encrypt(reference, b"header", b"wrapped DEK").unwrap();
    assert_eq!(sealed.len(), 12 + 11 + 16);
    assert_eq!(
        &seal.decrypt(reference, b"header", &sealed).unwrap()[..],
        b"wrapped DEK"
    );
    // Fresh nonces: the same input seals differently.
    assert_ne!(
        seal.encrypt(reference, b"header", b"wrapped DEK").unwrap(),
        sealed
    );
    // Every changed byte, and changed associated data, fail to open.
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x80;
        let opened = seal.decrypt(reference, b"header", &bad);
        assert!(
            matches!(opened, Err(Error::DecryptionFailed)),
            "byte {i}: {opened:?}"
        );
    }
    assert!(matches!(
        seal.decrypt(reference, b"heade!", &sealed),
        Err(Error::DecryptionFailed)
    ));
    assert!(matches!(
        seal.decrypt(reference, b"header", &sealed[..20]),
        Err(Error::DecryptionFailed)
    ));
    // A key the token does not have: code 5, named.
    let other = key_ref("nope", &[]);
    let err = seal.decrypt(other, b"header", &sealed).unwrap_err();
    assert_eq!(err.code(), 5);
    assert!(err.to_string().contains("is not in"), "{err}");
    seal.check().unwrap();
    assert!(!format!("{seal:?}").contains(PIN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs SoftHSM2 (apt-get install softhsm2)"]
async fn softhsm_a_store_sealed_by_the_token_serves_and_is_shredded_with_its_key() {
    let uri = uri("store", "master-1");
    let reference = create_key(&uri).unwrap();
    let seal: Arc<dyn Seal> = Arc::new(Pkcs11Seal::open(&uri).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let raw = Arc::new(
        keyserver::backends::FileStorage::open(dir.path().join("data"))
            .await
            .unwrap(),
    );
    let server = KeyServer::new(
        keyserver::backends::RustCrypto::new(),
        SealedStorage::new(Arc::clone(&raw), Arc::clone(&seal)),
    );
    let kek = server.generate().await.unwrap();
    let dek = server.get(&kek).await.unwrap();
    let sealed = server.encrypt(&kek, b"kept by the token").await.unwrap();
    // On disk: sealed, under this key.
    let at_rest = raw.get(&kek.id()).await.unwrap();
    assert_eq!(at_rest.seal_key_ref(), Some(reference));
    // The store and the KEK without the token: a typed error, code 5.
    let thief = KeyServer::new(keyserver::backends::RustCrypto::new(), Arc::clone(&raw));
    let err = thief.get(&kek).await.unwrap_err();
    assert_eq!(err.code(), 5);
    assert!(err.to_string().contains("sealed under master key"), "{err}");
    // Destroying the key on the token destroys the store.
    destroy_key(&uri).unwrap();
    let after = KeyServer::new(
        keyserver::backends::RustCrypto::new(),
        SealedStorage::new(Arc::clone(&raw), Arc::clone(&seal)),
    );
    let err = after.get(&kek).await.unwrap_err();
    assert_eq!(err.code(), 5, "{err}");
    assert!(after.decrypt(&kek, &sealed).await.is_err());
    // And a seal cannot open on it any more.
    let err = Pkcs11Seal::open(&uri).unwrap_err().to_string();
    assert!(err.contains("no AES key labelled"), "{err}");
    assert_eq!(dek.as_bytes().len(), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs SoftHSM2 (apt-get install softhsm2)"]
async fn softhsm_a_store_moves_between_two_token_keys_and_the_old_one_can_go() {
    let one = uri("reseal", "master-1");
    let two = uri("reseal", "master-2");
    create_key(&one).unwrap();
    let store = Arc::new(keyserver::backends::MemoryStorage::new());
    // Keys from before sealing, and keys sealed under master-1.
    let plain = KeyServer::new(keyserver::backends::RustCrypto::new(), Arc::clone(&store));
    let mut keks = vec![plain.generate().await.unwrap()];
    let first: Arc<dyn Seal> = Arc::new(Pkcs11Seal::open(&one).unwrap());
    let sealed_one = KeyServer::new(
        keyserver::backends::RustCrypto::new(),
        SealedStorage::new(Arc::clone(&store), Arc::clone(&first)),
    );
    keks.push(sealed_one.generate().await.unwrap());
    keks.push(sealed_one.generate().await.unwrap());
    let mut deks = Vec::new();
    for kek in &keks {
        deks.push(sealed_one.get(kek).await.unwrap().as_bytes().to_vec());
    }
    // A new key on the token; the seal that writes under it reads both.
    let second_ref = create_key(&two).unwrap();
    let second: Arc<dyn Seal> = Arc::new(Pkcs11Seal::open(&two).unwrap());
    let report = reseal_all(&*store, None, Some(&second), |_| {})
        .await
        .unwrap();
    assert_eq!((report.examined, report.resealed), (3, 3));
    let again = reseal_all(&*store, None, Some(&second), |_| {})
        .await
        .unwrap();
    assert_eq!((again.resealed, again.already), (0, 3));
    destroy_key(&one).unwrap();
    let server = KeyServer::new(
        keyserver::backends::RustCrypto::new(),
        SealedStorage::new(Arc::clone(&store), second),
    );
    for (kek, dek) in keks.iter().zip(&deks) {
        assert_eq!(server.get(kek).await.unwrap().as_bytes(), &dek[..]);
        assert_eq!(
            store.get(&kek.id()).await.unwrap().seal_key_ref(),
            Some(second_ref)
        );
    }
}

#[test]
#[ignore = "needs SoftHSM2 (apt-get install softhsm2)"]
fn softhsm_a_token_that_cannot_be_used_is_refused_saying_why() {
    let good = uri("refuse", "master-1");
    create_key(&good).unwrap();
    let (dir, _) = setup();
    // A wrong PIN: named, and never shown.
    let wrong = dir.path().join("wrong-pin");
    std::fs::write(&wrong, "999999\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut bad = good.clone();
    bad.pin_source = Some(wrong);
    let err = Pkcs11Seal::open(&bad).unwrap_err();
    assert_eq!(err.code(), 5);
    assert!(err.to_string().contains("PIN is wrong"), "{err}");
    assert!(!err.to_string().contains("999999"));
    // No such token, no such key, no module.
    let err = Pkcs11Seal::open(&uri("absent", "master-1")).unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
    let err = Pkcs11Seal::open(&uri("refuse", "other")).unwrap_err();
    assert!(err.to_string().contains("no AES key labelled"), "{err}");
    let mut gone = good.clone();
    gone.module_path = Some(PathBuf::from("/nonexistent/libpkcs11.so"));
    let err = Pkcs11Seal::open(&gone).unwrap_err();
    assert!(
        err.to_string().contains("cannot load the PKCS#11 module"),
        "{err}"
    );
    // A key that could leave the token is refused.
    {
        use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
        use cryptoki::mechanism::Mechanism;
        use cryptoki::object::{Attribute, KeyType, ObjectClass};
        use cryptoki::session::UserType;
        use cryptoki::types::AuthPin;
        let ctx = Pkcs11::new(module()).unwrap();
        let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
        let slot = ctx
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == "refuse")
            .unwrap();
        let session = ctx.open_rw_session(slot).unwrap();
        let _ = session.login(UserType::User, Some(&AuthPin::new(PIN.into())));
        let aes_key = |label: &[u8], sensitive: bool| {
            session
                .generate_key(
                    &Mechanism::AesKeyGen,
                    &[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::AES),
                        Attribute::ValueLen(32.into()),
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(sensitive),
                        Attribute::Extractable(!sensitive),
                        Attribute::Encrypt(true),
                        Attribute::Decrypt(true),
                        Attribute::Label(label.to_vec()),
                    ],
                )
                .unwrap()
        };
        // A key that can leave the token.
        aes_key(b"leaky", false);
        // Two keys of one label: which is the master key is ambiguous.
        aes_key(b"twin", true);
        aes_key(b"twin", true);
    }
    let err = Pkcs11Seal::open(&uri("refuse", "twin")).unwrap_err();
    assert!(err.to_string().contains("several AES keys"), "{err}");
    let err = Pkcs11Seal::open(&uri("refuse", "leaky")).unwrap_err();
    assert!(
        err.to_string().contains("is refused")
            && (err.to_string().contains("CKA_EXTRACTABLE")
                || err.to_string().contains("CKA_SENSITIVE")),
        "{err}"
    );
    // The good one opens.
    Pkcs11Seal::open(&good).unwrap().check().unwrap();
}

#[test]
#[ignore = "needs SoftHSM2 (apt-get install softhsm2)"]
fn softhsm_many_threads_share_one_seal() {
    let uri = uri("threads", "master-1");
    let reference = create_key(&uri).unwrap();
    let seal = Arc::new(Pkcs11Seal::open(&uri).unwrap());
    let workers: Vec<_> = (0..8u8)
        .map(|t| {
            let seal = Arc::clone(&seal);
            std::thread::spawn(move || {
                for i in 0..50u8 {
                    let data = [t, i, 7, 7];
                    let sealed = seal.encrypt(reference, &[t], &data).unwrap();
                    assert_eq!(&seal.decrypt(reference, &[t], &sealed).unwrap()[..], &data);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}
