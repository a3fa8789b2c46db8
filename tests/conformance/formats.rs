//! Known-answer vectors of the stored record format (tests/vectors/record_v1.json,
//! written by tests/vectors/generate.py independently of this crate).

use keyserver::{Error, KeyId, Strength, WrappedDek};

use crate::common::{hex_field, vectors};

#[test]
fn record_vectors_encode_and_decode() {
    let cases = vectors("record_v1.json");
    assert!(cases.len() >= 4);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let key_id = KeyId::from_bytes(hex_field(case, "key_id").try_into().unwrap());
        let strength = Strength::from_bits(case["strength"].as_u64().unwrap() as u32).unwrap();
        let record = WrappedDek::new(
            key_id,
            case["kek_bits"].as_u64().unwrap() as usize,
            strength,
            case["created"].as_u64().unwrap(),
            hex_field(case, "wrapped"),
        )
        .unwrap();
        let expected = hex_field(case, "record");
        assert_eq!(
            hex::encode(record.encode()),
            hex::encode(&expected),
            "{name}"
        );
        assert_eq!(
            WrappedDek::decode(&expected, &key_id).unwrap(),
            record,
            "{name}"
        );
    }
}

#[test]
fn damaged_records_are_corrupt_and_name_their_key() {
    let case = &vectors("record_v1.json")[0];
    let key_id = KeyId::from_bytes(hex_field(case, "key_id").try_into().unwrap());
    let good = hex_field(case, "record");
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x40;
        let err = WrappedDek::decode(&bad, &key_id).unwrap_err();
        assert!(
            matches!(err, Error::CorruptRecord { key_id: k, .. } if k == key_id),
            "byte {i}: {err:?}"
        );
        assert!(err.to_string().contains(&key_id.to_string()));
    }
    for len in 0..good.len() {
        assert!(matches!(
            WrappedDek::decode(&good[..len], &key_id),
            Err(Error::CorruptRecord { .. })
        ));
    }
    // A good record read under another id is corrupt too (misfiled).
    let other = KeyId::from_bytes([0; 32]);
    assert!(matches!(
        WrappedDek::decode(&good, &other),
        Err(Error::CorruptRecord {
            ref reason,
            ..
        }) if reason == "record belongs to another key id"
    ));
}

#[test]
fn key_id_parsing() {
    let hex = "ab".repeat(32);
    let id: KeyId = hex.parse().unwrap();
    assert_eq!(id.to_string(), hex);
    assert_eq!(id, hex.to_uppercase().parse().unwrap());
    for bad in [
        "",
        "ab",
        &"ab".repeat(33),
        &"zz".repeat(32),
        &"é".repeat(32),
    ] {
        let err = bad.parse::<KeyId>().unwrap_err();
        assert!(matches!(err, Error::InvalidKey { .. }), "{bad:?}");
        assert_eq!(err.code(), 2);
    }
}

#[test]
fn strengths_follow_sp800_57() {
    assert_eq!(Strength::default(), Strength::S128);
    let table: Vec<_> = Strength::ALL
        .iter()
        .map(|s| (s.bits(), s.rsa_bits(), s.aes_key_len() * 8))
        .collect();
    assert_eq!(
        table,
        [(128, 3072, 128), (192, 7680, 192), (256, 15360, 256)]
    );
    assert_eq!(Strength::of_rsa_bits(2048), 112);
    assert_eq!(Strength::of_rsa_bits(1024), 0);
    assert!("64".parse::<Strength>().is_err());
    assert!("x".parse::<Strength>().is_err());
}
