//! Elliptic-curve KEKs end to end: the HPKE of the core against a second,
//! independent HPKE (the `hpke` crate), both suites against each other at
//! every strength (byte for byte), the `openssl` command line on the keys,
//! the original key server's narrative with an EC KEK, and the wire and client paths.

use std::sync::Arc;

use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use keyserver::backends::{MemoryStorage, OpenSsl, RustCrypto};
use keyserver::plugin::{ec_pkcs8_der, ec_private_parts, ec_public_point};
use keyserver::testing::fixtures::ec_fixture_kek;
use keyserver::{
    hpke as core_hpke, CipherSuite, Curve, Encryption, Error, HybridKem, Kek, KekAlg, KeyClient,
    KeyId, KeyServer, KeyStorage, Strength, UnwrapMode,
};

use crate::common::openssl;

fn suites() -> Vec<(&'static str, Box<dyn CipherSuite>)> {
    vec![
        ("rustcrypto", Box::new(RustCrypto::new())),
        ("openssl", Box::new(OpenSsl::new())),
        #[cfg(feature = "cipher-awslc")]
        ("awslc", Box::new(keyserver::backends::AwsLc::new())),
    ]
}

/// The HPKE `info` of a record (docs/FORMAT.md): the label, the wrap
/// algorithm id and the DEK algorithm id.
fn record_info(curve: Curve, strength: Strength) -> Vec<u8> {
    let wrap = match curve {
        Curve::P256 => 2,
        Curve::P384 => 3,
        _ => 4,
    };
    let dek = match strength {
        Strength::S128 => 1,
        Strength::S192 => 2,
        _ => 3,
    };
    [&b"keyserver wrapped DEK v1"[..], &[wrap, dek]].concat()
}

/// Opens `(enc, ct)` with the `hpke` crate, for the ciphersuite of `curve`.
fn hpke_crate_open(curve: Curve, scalar: &[u8], enc: &[u8], info: &[u8], ct: &[u8]) -> Vec<u8> {
    macro_rules! open {
        ($kem:ty, $kdf:ty, $aead:ty) => {{
            let sk = <$kem as hpke::Kem>::PrivateKey::from_bytes(scalar).unwrap();
            let enc = <$kem as hpke::Kem>::EncappedKey::from_bytes(enc).unwrap();
            hpke::single_shot_open::<$aead, $kdf, $kem>(&OpModeR::Base, &sk, &enc, info, ct, b"")
                .unwrap()
        }};
    }
    match curve {
        Curve::P256 => open!(
            hpke::kem::DhP256HkdfSha256,
            hpke::kdf::HkdfSha256,
            hpke::aead::AesGcm128
        ),
        Curve::P384 => open!(
            hpke::kem::DhP384HkdfSha384,
            hpke::kdf::HkdfSha384,
            hpke::aead::AesGcm256
        ),
        _ => open!(
            hpke::kem::DhP521HkdfSha512,
            hpke::kdf::HkdfSha512,
            hpke::aead::AesGcm256
        ),
    }
}

/// Seals `pt` with the `hpke` crate to `point`: `(enc, ct)`.
fn hpke_crate_seal(curve: Curve, point: &[u8], info: &[u8], pt: &[u8]) -> (Vec<u8>, Vec<u8>) {
    macro_rules! seal {
        ($kem:ty, $kdf:ty, $aead:ty) => {{
            let pk = <$kem as hpke::Kem>::PublicKey::from_bytes(point).unwrap();
            let (enc, ct) =
                hpke::single_shot_seal::<$aead, $kdf, $kem>(&OpModeS::Base, &pk, info, pt, b"")
                    .unwrap();
            (enc.to_bytes().to_vec(), ct)
        }};
    }
    match curve {
        Curve::P256 => seal!(
            hpke::kem::DhP256HkdfSha256,
            hpke::kdf::HkdfSha256,
            hpke::aead::AesGcm128
        ),
        Curve::P384 => seal!(
            hpke::kem::DhP384HkdfSha384,
            hpke::kdf::HkdfSha384,
            hpke::aead::AesGcm256
        ),
        _ => seal!(
            hpke::kem::DhP521HkdfSha512,
            hpke::kdf::HkdfSha512,
            hpke::aead::AesGcm256
        ),
    }
}

