//! SP 800-57 comparable strengths end to end, with the checked-in fixture
//! KEKs for 7680 and 15360 bits (generating those takes minutes).

use keyserver::backends::{MemoryStorage, RustCrypto};
use keyserver::{CipherSuite, Error, Kek, KeyServer, KeyStorage, Strength, WrappedDek};

use crate::common::{fixture_kek, pattern};

/// Stores a DEK of `strength` wrapped under `kek`, as `generate` would have.
async fn store_under<C: CipherSuite, S: KeyStorage>(
    server: &KeyServer<C, S>,
    kek: &Kek,
    strength: Strength,
) -> Vec<u8> {
    let dek = pattern(strength.aes_key_len());
    let wrapped = server
        .suite()
        .rsa_oaep_wrap(kek.public_key_der(), &dek)
        .unwrap();
    let record =
        WrappedDek::new(kek.id(), kek.bits(), strength, WrappedDek::now(), wrapped).unwrap();
    server.storage().put(&record).await.unwrap();
    dek
}

#[tokio::test]
async fn strengths_192_and_256_work_end_to_end() {
    for (bits, strength) in [(7680, Strength::S192), (15360, Strength::S256)] {
        let server =
            KeyServer::new(RustCrypto::new(), MemoryStorage::new()).with_min_strength(strength);
        let kek = fixture_kek(bits);
        let dek = store_under(&server, &kek, strength).await;
        let got = server.get(&kek).await.unwrap();
        assert_eq!(got.as_bytes(), &dek[..]);
        assert_eq!(got.strength(), strength);
        let sealed = server.encrypt(&kek, b"top secret").await.unwrap();
        assert_eq!(
            keyserver::envelope::Header::parse(&sealed)
                .unwrap()
                .strength,
            strength
        );
        assert_eq!(
            &server.decrypt(&kek, &sealed).await.unwrap()[..],
            b"top secret"
        );
        assert_eq!(server.status().strength, strength.bits());
    }
}

#[tokio::test]
async fn a_kek_weaker_than_its_dek_is_refused() {
    let server = KeyServer::new(RustCrypto::new(), MemoryStorage::new());
    // RSA-3072 (128-bit) wrapping AES-256: the wrapping key is the weak link.
    let kek = fixture_kek(3072);
    store_under(&server, &kek, Strength::S256).await;
    let err = server.get(&kek).await.unwrap_err();
    assert!(matches!(err, Error::Policy { .. }), "{err:?}");
    assert_eq!(err.code(), 4);
    assert!(err.to_string().contains("3072"));
}

#[tokio::test]
async fn a_kek_below_the_configured_strength_is_refused() {
    // RSA-2048 (112-bit) is below the default 128-bit floor, even for AES-128.
    let server = KeyServer::new(RustCrypto::new(), MemoryStorage::new());
    let kek = fixture_kek(2048);
    store_under(&server, &kek, Strength::S128).await;
    assert!(matches!(server.get(&kek).await, Err(Error::Policy { .. })));

    // A 192-bit server refuses RSA-3072 and generating below 192.
    let strict =
        KeyServer::new(RustCrypto::new(), MemoryStorage::new()).with_min_strength(Strength::S192);
    let kek = fixture_kek(3072);
    store_under(&strict, &kek, Strength::S128).await;
    assert!(matches!(strict.get(&kek).await, Err(Error::Policy { .. })));
    assert!(matches!(
        strict.generate_with_strength(Strength::S128).await,
        Err(Error::Policy { .. })
    ));
}

#[test]
fn small_or_odd_keys_are_invalid() {
    // A 1024-bit key, made by OpenSSL's command line at test time when present.
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let pem = String::from_utf8(o.stdout).unwrap();
            let err = Kek::from_pem(&pem).unwrap_err();
            assert!(matches!(err, Error::InvalidKey { .. }), "{err:?}");
        }
        Ok(o) => panic!(
            "openssl genpkey failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => crate::common::unavailable("the 1024-bit check", e),
    }
    // A PKCS#1 ("RSA PRIVATE KEY") block is refused with a clear reason.
    let pkcs1 = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
    assert!(matches!(
        Kek::from_pem(pkcs1),
        Err(Error::InvalidKey { reason }) if reason.contains("PKCS#8")
    ));
    assert!(Kek::from_pem("").is_err());
    assert!(Kek::from_pkcs8_der(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
}

/// RSA keys above 16,384 bits are refused before any work: as a KEK to parse,
/// and through the wire (code 2).
#[tokio::test]
async fn rsa_keys_above_16384_bits_are_refused() {
    use der::asn1::UintRef;
    // A 16,392-bit modulus (odd, top bit set) with small private fields: no
    // key generation needed to show the size check.
    let mut modulus = vec![0xffu8; 16392 / 8];
    modulus[0] = 0x80;
    let small = [3u8];
    let one = UintRef::new(&small).unwrap();
    let rsa = pkcs1::RsaPrivateKeyRef {
        modulus: UintRef::new(&modulus).unwrap(),
        public_exponent: UintRef::new(&[1, 0, 1]).unwrap(),
        private_exponent: one,
        prime1: one,
        prime2: one,
        exponent1: one,
        exponent2: one,
        coefficient: one,
        other_prime_infos: None,
    };
    let der = keyserver::testing::fixtures::rsa_pkcs8_der(&rsa);
    let err = Kek::from_pkcs8_der(&der).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidKey { reason } if reason.contains("above 16384")),
        "{err:?}"
    );
    let pem = pem_rfc7468::encode_string("PRIVATE KEY", pem_rfc7468::LineEnding::LF, &der).unwrap();
    let err = Kek::from_pem(&pem).unwrap_err();
    assert_eq!(err.code(), 2);
}
