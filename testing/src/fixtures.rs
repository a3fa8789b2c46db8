//! Fixtures and known-answer vectors, compiled in so the kit runs from any
//! crate (no paths into this crate's source tree).

use keyserver_core::Kek;

/// The checked-in KEK of `bits` bits (2048, 3072, 7680 or 15360), made with
/// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:BITS`.
///
/// # Panics
/// For any other size.
pub fn fixture_kek(bits: usize) -> Kek {
    let pem = match bits {
        2048 => include_str!("../fixtures/kek-rsa2048.pem"),
        3072 => include_str!("../fixtures/kek-rsa3072.pem"),
        7680 => include_str!("../fixtures/kek-rsa7680.pem"),
        15360 => include_str!("../fixtures/kek-rsa15360.pem"),
        other => panic!("no fixture KEK of {other} bits"),
    };
    Kek::from_pem(pem).expect("the fixture KEKs parse")
}

/// The checked-in EC KEK of `curve`, made with
/// `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` (and
/// P-384, P-521).
pub fn ec_fixture_kek(curve: keyserver_core::Curve) -> Kek {
    let pem = match curve {
        keyserver_core::Curve::P256 => include_str!("../fixtures/kek-p256.pem"),
        keyserver_core::Curve::P384 => include_str!("../fixtures/kek-p384.pem"),
        keyserver_core::Curve::P521 => include_str!("../fixtures/kek-p521.pem"),
        other => panic!("no fixture KEK for {other:?}"),
    };
    Kek::from_pem(pem).expect("the fixture KEKs parse")
}

/// The RFC 9180 test vectors of testing/vectors/hpke_rfc9180.json (P-256 and
/// P-521, base mode).
pub fn hpke_vectors() -> Vec<serde_json::Value> {
    let text = include_str!("../vectors/hpke_rfc9180.json");
    let file: serde_json::Value = serde_json::from_str(text).expect("the vector file parses");
    file["vectors"]
        .as_array()
        .expect("a list of vectors")
        .clone()
}

/// The HPKE vectors of the hybrid KEMs, testing/vectors/hpke_pq.json.
pub fn hpke_pq_vectors() -> Vec<serde_json::Value> {
    let text = include_str!("../vectors/hpke_pq.json");
    let file: serde_json::Value = serde_json::from_str(text).expect("the vector file parses");
    file["vectors"]
        .as_array()
        .expect("a list of vectors")
        .clone()
}

/// A vector file of testing/vectors/ (`envelope_v1.json`, `envelope_v2.json`, `stream_v1.json`,
/// `record_v1.json`), parsed.
///
/// # Panics
/// For any other name.
pub fn vectors(name: &str) -> Vec<serde_json::Value> {
    let text = match name {
        "envelope_v1.json" => include_str!("../vectors/envelope_v1.json"),
        "envelope_v2.json" => include_str!("../vectors/envelope_v2.json"),
        "stream_v1.json" => include_str!("../vectors/stream_v1.json"),
        "record_v1.json" => include_str!("../vectors/record_v1.json"),
        other => panic!("no vector file {other}"),
    };
    serde_json::from_str(text).expect("the vector files parse")
}

/// A hex field of a vector.
pub fn hex_field(v: &serde_json::Value, field: &str) -> Vec<u8> {
    hex::decode(v[field].as_str().expect("a string field")).expect("a hex field")
}

/// `n` bytes of a repeating, non-trivial pattern.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + i / 251) as u8).collect()
}

/// A PKCS#8 `PrivateKeyInfo` (DER) holding the PKCS#1 RSA key `key`, as a
/// test builds one field by field (a forged or a damaged key).
pub fn rsa_pkcs8_der(key: &pkcs1::RsaPrivateKeyRef<'_>) -> Vec<u8> {
    use der::Encode;
    let inner = key.to_der().expect("a PKCS#1 key encodes");
    pkcs8::PrivateKeyInfoRef::new(
        spki::AlgorithmIdentifierRef {
            oid: pkcs1::ALGORITHM_OID,
            parameters: Some(der::asn1::AnyRef::NULL),
        },
        der::asn1::OctetStringRef::new(&inner).expect("an octet string"),
    )
    .to_der()
    .expect("a PKCS#8 document encodes")
}