/// A record made by a key server on either suite opens with the `hpke`
/// crate given only docs/FORMAT.md, and what the `hpke` crate seals opens
/// with the core's HPKE on either suite: at every strength.
#[tokio::test]
async fn the_hpke_crate_agrees_at_every_curve() {
    for (name, suite) in suites() {
        let keys = KeyServer::new(suite, MemoryStorage::new()).with_kek_alg(KekAlg::Ec);
        for strength in Strength::ALL {
            let curve = Curve::for_strength(strength);
            let kek = keys.generate_with(strength, KekAlg::Ec).await.unwrap();
            assert_eq!(kek.curve(), Some(curve));
            let dek = keys.get(&kek).await.unwrap();
            let record = keys.storage().get(&kek.id()).await.unwrap();
            let (enc, ct) = record.wrapped().split_at(curve.point_len());
            let scalar = ec_private_parts(kek.pkcs8_der()).unwrap().scalar.to_vec();
            let info = record_info(curve, strength);
            let opened = hpke_crate_open(curve, &scalar, enc, &info, ct);
            assert_eq!(opened, dek.as_bytes(), "{name} {curve}: hpke crate opens");

            let (_, point) = ec_public_point(kek.public_key_der()).unwrap();
            let (enc, ct) = hpke_crate_seal(curve, point, b"cross-check", b"from the hpke crate");
            let pt = core_hpke::open(
                keys.suite(),
                kek.pkcs8_der(),
                &enc,
                b"cross-check",
                b"",
                &ct,
            )
            .unwrap();
            assert_eq!(
                &pt[..],
                b"from the hpke crate",
                "{name} {curve}: core opens"
            );
        }
    }
}

/// With the same ephemeral key, both suites seal to the same bytes; a
/// record made through either suite unwraps through the other; and two
/// servers on different suites share one store of EC keys.
#[tokio::test]
async fn ec_records_interoperate_across_suites_byte_for_byte() {
    let all = suites();
    let rc = &all[0].1;
    for curve in Curve::ALL {
        let kek = ec_fixture_kek(curve);
        let (_, point) = ec_public_point(kek.public_key_der()).unwrap();
        let eph = rc.ec().unwrap().generate_ec(curve).unwrap();
        let seal = |suite: &dyn CipherSuite| {
            let (enc, mut ctx) =
                core_hpke::setup_sender(suite, curve, point, b"info", Some(&eph)).unwrap();
            [enc, ctx.seal(suite, b"aad", b"same bytes").unwrap()].concat()
        };
        for (name, suite) in &all {
            assert_eq!(
                seal(&**rc),
                seal(&**suite),
                "{curve}: byte-identical HPKE ({name})"
            );
        }
        // Keys made by one suite check out in the others.
        for (_, maker) in &all {
            let der = maker.ec().unwrap().generate_ec(curve).unwrap();
            for (_, checker) in &all {
                checker.ec().unwrap().ec_check_key_pair(&der).unwrap();
            }
        }
    }
    let storage = Arc::new(MemoryStorage::new());
    let a = KeyServer::new(RustCrypto::new(), Arc::clone(&storage)).with_kek_alg(KekAlg::Ec);
    let b = KeyServer::new(OpenSsl::new(), Arc::clone(&storage)).with_kek_alg(KekAlg::Ec);
    for strength in Strength::ALL {
        let from_a = a.generate_with(strength, KekAlg::Ec).await.unwrap();
        let from_b = b.generate_with(strength, KekAlg::Ec).await.unwrap();
        assert_eq!(a.get(&from_b).await.unwrap(), b.get(&from_b).await.unwrap());
        assert_eq!(a.get(&from_a).await.unwrap(), b.get(&from_a).await.unwrap());
        let sealed = a.encrypt(&from_a, b"across suites").await.unwrap();
        assert_eq!(
            &b.decrypt(&from_a, &sealed).await.unwrap()[..],
            b"across suites"
        );
    }
}

