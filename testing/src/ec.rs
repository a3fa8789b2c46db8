//! Elliptic-curve KEKs in the cipher conformance kit: the RFC 9180 test
//! vectors through the core's HPKE on this suite's primitives, key
//! generation and key-pair checks on every curve, wrapped-DEK records that
//! refuse every changed byte, and malformed or mismatched keys refused with
//! the same typed error in every suite.
//!
//! A suite that does not offer EC keys (one written before they existed)
//! passes by refusing every EC primitive with a policy error (code 4),
//! never a panic: [`ec_supported`] tells which.

use keyserver_core::crypto::EcKek;
use keyserver_core::hpke;
use keyserver_core::plugin::{ec_pkcs8_der, ec_private_parts, ec_public_point};
use keyserver_core::plugin::{unwrap_now, wrap_dek};
use keyserver_core::{CipherSuite, Curve, Dek, Error, Kek, KekAlg, Strength, WrappedDek};

use super::fixtures::{ec_fixture_kek, hex_field, hpke_vectors};

/// Whether `suite` offers EC keys ([`CipherSuite::ec`]). If it does not,
/// the core's EC operations on it must say so with the same policy error
/// (code 4), never a panic; this checks that too.
pub fn ec_supported<C: CipherSuite>(suite: &C) -> bool {
    ec_capability(suite).is_some()
}

/// `suite`'s EC KEKs, after [`ec_supported`]'s checks.
fn ec_capability<C: CipherSuite>(suite: &C) -> Option<&dyn EcKek> {
    if let Some(ec) = suite.ec() {
        return Some(ec);
    }
    let kek = ec_fixture_kek(Curve::P256);
    let err = keyserver_core::crypto::ec_kek(suite)
        .err()
        .map(|e| e.code());
    assert_eq!(err, Some(4), "an absent EC capability is a policy error");
    let dek = [0x5a; 16];
    let err = wrap_dek(suite, &kek, Strength::S128, &dek, 7).unwrap_err();
    assert_eq!(err.code(), 4, "an EC record without EC keys: {err}");
    let (_, point) = ec_public_point(kek.public_key_der()).unwrap();
    let err = hpke::setup_sender(suite, Curve::P256, point, b"", None)
        .map(drop)
        .unwrap_err();
    assert_eq!(err.code(), 4, "HPKE without EC keys: {err}");
    None
}

/// RFC 9180 A.3.1 (P-256) and A.6.1 (P-521), base mode: with the vectors'
/// ephemeral key, `enc`, the ciphertexts of sequence numbers 0 and 1 and
/// their opening come out exactly.
pub fn hpke_rfc9180_vectors<C: CipherSuite>(suite: &C) {
    let Some(ec) = ec_capability(suite) else {
        return;
    };
    let cases = hpke_vectors();
    assert_eq!(cases.len(), 2);
    for case in &cases {
        let curve = match case["kem_id"].as_u64() {
            Some(0x10) => Curve::P256,
            Some(0x12) => Curve::P521,
            other => panic!("unexpected KEM {other:?}"),
        };
        let cs = hpke::Ciphersuite::for_curve(curve);
        assert_eq!(u64::from(cs.kdf_id), case["kdf_id"].as_u64().unwrap());
        assert_eq!(u64::from(cs.aead_id), case["aead_id"].as_u64().unwrap());
        let sk_r = ec_pkcs8_der(curve, &hex_field(case, "skrm"), &hex_field(case, "pkrm")).unwrap();
        let sk_e = ec_pkcs8_der(curve, &hex_field(case, "skem"), &hex_field(case, "pkem")).unwrap();
        ec.ec_check_key_pair(&sk_r).unwrap();
        ec.ec_check_key_pair(&sk_e).unwrap();
        let info = hex_field(case, "info");
        let (enc, mut sender) =
            hpke::setup_sender(suite, curve, &hex_field(case, "pkrm"), &info, Some(&sk_e)).unwrap();
        assert_eq!(
            hex::encode(&enc),
            case["enc"].as_str().unwrap(),
            "{curve}: enc"
        );
        let mut receiver = hpke::setup_receiver(suite, &sk_r, &enc, &info).unwrap();
        check_encryptions(suite, case, &mut sender, &mut receiver, &curve.to_string());
        // A changed aad, enc or ciphertext does not open.
        let ct = hex_field(&case["encryptions"][0], "ct");
        let aad = hex_field(&case["encryptions"][0], "aad");
        assert!(matches!(
            hpke::open(suite, &sk_r, &enc, &info, b"other aad", &ct),
            Err(Error::DecryptionFailed)
        ));
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert!(matches!(
            hpke::open(suite, &sk_r, &enc, &info, &aad, &bad),
            Err(Error::DecryptionFailed)
        ));
    }
}

