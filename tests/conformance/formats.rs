//! Known-answer vectors of the stored record format (testing/vectors/record_v1.json,
//! written by testing/vectors/generate.py independently of this crate).

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
        let decoded = WrappedDek::decode(&expected, &key_id).unwrap();
        assert_eq!(decoded, record, "{name}");
        // A record read back encodes to the bytes it was read from (its
        // verified checksum is kept, not recomputed).
        assert_eq!(
            hex::encode(decoded.encode()),
            hex::encode(&expected),
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
    for bad in [
        // Lowercase only, as documented: one key, one spelling.
        &hex.to_uppercase(),
        &format!("A{}", &hex[1..]),
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

/// `record` with its checksum recomputed after `change`: what a malicious or
/// buggy server can hand out.
fn resealed(record: &[u8], change: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    use sha2::Digest;
    let mut body = record[..record.len() - 32].to_vec();
    change(&mut body);
    let sum = sha2::Sha256::digest(&body);
    body.extend_from_slice(&sum);
    body
}

type Change = Box<dyn Fn(&mut Vec<u8>)>;

/// Every field's own check, each behind a valid checksum.
pub fn field_changes() -> Vec<(&'static str, Change)> {
    vec![
        (
            "not a keyserver record",
            Box::new(|b: &mut Vec<u8>| b[0] = b'X'),
        ),
        (
            "unsupported record version",
            Box::new(|b: &mut Vec<u8>| b[4] = 3),
        ),
        (
            // Version 2 is a sealed record, which names its seal.
            "unknown seal algorithm",
            Box::new(|b: &mut Vec<u8>| b[4] = 2),
        ),
        (
            // A sealed record is 36 bytes longer than the wrapped DEK.
            "inconsistent KEK size",
            Box::new(|b: &mut Vec<u8>| {
                b[4] = 2;
                b[7] = 1;
            }),
        ),
        (
            "unknown wrap algorithm",
            Box::new(|b: &mut Vec<u8>| b[5] = 9),
        ),
        (
            // An RSA record claiming HPKE on P-256 (wrap id 2).
            "KEK size does not match the wrap algorithm",
            Box::new(|b: &mut Vec<u8>| b[5] = 2),
        ),
        (
            "unknown DEK algorithm",
            Box::new(|b: &mut Vec<u8>| b[6] = 9),
        ),
        (
            "reserved byte is not zero",
            Box::new(|b: &mut Vec<u8>| b[7] = 1),
        ),
        (
            "record belongs to another key id",
            Box::new(|b: &mut Vec<u8>| b[16] ^= 1),
        ),
        (
            "inconsistent KEK size",
            Box::new(|b: &mut Vec<u8>| b[48..50].copy_from_slice(&1024u16.to_be_bytes())),
        ),
        (
            "inconsistent KEK size",
            Box::new(|b: &mut Vec<u8>| b[48..50].copy_from_slice(&4096u16.to_be_bytes())),
        ),
        (
            "length mismatch",
            Box::new(|b: &mut Vec<u8>| {
                let n = u16::from_be_bytes([b[50], b[51]]) - 1;
                b[50..52].copy_from_slice(&n.to_be_bytes());
            }),
        ),
        ("length mismatch", Box::new(|b: &mut Vec<u8>| b.push(0))),
    ]
}

/// The vector record and its key id.
pub fn vector_record() -> (KeyId, Vec<u8>) {
    let case = &vectors("record_v1.json")[0];
    let key_id = KeyId::from_bytes(hex_field(case, "key_id").try_into().unwrap());
    (key_id, hex_field(case, "record"))
}

#[test]
fn each_field_is_checked_behind_a_valid_checksum() {
    let (key_id, good) = vector_record();
    assert_eq!(resealed(&good, |_| {}), good, "resealing is faithful");
    for (reason, change) in field_changes() {
        let bad = resealed(&good, change);
        let err = WrappedDek::decode(&bad, &key_id).unwrap_err();
        assert!(
            matches!(&err, Error::CorruptRecord { key_id: k, reason: r } if *k == key_id && r == reason),
            "{reason}: {err:?}"
        );
    }
}

/// A fake JSON-RPC server on loopback answering every call with `result`.
#[cfg(feature = "transport-jsonrpc-client")]
async fn fake_jsonrpc_server(result: serde_json::Value) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let result = result.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut chunk = [0u8; 4096];
                let body_at = loop {
                    let n = socket.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&chunk[..n]);
                    let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if request.len() >= end + 4 + len {
                        break end + 4;
                    }
                };
                let call: serde_json::Value = serde_json::from_slice(&request[body_at..]).unwrap();
                let body =
                    serde_json::json!({"jsonrpc": "2.0", "id": call["id"], "result": result})
                        .to_string();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    url
}

/// The same records from a (fake) server: `get_wrapped` and a client doing
/// client-side unwrap both refuse them, naming the field.
#[cfg(all(feature = "transport-jsonrpc-client", feature = "cipher-rustcrypto"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_handing_out_a_tampered_record_is_refused_field_by_field() {
    use base64::Engine;
    use keyserver::{KeyClient, KeyService, UnwrapMode};
    let (key_id, good) = vector_record();
    let kek = crate::common::fixture_kek(3072);
    for (reason, change) in field_changes() {
        let bad = resealed(&good, change);
        let record = base64::engine::general_purpose::STANDARD.encode(&bad);
        let url = fake_jsonrpc_server(serde_json::json!({
            "key_id": key_id.to_string(),
            "record": record,
        }))
        .await;
        let transport = keyserver::transports::JsonRpc::new(&url).unwrap();
        let err = transport.get_wrapped(&key_id).await.unwrap_err();
        assert!(
            matches!(&err, Error::CorruptRecord { reason: r, .. } if r == reason),
            "{reason}: {err:?}"
        );
        // A client doing client-side unwrap of its own KEK (whose id the
        // fake server answers under) refuses the record just the same.
        let own = fake_jsonrpc_server(serde_json::json!({
            "key_id": kek.id().to_string(),
            "record": base64::engine::general_purpose::STANDARD.encode(resealed(&good, |b| {
                b[16..48].copy_from_slice(kek.id().as_bytes());
                (fields_change(reason))(b);
            })),
        }))
        .await;
        let client = KeyClient::new(
            keyserver::transports::JsonRpc::new(&own).unwrap(),
            keyserver::backends::RustCrypto::new(),
        )
        .with_unwrap_mode(UnwrapMode::Client);
        let err = client.get(&kek).await.unwrap_err();
        assert!(
            matches!(&err, Error::CorruptRecord { .. }),
            "{reason}: {err:?}"
        );
    }
}

/// The change of `field_changes` named `reason` (the first of that name).
#[cfg(all(feature = "transport-jsonrpc-client", feature = "cipher-rustcrypto"))]
fn fields_change(reason: &str) -> Change {
    field_changes()
        .into_iter()
        .find(|(r, _)| *r == reason)
        .map(|(_, c)| c)
        .unwrap()
}