/// `openssl` reads the EC KEKs both suites make: the curve, the key id
/// (SHA-256 of `openssl pkey -pubout -outform DER`), and the key-pair check.
#[test]
fn the_openssl_command_line_reads_ec_keks() {
    let dir = tempfile::tempdir().unwrap();
    for (name, suite) in suites() {
        for (curve, openssl_name) in [
            (Curve::P256, "prime256v1"),
            (Curve::P384, "secp384r1"),
            (Curve::P521, "secp521r1"),
        ] {
            let kek =
                Kek::from_pkcs8_der(&suite.ec().unwrap().generate_ec(curve).unwrap()).unwrap();
            let path = dir.path().join(format!("{name}-{curve}.pem"));
            std::fs::write(&path, kek.to_pem().as_bytes()).unwrap();
            let pem = path.to_str().unwrap();
            let Some(text) = openssl(&["pkey", "-in", pem, "-noout", "-text"]) else {
                return;
            };
            let text = String::from_utf8(text).unwrap();
            assert!(
                text.contains(&format!("ASN1 OID: {openssl_name}")),
                "{name} {curve}: {text}"
            );
            assert!(
                text.contains(&format!("NIST CURVE: {curve}")),
                "{name} {curve}"
            );
            let spki = openssl(&["pkey", "-in", pem, "-pubout", "-outform", "DER"]).unwrap();
            assert_eq!(spki, kek.public_key_der(), "{name} {curve}: SPKI bytes");
            assert_eq!(KeyId::from_spki_der(&spki), kek.id());
            openssl(&["pkey", "-in", pem, "-check", "-noout"]).unwrap();
        }
    }
}

/// The original key server's narrative with EC KEKs at every strength, through a client
/// over the wire (in-process), with server-side and client-side unwrap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_narrative_with_ec_keks() {
    let server = Arc::new(
        KeyServer::new(RustCrypto::new(), MemoryStorage::new())
            .with_kek_alg(KekAlg::Ec)
            .with_allowed_kek_algs(&[KekAlg::Rsa]),
    );
    assert_eq!(server.status().kek_alg, "ec");
    let client = keyserver::transports::InProcess::client(Arc::clone(&server));
    let local = KeyClient::new(
        keyserver::transports::InProcess::new(Arc::clone(&server) as _),
        OpenSsl::new(),
    )
    .with_unwrap_mode(UnwrapMode::Client);
    // generate() without an algorithm: the server's (ec), P-256.
    let kek = client.generate().await.unwrap();
    assert_eq!((kek.alg(), kek.curve()), (KekAlg::Ec, Some(Curve::P256)));
    assert!(kek.to_pem().starts_with("-----BEGIN PRIVATE KEY-----\n"));
    for strength in Strength::ALL {
        let kek = client.generate_with(Some(strength), None).await.unwrap();
        assert_eq!(kek.curve(), Some(Curve::for_strength(strength)));
        let dek = client.get(&kek).await.unwrap();
        assert_eq!(dek.strength(), strength);
        // Client-side unwrap: the KEK never leaves this process.
        assert_eq!(local.get(&kek).await.unwrap(), dek);
        let sealed = client.encrypt(&kek, b"Stephan Richter").await.unwrap();
        assert_eq!(
            &local.decrypt(&kek, &sealed).await.unwrap()[..],
            b"Stephan Richter"
        );
        // Neither the DEK nor the public key is in the record.
        let record = server.storage().get(&kek.id()).await.unwrap();
        let bytes = record.encode();
        assert!(!bytes
            .windows(dek.as_bytes().len())
            .any(|w| w == dek.as_bytes()));
        assert!(!bytes
            .windows(kek.public_key_der().len())
            .any(|w| w == kek.public_key_der()));
    }
    // RSA is allowed too, and the two kinds never open each other's data.
    let rsa = client.generate_with(None, Some(KekAlg::Rsa)).await.unwrap();
    assert_eq!((rsa.alg(), rsa.bits()), (KekAlg::Rsa, 3072));
    let sealed = client.encrypt(&kek, b"x").await.unwrap();
    assert!(matches!(
        client.decrypt(&rsa, &sealed).await,
        Err(Error::KeyMismatch { .. })
    ));
    // A KEK of one algorithm for a record of the other: a clear refusal.
    let forged = keyserver::WrappedDek::with_alg(
        KekAlg::Ec,
        rsa.id(),
        256,
        Strength::S128,
        0,
        server
            .storage()
            .get(&kek.id())
            .await
            .unwrap()
            .wrapped()
            .to_vec(),
    )
    .unwrap();
    let storage = MemoryStorage::new();
    storage.put(&forged).await.unwrap();
    let other = KeyServer::new(RustCrypto::new(), storage);
    assert!(matches!(
        other.get(&rsa).await,
        Err(Error::CorruptRecord { .. })
    ));
}

