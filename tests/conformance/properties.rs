//! Property tests: the envelope round-trips anything and rejects any change;
//! no parser panics on any input.

use keyserver::backends::RustCrypto;
use keyserver::envelope::{self, Header, OVERHEAD};
use keyserver::{Dek, Error, Kek, KeyId, WrappedDek};
use proptest::prelude::*;

fn dek_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 16),
        prop::collection::vec(any::<u8>(), 24),
        prop::collection::vec(any::<u8>(), 32),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn seal_open_round_trips(
        dek in dek_strategy(),
        id in any::<[u8; 32]>(),
        plaintext in prop::collection::vec(any::<u8>(), 0..2048),
        context in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let suite = RustCrypto::new();
        let dek = Dek::from_bytes(&dek).unwrap();
        let sealed = envelope::seal(&suite, &KeyId::from_bytes(id), &dek, &context, &plaintext).unwrap();
        prop_assert_eq!(sealed.len(), plaintext.len() + OVERHEAD);
        prop_assert_eq!(Header::parse(&sealed).unwrap().key_id, KeyId::from_bytes(id));
        let opened = envelope::open(&suite, &dek, &context, &sealed).unwrap();
        prop_assert_eq!(&opened[..], &plaintext[..]);
    }

    #[test]
    fn any_single_byte_change_is_rejected(
        plaintext in prop::collection::vec(any::<u8>(), 0..256),
        context in prop::collection::vec(any::<u8>(), 0..16),
        index in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let suite = RustCrypto::new();
        let dek = Dek::from_bytes(&[7; 16]).unwrap();
        let mut sealed = envelope::seal(&suite, &KeyId::from_bytes([1; 32]), &dek, &context, &plaintext).unwrap();
        let i = index.index(sealed.len());
        sealed[i] ^= flip;
        let err = envelope::open(&suite, &dek, &context, &sealed).unwrap_err();
        prop_assert!(matches!(err, Error::DecryptionFailed | Error::MalformedCiphertext { .. }), "{:?}", err);
    }

    #[test]
    fn wrong_key_wrong_context_and_truncation_are_rejected(
        plaintext in prop::collection::vec(any::<u8>(), 0..256),
        context in prop::collection::vec(any::<u8>(), 0..16),
        other in prop::collection::vec(any::<u8>(), 16),
        cut in any::<prop::sample::Index>(),
    ) {
        let suite = RustCrypto::new();
        let dek = Dek::from_bytes(&[9; 16]).unwrap();
        let sealed = envelope::seal(&suite, &KeyId::from_bytes([2; 32]), &dek, &context, &plaintext).unwrap();
        if other != [9; 16] {
            let wrong = Dek::from_bytes(&other).unwrap();
            prop_assert!(matches!(envelope::open(&suite, &wrong, &context, &sealed), Err(Error::DecryptionFailed)));
        }
        let mut ctx2 = context.clone();
        ctx2.push(0);
        prop_assert!(matches!(envelope::open(&suite, &dek, &ctx2, &sealed), Err(Error::DecryptionFailed)));
        let len = cut.index(sealed.len());
        let err = envelope::open(&suite, &dek, &context, &sealed[..len]).unwrap_err();
        prop_assert!(matches!(err, Error::DecryptionFailed | Error::MalformedCiphertext { .. }), "{:?}", err);
    }

    #[test]
    fn parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), text in ".{0,200}") {
        let suite = RustCrypto::new();
        let dek = Dek::from_bytes(&[1; 16]).unwrap();
        let _ = Header::parse(&bytes);
        prop_assert!(envelope::open(&suite, &dek, b"", &bytes).is_err());
        prop_assert!(WrappedDek::decode(&bytes, &KeyId::from_bytes([0; 32])).is_err());
        prop_assert!(Kek::from_pkcs8_der(&bytes).is_err());
        prop_assert!(Kek::from_pem(&text).is_err());
        let _ = text.parse::<KeyId>();
        let _ = text.parse::<keyserver::Strength>();
    }

    #[test]
    fn envelopes_with_a_valid_prefix_never_panic(tail in prop::collection::vec(any::<u8>(), 0..200), alg in any::<u8>()) {
        // Valid magic and version, arbitrary algorithm and body.
        let mut bytes = b"KSE\x01".to_vec();
        bytes.push(alg);
        bytes.extend_from_slice(&tail);
        let suite = RustCrypto::new();
        let dek = Dek::from_bytes(&[1; 32]).unwrap();
        prop_assert!(envelope::open(&suite, &dek, b"", &bytes).is_err());
    }
}

fn wire_value() -> impl Strategy<Value = keyserver::api::Value> {
    use keyserver::api::Value;
    let leaf = prop_oneof![
        any::<i64>().prop_map(Value::Int),
        any::<bool>().prop_map(Value::Bool),
        ".{0,80}".prop_map(Value::str),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Value::bytes),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4).prop_map(Value::Struct)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any method name with any parameters becomes a call or a typed error
    /// (never a panic), and an error never quotes a parameter.
    #[test]
    fn calls_from_any_parameters_never_panic(
        name in prop_oneof![
            Just("generate".to_string()), Just("get_key".to_string()),
            Just("get_wrapped".to_string()), Just("contains".to_string()),
            Just("status".to_string()), ".{0,20}",
        ],
        params in prop::collection::vec(wire_value(), 0..4),
    ) {
        use keyserver::api::{Call, Value};
        let long_strings: Vec<String> = params
            .iter()
            .filter_map(|v| match v {
                Value::Str(s) if s.chars().count() >= 16 => Some(s.to_string()),
                _ => None,
            })
            .collect();
        match Call::from_params(&name, params, ('(', ')')) {
            Ok(call) => prop_assert_eq!(call.method().name, name.as_str()),
            Err(e) => {
                prop_assert!(
                    matches!(
                        e,
                        Error::Protocol { .. } | Error::Policy { .. } | Error::InvalidKey { .. }
                    ),
                    "{:?}", e
                );
                let text = e.to_string();
                for s in &long_strings {
                    prop_assert!(!text.contains(s.as_str()), "{} quoted in {}", s, text);
                }
            }
        }
    }
}
