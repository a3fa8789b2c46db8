//! The wire API's own tests.

use std::collections::BTreeMap;

use super::*;

const KEK_3072: &str = include_str!("../../../testing/fixtures/kek-rsa3072.pem");

#[test]
fn every_call_survives_its_parameters() {
    let kek = Kek::from_pem(KEK_3072).expect("fixture"); // ok: test fixture
    let id = kek.id();
    let calls = [
        Call::Generate(None, None),
        Call::Generate(Some(Strength::S256), None),
        Call::Generate(Some(Strength::S192), Some(KekAlg::Ec)),
        Call::GetKey(kek),
        Call::GetWrapped(id),
        Call::Contains(id),
        Call::Status,
        Call::Describe(id),
        Call::Rotate(Kek::from_pem(KEK_3072).expect("fixture"), None), // ok: test fixture
        Call::Rotate(
            Kek::from_pem(KEK_3072).expect("fixture"),
            Some(Strength::S192),
        ), // ok: test fixture
        Call::Change(crate::Change::Suspend, crate::Target::KeyId(id)),
        Call::Change(
            crate::Change::Destroy,
            crate::Target::Kek(Kek::from_pem(KEK_3072).expect("fixture")), // ok: test fixture
        ),
        Call::ListKeys(crate::KeyFilter::default()),
        Call::ListKeys(crate::KeyFilter {
            state: Some(crate::KeyState::Compromised),
            owner: Some("app".into()),
            past_cryptoperiod: true,
            cursor: Some(id),
            limit: Some(5),
        }),
    ];
    for call in calls {
        let name = call.method().name;
        let params = call.clone().into_params();
        assert!(call.method().accepts(&params), "{name}");
        let back = Call::from_params(name, params, ('(', ')')).expect("parses"); // ok: test
        assert_eq!(back, call);
    }
    assert_eq!(METHODS.len(), 13);
    for m in METHODS {
        assert_eq!(method(m.name), Some(m));
        assert!(m.help.starts_with(m.name), "{} help", m.name);
    }
}

#[test]
fn a_reply_survives_its_value_and_a_wrong_shape_is_a_transport_error() {
    let status = Status {
        keys: 3,
        version: "1".into(),
        suite: "s".into(),
        storage: "m".into(),
        strength: 192,
        kek_alg: "ec".into(),
        fips: true,
    };
    let value = Reply::Status(status.clone()).into_value();
    assert_eq!(
        Reply::from_value(&Call::Status, value).ok(),
        Some(Reply::Status(status))
    );
    let id = KeyId::from_bytes([1; 32]);
    let err = Reply::from_value(&Call::Contains(id), Value::Int(1)).unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    // A record stored under another key id than asked for is refused.
    let other = Value::Struct(BTreeMap::from([
        ("key_id".to_string(), Value::str("00".repeat(32))),
        ("record".to_string(), Value::bytes(vec![0u8; 8])),
    ]));
    assert!(Reply::from_value(&Call::GetWrapped(id), other).is_err());
    // Values never show their contents.
    assert_eq!(format!("{:?}", Value::str("secret")), "Str(<6 bytes>)");
    assert_eq!(
        format!("{:?}", Value::bytes(*b"\x01\x02\x03")),
        "Bytes(<3 bytes>)"
    );
}