/// A server limited to RSA refuses EC (and the other way round) with a
/// policy error (code 4) across the wire; an unknown algorithm name is
/// refused before anything is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_limits_the_algorithms() {
    let rsa_only = Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()));
    let client = keyserver::transports::InProcess::client(Arc::clone(&rsa_only));
    let err = client
        .generate_with(Some(Strength::S256), Some(KekAlg::Ec))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 4, "{err}");
    assert!(err.to_string().contains("not offered"), "{err}");
    let ec_only =
        Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()).with_kek_alg(KekAlg::Ec));
    let client = keyserver::transports::InProcess::client(Arc::clone(&ec_only));
    assert_eq!(
        client
            .generate_with(None, Some(KekAlg::Rsa))
            .await
            .unwrap_err()
            .code(),
        4
    );
    assert_eq!(rsa_only.len() + ec_only.len(), 0, "nothing was made");
    assert_eq!("dsa".parse::<KekAlg>().unwrap_err().code(), 4);
    // An EC key built from a valid point and a made-up scalar is refused
    // before any unwrap, with code 2, by both suites.
    for (name, suite) in suites() {
        let keys = KeyServer::new(suite, MemoryStorage::new()).with_kek_alg(KekAlg::Ec);
        let real = keys
            .generate_with(Strength::S192, KekAlg::Ec)
            .await
            .unwrap();
        let point = ec_private_parts(real.pkcs8_der()).unwrap().point.to_vec();
        let forged =
            Kek::from_pkcs8_der(&ec_pkcs8_der(Curve::P384, &[7; 48], &point).unwrap()).unwrap();
        assert_eq!(forged.id(), real.id());
        let err = keys.get(&forged).await.unwrap_err();
        assert!(matches!(err, Error::InvalidKey { .. }), "{name}: {err}");
    }
}

/// Opens a hybrid record's `(enc, ct)` with the `hpke` crate.
fn hpke_crate_open_hybrid(
    kem: HybridKem,
    seed: &[u8],
    enc: &[u8],
    info: &[u8],
    ct: &[u8],
) -> Vec<u8> {
    macro_rules! open {
        ($kem:ty, $kdf:ty) => {{
            let sk = <$kem as hpke::Kem>::PrivateKey::from_bytes(seed).unwrap();
            let enc = <$kem as hpke::Kem>::EncappedKey::from_bytes(enc).unwrap();
            hpke::single_shot_open::<hpke::aead::AesGcm256, $kdf, $kem>(
                &OpModeR::Base,
                &sk,
                &enc,
                info,
                ct,
                b"",
            )
            .unwrap()
        }};
    }
    match kem {
        HybridKem::MlKem768P256 => open!(hpke::kem::MlKem768P256, hpke::kdf::HkdfSha256),
        _ => open!(hpke::kem::MlKem1024P384, hpke::kdf::HkdfSha384),
    }
}

/// Seals with the `hpke` crate to a hybrid public key: `(enc, ct)`.
fn hpke_crate_seal_hybrid(kem: HybridKem, pk: &[u8], info: &[u8], pt: &[u8]) -> (Vec<u8>, Vec<u8>) {
    macro_rules! seal {
        ($kem:ty, $kdf:ty) => {{
            let pk = <$kem as hpke::Kem>::PublicKey::from_bytes(pk).unwrap();
            let (enc, ct) = hpke::single_shot_seal::<hpke::aead::AesGcm256, $kdf, $kem>(
                &OpModeS::Base,
                &pk,
                info,
                pt,
                b"",
            )
            .unwrap();
            (enc.to_bytes().to_vec(), ct)
        }};
    }
    match kem {
        HybridKem::MlKem768P256 => seal!(hpke::kem::MlKem768P256, hpke::kdf::HkdfSha256),
        _ => seal!(hpke::kem::MlKem1024P384, hpke::kdf::HkdfSha384),
    }
}

