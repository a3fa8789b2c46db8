//! A KEK forged from nothing but a victim's public key (the modulus and the
//! exponent, with made-up private fields) never gets the victim's DEK: not
//! from a warm client cache (server-side or client-side unwrap), not from
//! the server, with either suite. A public key is not a secret.

use std::sync::Arc;

use der::asn1::UintRef;
use keyserver::backends::MemoryStorage;
use keyserver::transports::InProcess;
use keyserver::{envelope, CipherSuite, Encryption, Error, Kek, KeyClient, KeyServer, UnwrapMode};

/// A PKCS#8 RSA key with the victim's public key and `private` in every
/// private field, as an attacker would write it by hand. `Err` if the core
/// refuses to parse it at all (which is also a pass).
pub(crate) fn forge(victim: &Kek, private: &[u8]) -> keyserver::Result<Kek> {
    let (n, e) = keyserver::plugin::rsa_public_parts(victim.public_key_der()).unwrap();
    let junk = UintRef::new(private).unwrap();
    let rsa = pkcs1::RsaPrivateKeyRef {
        modulus: UintRef::new(n).unwrap(),
        public_exponent: UintRef::new(e).unwrap(),
        private_exponent: junk,
        prime1: junk,
        prime2: junk,
        exponent1: junk,
        exponent2: junk,
        coefficient: junk,
        other_prime_infos: None,
    };
    let forged = Kek::from_pkcs8_der(&keyserver::testing::fixtures::rsa_pkcs8_der(&rsa))?;
    assert_eq!(forged.id(), victim.id(), "same public key, same key id");
    Ok(forged)
}

/// The private fields an attacker might try: tiny, plausible-sized, and
/// oversized (the last one also must not cost seconds of CPU).
fn forgeries(victim: &Kek) -> Vec<keyserver::Result<Kek>> {
    let len = victim.bits() / 8;
    [
        vec![1u8],
        vec![0x5a; len / 2],
        vec![0x7f; len],
        vec![0x7f; 4 * len],
    ]
    .iter()
    .map(|private| forge(victim, private))
    .collect()
}

fn refused(result: keyserver::Result<impl std::fmt::Debug>, secret: &[u8], what: &str) {
    match result {
        Ok(got) => panic!("{what}: a forged KEK was served: {got:?}"),
        Err(e) => {
            assert!(
                matches!(e, Error::InvalidKey { .. }),
                "{what}: refused, but not as an invalid key: {e:?}"
            );
            assert!(!format!("{e:?}{e}").contains(&String::from_utf8_lossy(secret).to_string()));
        }
    }
}

/// A shared client, its cache warm with the victim's DEK (and, writing
/// envelope v2, with the victim's session).
pub async fn client_cache_is_not_a_bypass<C: CipherSuite + Clone>(suite: C, mode: UnwrapMode) {
    let server: Arc<dyn keyserver::KeyService> =
        Arc::new(KeyServer::new(suite.clone(), MemoryStorage::new()));
    for version in [envelope::Version::V1, envelope::Version::V2] {
        let client = KeyClient::new(InProcess::new(Arc::clone(&server)), suite.clone())
            .with_unwrap_mode(mode)
            .with_envelope(version);
        let victim = client.generate().await.unwrap();
        let secret = b"the victim's medical record";
        let sealed = client.encrypt(&victim, secret).await.unwrap();
        assert!(client.is_cached(&victim.id()), "the cache is warm");
        for forged in forgeries(&victim) {
            let Ok(forged) = forged else { continue };
            refused(client.get(&forged).await, secret, "get");
            refused(client.decrypt(&forged, &sealed).await, secret, "decrypt");
            refused(client.encrypt(&forged, b"x").await, secret, "encrypt");
            let mut out = Vec::new();
            refused(
                client.encrypt_into(&forged, b"x", b"", &mut out).await,
                secret,
                "encrypt_into",
            );
            assert!(out.is_empty(), "{version:?}");
        }
        // The true holder is still served, from the cache.
        let fetched = client.fetched_at(&victim.id());
        assert_eq!(&client.decrypt(&victim, &sealed).await.unwrap()[..], secret);
        let again = client.encrypt(&victim, secret).await.unwrap();
        assert_eq!(&client.decrypt(&victim, &again).await.unwrap()[..], secret);
        assert_eq!(client.fetched_at(&victim.id()), fetched, "{version:?}");
    }
}

/// The server refuses the forged KEK before it unwraps anything.
pub async fn server_refuses_a_forged_kek<C: CipherSuite>(suite: C) {
    let server = KeyServer::new(suite, MemoryStorage::new());
    let victim = server.generate().await.unwrap();
    let secret = b"the victim's medical record";
    let sealed = server.encrypt(&victim, secret).await.unwrap();
    // The victim's document passed the key-pair check and is remembered:
    // each forgery has the same key id but other bytes, and is checked.
    for forged in forgeries(&victim) {
        let Ok(forged) = forged else { continue };
        refused(server.get(&forged).await, secret, "server get");
        refused(server.get(&forged).await, secret, "server get, again");
        refused(
            server.decrypt(&forged, &sealed).await,
            secret,
            "server decrypt",
        );
    }
    assert_eq!(&server.decrypt(&victim, &sealed).await.unwrap()[..], secret);
}

macro_rules! forgery {
    ($name:ident, $suite:expr) => {
        mod $name {
            use keyserver::UnwrapMode;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn client_cache_server_side_unwrap() {
                super::client_cache_is_not_a_bypass($suite, UnwrapMode::Server).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn client_cache_client_side_unwrap() {
                super::client_cache_is_not_a_bypass($suite, UnwrapMode::Client).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn server() {
                super::server_refuses_a_forged_kek($suite).await;
            }
        }
    };
}

#[cfg(feature = "cipher-rustcrypto")]
forgery!(rustcrypto, keyserver::backends::RustCrypto::new());
#[cfg(feature = "cipher-openssl")]
forgery!(openssl, keyserver::backends::OpenSsl::new());
#[cfg(feature = "cipher-awslc")]
forgery!(awslc, keyserver::backends::AwsLc::new());