/// Key generation, the key id (SHA-256 of the SubjectPublicKeyInfo), the
/// key-pair check, ECDH in both directions and HPKE round trips on every
/// curve.
pub fn ec_keys_and_hpke<C: CipherSuite>(suite: &C) {
    let Some(ec) = ec_capability(suite) else {
        return;
    };
    for curve in Curve::ALL {
        let a = Kek::from_pkcs8_der(&ec.generate_ec(curve).unwrap()).unwrap();
        let b = Kek::from_pkcs8_der(&ec.generate_ec(curve).unwrap()).unwrap();
        assert_eq!(
            (a.alg(), a.curve(), a.bits()),
            (KekAlg::Ec, Some(curve), curve.bits())
        );
        assert_eq!(a.security_bits(), curve.security_bits());
        assert_ne!(a.id(), b.id());
        assert_eq!(
            a.id(),
            keyserver_core::KeyId::from_spki_der(a.public_key_der())
        );
        ec.ec_check_key_pair(a.pkcs8_der()).unwrap();
        let (_, pa) = ec_public_point(a.public_key_der()).unwrap();
        let (_, pb) = ec_public_point(b.public_key_der()).unwrap();
        let ab = ec.ecdh(a.pkcs8_der(), pb).unwrap();
        assert_eq!(ab.len(), curve.field_len());
        assert_eq!(ab, ec.ecdh(b.pkcs8_der(), pa).unwrap());
        let (enc, ct) = hpke::seal(suite, curve, pa, b"info", b"aad", b"a data key").unwrap();
        assert_eq!(enc.len(), curve.point_len());
        let pt = hpke::open(suite, a.pkcs8_der(), &enc, b"info", b"aad", &ct).unwrap();
        assert_eq!(&pt[..], b"a data key");
        // Fresh ephemeral keys: sealing twice never gives the same bytes.
        assert_ne!(
            hpke::seal(suite, curve, pa, b"info", b"aad", b"x")
                .unwrap()
                .0,
            enc
        );
        // Another recipient's key does not open it.
        assert!(hpke::open(suite, b.pkcs8_der(), &enc, b"info", b"aad", &ct).is_err());
        // The checked-in fixture (made by `openssl genpkey`) is used alike,
        // and its point is its scalar's.
        let fixture = ec_fixture_kek(curve);
        ec.ec_check_key_pair(fixture.pkcs8_der()).unwrap();
        let parts = ec_private_parts(fixture.pkcs8_der()).unwrap();
        assert_eq!(ec.ec_public_key(curve, parts.scalar).unwrap(), parts.point);
        let zero = vec![0; curve.field_len()];
        assert_eq!(ec.ec_public_key(curve, &zero).unwrap_err().code(), 2);
        let high = vec![0xff; curve.field_len()];
        assert_eq!(ec.ec_public_key(curve, &high).unwrap_err().code(), 2);
    }
}

/// A DEK wrapped under an EC KEK of every strength unwraps to itself; every
/// single-byte change of the wrapped key (with the record's checksum made
/// right again, as a forging server would) is refused, as is a record of
/// another algorithm or a KEK weaker than the DEK.
pub fn ec_records<C: CipherSuite>(suite: &C) {
    if !ec_supported(suite) {
        return;
    }
    for strength in Strength::ALL {
        let curve = Curve::for_strength(strength);
        let kek = ec_fixture_kek(curve);
        let dek = vec![0x5a; strength.aes_key_len()];
        let record = wrap_dek(suite, &kek, strength, &dek, 7).unwrap();
        assert_eq!(record.alg(), KekAlg::Ec);
        let decoded = WrappedDek::decode(&record.encode(), &kek.id()).unwrap();
        assert_eq!(decoded, record);
        let opened = unwrap_now(suite, &kek, &decoded, Strength::S128).unwrap();
        assert_eq!(opened, Dek::from_bytes(&dek).unwrap());
        let wrapped = record.wrapped().to_vec();
        for i in 0..wrapped.len() {
            let mut bad = wrapped.clone();
            bad[i] ^= 0x01;
            let forged = WrappedDek::with_alg(KekAlg::Ec, kek.id(), curve.bits(), strength, 7, bad);
            let Ok(forged) = forged else {
                continue; // the point prefix: refused as a record already
            };
            let err = unwrap_now(suite, &kek, &forged, Strength::S128).unwrap_err();
            assert!(
                matches!(err, Error::UnwrapFailed { .. }),
                "{curve}, byte {i}: {err}"
            );
        }
        // A weaker curve may not wrap this DEK.
        if strength != Strength::S128 {
            let weak = ec_fixture_kek(Curve::P256);
            assert_eq!(
                wrap_dek(suite, &weak, strength, &dek, 7)
                    .unwrap_err()
                    .code(),
                4
            );
        }
    }
    // An RSA KEK presented for an EC record under its key id, and the other
    // way round, is refused as a corrupt record, never tried.
    let ec = ec_fixture_kek(Curve::P256);
    let rsa = super::fixtures::fixture_kek(3072);
    let ec_record = wrap_dek(suite, &ec, Strength::S128, &[1; 16], 0).unwrap();
    let as_rsa = WrappedDek::with_alg(
        KekAlg::Ec,
        rsa.id(),
        256,
        Strength::S128,
        0,
        ec_record.wrapped().to_vec(),
    )
    .unwrap();
    assert!(matches!(
        unwrap_now(suite, &rsa, &as_rsa, Strength::S128),
        Err(Error::CorruptRecord { .. })
    ));
    let rsa_record = WrappedDek::new(ec.id(), 3072, Strength::S128, 0, vec![1; 384]).unwrap();
    assert!(matches!(
        unwrap_now(suite, &ec, &rsa_record, Strength::S128),
        Err(Error::CorruptRecord { .. })
    ));
}