/// The DER `HpkePublicKey` built by hand (SEQUENCE { INTEGER kemId, OCTET
/// STRING pk }): the key id is its SHA-256.
fn hpke_public_key_der(kem_id: u16, pk: &[u8]) -> Vec<u8> {
    let mut int = vec![0x02, 0x01, kem_id as u8];
    if kem_id > 0x7f {
        int = vec![0x02, 0x02, (kem_id >> 8) as u8, kem_id as u8];
    }
    let octets = [&[0x04, 0x82][..], &(pk.len() as u16).to_be_bytes(), pk].concat();
    let body = [int, octets].concat();
    [&[0x30, 0x82][..], &(body.len() as u16).to_be_bytes(), &body].concat()
}

/// Hybrid post-quantum KEKs at every strength, end to end on the RustCrypto
/// suite: the PEM round trip and the key id, the original key server's narrative over the
/// wire with server- and client-side unwrap, the `hpke` crate opening
/// keyserver's records and keyserver opening the `hpke` crate's
/// ciphertexts, a forged key refused, and rotation of an RSA key to a
/// hybrid one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_pq_keks_end_to_end() {
    let storage = Arc::new(MemoryStorage::new());
    let server = Arc::new(
        KeyServer::new(RustCrypto::new(), Arc::clone(&storage))
            .with_kek_alg(KekAlg::HybridPq)
            .with_allowed_kek_algs(&[KekAlg::Rsa])
            .with_allowed_strengths(&Strength::ALL),
    );
    assert_eq!(server.status().kek_alg, "hybrid-pq");
    let client = keyserver::transports::InProcess::client(Arc::clone(&server));
    let local = KeyClient::new(
        keyserver::transports::InProcess::new(Arc::clone(&server) as _),
        RustCrypto::new(),
    )
    .with_unwrap_mode(UnwrapMode::Client);
    for (strength, kem) in [
        (Strength::S128, HybridKem::MlKem768P256),
        (Strength::S192, HybridKem::MlKem1024P384),
        (Strength::S256, HybridKem::MlKem1024P384),
    ] {
        let kek = client.generate_with(Some(strength), None).await.unwrap();
        assert_eq!((kek.alg(), kek.hybrid_kem()), (KekAlg::HybridPq, Some(kem)));
        let pem = kek.to_pem();
        assert!(
            pem.starts_with("-----BEGIN HPKE PRIVATE KEY-----\n"),
            "{kem}"
        );
        let again = Kek::from_pem(&pem).unwrap();
        assert_eq!(again.id(), kek.id());
        let parts = keyserver::hybrid::hybrid_private_parts(kek.pkcs8_der()).unwrap();
        let public = hpke_public_key_der(kem.kem_id(), parts.public_key);
        assert_eq!(public, kek.public_key_der(), "{kem}: HpkePublicKey DER");
        assert_eq!(KeyId::from_spki_der(&public), kek.id());

        let dek = client.get(&kek).await.unwrap();
        assert_eq!(dek.strength(), strength);
        assert_eq!(
            local.get(&kek).await.unwrap(),
            dek,
            "{kem}: client-side unwrap"
        );
        let sealed = client.encrypt(&kek, b"harvest now").await.unwrap();
        assert_eq!(
            &local.decrypt(&kek, &sealed).await.unwrap()[..],
            b"harvest now"
        );

        // The record opens with the hpke crate, given only docs/FORMAT.md.
        let record = server.storage().get(&kek.id()).await.unwrap();
        assert_eq!(record.alg(), KekAlg::HybridPq);
        let (enc, ct) = record.wrapped().split_at(kem.enc_len());
        let wrap = if kem == HybridKem::MlKem768P256 { 5 } else { 6 };
        let dek_id = match strength {
            Strength::S128 => 1,
            Strength::S192 => 2,
            _ => 3,
        };
        let info = [&b"keyserver wrapped DEK v1"[..], &[wrap, dek_id]].concat();
        let opened = hpke_crate_open_hybrid(kem, parts.seed, enc, &info, ct);
        assert_eq!(
            opened,
            dek.as_bytes(),
            "{kem}: the hpke crate opens the record"
        );
        // And what the hpke crate seals, keyserver's HPKE opens.
        let (enc, ct) = hpke_crate_seal_hybrid(kem, parts.public_key, b"x-check", b"from hpke");
        let cs = keyserver::hpke::Ciphersuite::for_hybrid(kem);
        let mut ctx =
            keyserver::hybrid::setup_receiver(server.suite(), cs, parts.seed, &enc, b"x-check")
                .unwrap();
        assert_eq!(
            &ctx.open(server.suite(), b"", &ct).unwrap()[..],
            b"from hpke"
        );

        // A key with another seed but this key's public key: same id,
        // refused before any unwrap (code 2).
        let mut seed = parts.seed.to_vec();
        seed[0] ^= 1;
        let forged_der = keyserver::hybrid::private_key_der(server.suite(), kem, &seed).unwrap();
        let forged_parts = keyserver::hybrid::hybrid_private_parts(&forged_der).unwrap();
        let doc = [
            &forged_der[..forged_der.len() - forged_parts.public_key.len()],
            parts.public_key,
        ]
        .concat();
        let forged = Kek::from_hybrid_der(&doc).unwrap();
        assert_eq!(forged.id(), kek.id());
        assert_eq!(client.get(&forged).await.unwrap_err().code(), 2, "{kem}");
        assert_eq!(local.get(&forged).await.unwrap_err().code(), 2, "{kem}");
    }
    // A key keeps its algorithm through rotation while the server allows
    // it; a server that no longer offers RSA moves an RSA key to its own
    // algorithm (hybrid here), and the data still opens.
    let rsa = client.generate_with(None, Some(KekAlg::Rsa)).await.unwrap();
    let sealed = client.encrypt(&rsa, b"old data").await.unwrap();
    let kept = client.rotate(&rsa, None).await.unwrap();
    assert_eq!(kept.alg(), KekAlg::Rsa);
    let pq_only = Arc::new(
        KeyServer::new(RustCrypto::new(), Arc::clone(&storage)).with_kek_alg(KekAlg::HybridPq),
    );
    let pq_client = keyserver::transports::InProcess::client(Arc::clone(&pq_only));
    let rotated = pq_client.rotate(&kept, None).await.unwrap();
    assert_eq!(rotated.alg(), KekAlg::HybridPq);
    assert_eq!(
        &pq_client.decrypt(&rotated, &sealed).await.unwrap()[..],
        b"old data"
    );
    // A hybrid key is never rotated down to a classical one.
    let ec_only =
        Arc::new(KeyServer::new(RustCrypto::new(), Arc::clone(&storage)).with_kek_alg(KekAlg::Ec));
    let ec_client = keyserver::transports::InProcess::client(Arc::clone(&ec_only));
    let err = ec_client.rotate(&rotated, None).await.unwrap_err();
    assert_eq!(err.code(), 4, "{err}");
}