/// Malformed and mismatched EC keys and points are refused with
/// [`Error::InvalidKey`] (code 2), the same in every suite: garbage, a
/// scalar with another key's public point, a zero scalar, a scalar at the
/// group order, a point off the curve, the identity, a point of another
/// curve, a compressed point.
pub fn ec_key_rejections<C: CipherSuite>(suite: &C) {
    let Some(ec) = ec_capability(suite) else {
        return;
    };
    let code = |r: keyserver_core::Result<()>| match r {
        Ok(()) => 0,
        Err(e) => e.code(),
    };
    for curve in Curve::ALL {
        let a = ec_fixture_kek(curve);
        let b = Kek::from_pkcs8_der(&ec.generate_ec(curve).unwrap()).unwrap();
        let pa = ec_private_parts(a.pkcs8_der()).unwrap();
        let pb = ec_private_parts(b.pkcs8_der()).unwrap();
        // A scalar with another key's point: parses, but is no key pair.
        let forged = ec_pkcs8_der(curve, pa.scalar, pb.point).unwrap();
        let forged_kek = Kek::from_pkcs8_der(&forged).unwrap();
        assert_eq!(forged_kek.id(), b.id(), "the id is the public point's");
        assert_eq!(
            code(ec.ec_check_key_pair(&forged)),
            2,
            "{curve}: mismatched pair"
        );
        let zero = ec_pkcs8_der(curve, &vec![0; curve.field_len()], pa.point).unwrap();
        assert_eq!(code(ec.ec_check_key_pair(&zero)), 2, "{curve}: zero scalar");
        let all_ones = ec_pkcs8_der(curve, &vec![0xff; curve.field_len()], pa.point).unwrap();
        assert_eq!(
            code(ec.ec_check_key_pair(&all_ones)),
            2,
            "{curve}: scalar >= order"
        );
        // Points: off the curve, the identity, compressed, another curve.
        let mut off = pb.point.to_vec();
        *off.last_mut().unwrap() ^= 1;
        let ecdh = |point: &[u8]| ec.ecdh(a.pkcs8_der(), point).map(drop);
        assert_eq!(code(ecdh(&off)), 2, "{curve}: point off the curve");
        assert_eq!(code(ecdh(&[0])), 2, "{curve}: identity");
        let mut compressed = vec![2 | (pb.point[pb.point.len() - 1] & 1)];
        compressed.extend_from_slice(&pb.point[1..=curve.field_len()]);
        assert_eq!(code(ecdh(&compressed)), 2, "{curve}: compressed point");
        let other = if curve == Curve::P256 {
            Curve::P384
        } else {
            Curve::P256
        };
        let other_kek = ec_fixture_kek(other);
        let (_, other_point) = ec_public_point(other_kek.public_key_der()).unwrap();
        assert_eq!(code(ecdh(other_point)), 2, "{curve}: point of {other}");
        assert_eq!(
            code(hpke::open(suite, a.pkcs8_der(), &off, b"", b"", &[0; 32]).map(drop)),
            2,
            "{curve}: enc off the curve"
        );
    }
    assert_eq!(code(ec.ec_check_key_pair(b"not a key")), 2);
    assert_eq!(code(ec.ecdh(b"not a key", &[4; 65]).map(drop)), 2);
}

/// Whether `suite` offers the hybrid KEKs ([`CipherSuite::hybrid`]):
/// if it does, its SHA-3 is SHA-3 (FIPS 202 of the empty string); if it
/// does not, the core's hybrid operations on it say so with a policy error
/// (code 4).
pub fn hybrid_supported<C: CipherSuite>(suite: &C) -> bool {
    let Some(pq) = suite.hybrid() else {
        let err = keyserver_core::hybrid::generate(suite, keyserver_core::HybridKem::MlKem768P256)
            .unwrap_err();
        assert_eq!(err.code(), 4, "{err}");
        return false;
    };
    assert!(suite.ec().is_some(), "a hybrid KEK needs the EC capability");
    assert_eq!(
        hex::encode(pq.sha3_256(b"").unwrap()),
        "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a"
    );
    let mut xof = [0u8; 32];
    pq.shake256(b"", &mut xof).unwrap();
    assert_eq!(
        hex::encode(xof),
        "46b9dd2b0ba88d13233b3feb743eeb243fcd52ea62b81b82b50c27646ed5762f"
    );
    true
}

/// The hybrid KEMs' HPKE vectors (draft-ietf-hpke-pq A.4 and A.6, and the
/// `hpke` crate's for MLKEM768-P256): DeriveKeyPair, the public key, `enc`
/// with the vectors' randomness, the ciphertexts of sequence numbers 0 and
/// 1, and their opening.
pub fn hybrid_vectors<C: CipherSuite>(suite: &C) {
    if !hybrid_supported(suite) {
        return;
    }
    let cases = super::fixtures::hpke_pq_vectors();
    assert_eq!(cases.len(), 3);
    for case in &cases {
        let source = case["source"].as_str().unwrap();
        let kem_id = u16::try_from(case["kem_id"].as_u64().unwrap()).unwrap();
        let kem = keyserver_core::HybridKem::from_kem_id(kem_id).unwrap();
        let cs = hpke::Ciphersuite::new(
            hpke::Kem::Hybrid(kem),
            u16::try_from(case["kdf_id"].as_u64().unwrap()).unwrap(),
            u16::try_from(case["aead_id"].as_u64().unwrap()).unwrap(),
        )
        .unwrap();
        let seed =
            keyserver_core::hybrid::derive_seed(suite, kem, &hex_field(case, "ikmR")).unwrap();
        assert_eq!(
            hex::encode(&seed),
            case["skRm"].as_str().unwrap(),
            "{source}: skRm"
        );
        let der = keyserver_core::hybrid::private_key_der(suite, kem, &seed).unwrap();
        let parts = keyserver_core::hybrid::hybrid_private_parts(&der).unwrap();
        assert_eq!(
            hex::encode(parts.public_key),
            case["pkRm"].as_str().unwrap(),
            "{source}: pkRm"
        );
        keyserver_core::hybrid::check_key_pair(suite, &der).unwrap();
        let info = hex_field(case, "info");
        let (enc, mut sender) = keyserver_core::hybrid::setup_sender(
            suite,
            cs,
            parts.public_key,
            &info,
            Some(&hex_field(case, "ikmE")),
        )
        .unwrap();
        assert_eq!(
            hex::encode(&enc),
            case["enc"].as_str().unwrap(),
            "{source}: enc"
        );
        let mut receiver =
            keyserver_core::hybrid::setup_receiver(suite, cs, &seed, &enc, &info).unwrap();
        check_encryptions(suite, case, &mut sender, &mut receiver, source);
        // Another seed does not open it (ML-KEM's implicit rejection gives
        // a wrong secret, never an error of its own: the AEAD refuses).
        let mut other = hybrid_other_seed(&seed);
        let mut wrong =
            keyserver_core::hybrid::setup_receiver(suite, cs, &other, &enc, &info).unwrap();
        let ct = hex_field(&case["encryptions"][0], "ct");
        let aad = hex_field(&case["encryptions"][0], "aad");
        assert!(matches!(
            wrong.open(suite, &aad, &ct),
            Err(Error::DecryptionFailed)
        ));
        other.iter_mut().for_each(|b| *b = 0);
    }
}

fn hybrid_other_seed(seed: &[u8]) -> Vec<u8> {
    let mut other = seed.to_vec();
    other[0] ^= 1;
    other
}

/// Seals a vector's encryptions in order with `sender` to exactly their
/// bytes, and opens each with `receiver`.
fn check_encryptions<C: CipherSuite>(
    suite: &C,
    case: &serde_json::Value,
    sender: &mut hpke::Context,
    receiver: &mut hpke::Context,
    name: &str,
) {
    for encryption in case["encryptions"].as_array().unwrap() {
        let (aad, pt) = (hex_field(encryption, "aad"), hex_field(encryption, "pt"));
        let ct = sender.seal(suite, &aad, &pt).unwrap();
        assert_eq!(
            hex::encode(&ct),
            encryption["ct"].as_str().unwrap(),
            "{name}: ct"
        );
        assert_eq!(&receiver.open(suite, &aad, &ct).unwrap()[..], &pt[..]);
    }
}