/// The OpenSSL suite (3.0 here) has no ML-KEM: every path says so with a
/// typed policy error (code 4) naming the linked OpenSSL, never a panic or
/// a wrong key; and a server cannot be made to use it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openssl_suite_refuses_hybrid_keks_with_a_typed_error() {
    let keys = KeyServer::new(OpenSsl::new(), MemoryStorage::new()).with_kek_alg(KekAlg::HybridPq);
    let err = keys.check_kek_alg_support(KekAlg::HybridPq).unwrap_err();
    assert_eq!(err.code(), 4);
    let text = err.to_string();
    assert!(text.contains("openssl") && text.contains("ML-KEM"), "{err}");
    assert_eq!(keys.generate().await.unwrap_err().code(), 4);
    assert_eq!(keys.len(), 0);
    // A hybrid key made elsewhere (RustCrypto), presented to the OpenSSL
    // suite: server-side and client-side unwrap refuse it, typed.
    let storage = Arc::new(MemoryStorage::new());
    let maker =
        KeyServer::new(RustCrypto::new(), Arc::clone(&storage)).with_kek_alg(KekAlg::HybridPq);
    let kek = maker.generate().await.unwrap();
    let openssl = Arc::new(KeyServer::new(OpenSsl::new(), Arc::clone(&storage)));
    assert_eq!(openssl.get(&kek).await.unwrap_err().code(), 4);
    let local = KeyClient::new(
        keyserver::transports::InProcess::new(Arc::clone(&maker_arc(maker)) as _),
        OpenSsl::new(),
    )
    .with_unwrap_mode(UnwrapMode::Client);
    assert_eq!(local.get(&kek).await.unwrap_err().code(), 4);
}

fn maker_arc<C: CipherSuite, S: KeyStorage>(keys: KeyServer<C, S>) -> Arc<KeyServer<C, S>> {
    Arc::new(keys)
}
