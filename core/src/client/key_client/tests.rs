//! The DEK cache against a mocked transport: no sockets, no sleeps (the
//! cache's clock is Tokio's, paused and advanced by hand).

use super::*;
use crate::api::{Call, Reply};
use crate::crypto::MockCipherSuite;
use crate::transport::MockTransport;
use crate::{Error, WrappedDek};

const KEK_3072: &str = include_str!("../../../../testing/fixtures/kek-rsa3072.pem");

fn kek() -> Kek {
    Kek::from_pem(KEK_3072).expect("fixture KEK parses") // ok: unit test fixture
}

fn dek(byte: u8) -> Dek {
    Dek::from_bytes(&[byte; 16]).expect("a 16-byte DEK") // ok: unit test fixture
}

/// A transport whose `get_key` answers `dek(n)` for the n-th call.
fn counting_transport(expected_calls: usize) -> MockTransport {
    let mut transport = MockTransport::new();
    let mut n = 0u8;
    transport
        .expect_send()
        .withf(|call| matches!(call, Call::GetKey(_)))
        .times(expected_calls)
        .returning(move |_| {
            n += 1;
            Ok(Reply::Dek(dek(n)))
        });
    transport
        .expect_endpoint()
        .return_const("mock://".to_string());
    transport
}

fn client(transport: MockTransport) -> KeyClient<MockTransport> {
    KeyClient::new(with_describe(transport), MockCipherSuite::new())
}

/// `describe` answered as an older server would: unknown method (the
/// client then knows no state and serves the DEK as before).
fn with_describe(mut transport: MockTransport) -> MockTransport {
    transport
        .expect_send()
        .withf(|call| matches!(call, Call::Describe(_)))
        .returning(|_| Err(crate::api::unknown_method()));
    transport
}

#[tokio::test(start_paused = true)]
async fn a_fresh_entry_is_served_from_the_cache_until_its_ttl_passes() {
    let kek = kek();
    let client = client(counting_transport(2)).with_cache_ttl(Duration::from_secs(60));
    assert_eq!(client.get(&kek).await.ok(), Some(dek(1)));
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(client.is_cached(&kek.id()));
    assert_eq!(client.get(&kek).await.ok(), Some(dek(1)), "cached");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(!client.is_cached(&kek.id()), "expired at the TTL");
    assert_eq!(client.get(&kek).await.ok(), Some(dek(2)), "refetched");
}

/// The salt and message number of a version 2 envelope.
fn session_of(sealed: &[u8]) -> ([u8; 32], u64) {
    assert_eq!(sealed[3], envelope::VERSION_2);
    let header = envelope::Header::parse(sealed).expect("a v2 header"); // ok: test
    let number = u64::from_be_bytes(header.nonce[4..].try_into().expect("8 bytes")); // ok: test
    (header.salt, number)
}
fn v2_client(transport: MockTransport, ttl: Duration) -> KeyClient<MockTransport> {
    KeyClient::new(
        with_describe(transport),
        crate::test_backends::RustCrypto::new(),
    )
    .with_cache_ttl(ttl)
    .with_envelope(envelope::Version::V2)
}
#[tokio::test(start_paused = true)]
async fn a_v2_session_lives_and_dies_with_its_cached_dek() {
    let (kek, suite) = (kek(), crate::test_backends::RustCrypto::new());
    let client = v2_client(counting_transport(2), Duration::from_secs(60));
    let mut sealed = Vec::new();
    client
        .encrypt_into(&kek, b"one", b"c", &mut sealed)
        .await
        .ok();
    let (salt, first) = session_of(&sealed);
    let second = client.encrypt(&kek, b"two").await.expect("sealed"); // ok: test
    assert_eq!(
        session_of(&second),
        (salt, first + 1),
        "one session, numbered"
    );
    assert_eq!(first, 0);
    let opened = envelope::open(&suite, &dek(1), b"c", &sealed).expect("opens"); // ok: test
    assert_eq!(&opened[..], b"one");
    let mut plain = Vec::new();
    client
        .decrypt_into(&kek, &second, b"", &mut plain)
        .await
        .ok();
    assert_eq!(plain, b"two");

    // The DEK expires; the refetched DEK gets a new session.
    tokio::time::advance(Duration::from_secs(60)).await;
    let third = client.encrypt(&kek, b"three").await.expect("sealed"); // ok: test
    let (new_salt, number) = session_of(&third);
    assert_ne!(new_salt, salt);
    assert_eq!(number, 0);
    let opened = envelope::open(&suite, &dek(2), b"", &third).expect("under DEK 2"); // ok: test
    assert_eq!(&opened[..], b"three");

    // Dropped with the cache.
    client.clear_cache();
    assert!(!client.is_cached(&kek.id()));
}
#[tokio::test(start_paused = true)]
async fn other_writers_v2_messages_open_and_tampering_is_refused() {
    let (kek, suite) = (kek(), crate::test_backends::RustCrypto::new());
    let client = v2_client(counting_transport(1), Duration::from_secs(60));
    let writers = [
        envelope::Session::new(&suite, &kek.id(), &dek(1)).expect("a session"), // ok: test
        envelope::Session::new(&suite, &kek.id(), &dek(1)).expect("a session"), // ok: test
    ];
    let mut sealed = Vec::new();
    let mut opened = Vec::new();
    // Alternating between two writers' sessions, each message twice
    // (the second time from the kept session key).
    for round in 0..3u8 {
        for writer in &writers {
            writer
                .seal_into(&suite, b"c", &[round], &mut sealed)
                .expect("sealed"); // ok: test
            for _ in 0..2 {
                client
                    .decrypt_into(&kek, &sealed, b"c", &mut opened)
                    .await
                    .expect("opens"); // ok: test
                assert_eq!(opened, [round]);
            }
            let refused = client.decrypt_into(&kek, &sealed, b"C", &mut opened).await;
            assert!(matches!(refused, Err(Error::DecryptionFailed)));
            assert!(opened.is_empty());
            for at in [
                envelope::HEADER_LEN,
                envelope::HEADER_LEN_V2 - 1,
                sealed.len() - 1,
            ] {
                let mut bad = sealed.clone();
                bad[at] ^= 1;
                let refused = client.decrypt_into(&kek, &bad, b"c", &mut opened).await;
                assert!(matches!(refused, Err(Error::DecryptionFailed)), "byte {at}");
            }
        }
    }
    // A session of another DEK under the same key id is refused at the
    // commitment.
    let stranger = envelope::Session::new(&suite, &kek.id(), &dek(9)).expect("a session"); // ok: test
    stranger
        .seal_into(&suite, b"c", b"x", &mut sealed)
        .expect("sealed"); // ok: test
    let refused = client.decrypt(&kek, &sealed).await;
    assert!(matches!(refused, Err(Error::DecryptionFailed)));
}
#[tokio::test(start_paused = true)]
async fn a_spent_session_is_replaced_by_a_new_one() {
    let kek = kek();
    let client = v2_client(counting_transport(1), Duration::from_secs(60));
    let first = client.encrypt(&kek, b"a").await.expect("sealed"); // ok: test
    let spent = client
        .with_cache(|c| c.peek(&kek.id()).and_then(|e| e.session.clone()))
        .expect("a session is kept"); // ok: test
    spent.exhaust();
    let second = client.encrypt(&kek, b"b").await.expect("sealed"); // ok: test
    assert_ne!(session_of(&first).0, session_of(&second).0, "a new salt");
    assert_eq!(session_of(&second).1, 0);
    let kept = client
        .with_cache(|c| c.peek(&kek.id()).and_then(|e| e.session.clone()))
        .expect("a session is kept"); // ok: test
    assert!(!Arc::ptr_eq(&spent, &kept) && !kept.is_spent());
    // Both still open: the DEK is the same.
    for sealed in [&first, &second] {
        client.decrypt(&kek, sealed).await.expect("opens"); // ok: test
    }
}

/// A reader derives a session's keys once (two HKDF calls: the key and
/// the commitment), then opens its further messages without.
#[tokio::test(start_paused = true)]
async fn a_v2_readers_session_key_is_derived_once_per_session() {
    let kek = kek();
    let mut suite = MockCipherSuite::new();
    suite
        .expect_hkdf_sha256()
        .times(4)
        .returning(|_, _, _, okm| {
            okm.fill(0x11);
            Ok(())
        });
    suite
        .expect_aes_gcm_prepare()
        .times(2)
        .returning(|_| Ok(None));
    suite
        .expect_aes_gcm_open_append()
        .times(4)
        .returning(|_, _, _, ciphertext, _, out| {
            out.extend_from_slice(ciphertext);
            Ok(())
        });
    let client = KeyClient::new(with_describe(counting_transport(1)), suite);
    let message = |salt: u8, number: u8| {
        let mut m = b"KSE\x02\x01".to_vec();
        m.extend_from_slice(kek.id().as_bytes());
        m.extend_from_slice(&[salt; 32]);
        m.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, number]);
        m.extend_from_slice(&[0x11; 32]); // the commitment the mock derives
        m.extend_from_slice(b"body");
        m.extend_from_slice(&[0; 16]);
        m
    };
    let mut out = Vec::new();
    for (salt, number) in [(1, 0), (1, 1), (1, 2), (2, 0)] {
        client
            .decrypt_into(&kek, &message(salt, number), b"", &mut out)
            .await
            .expect("opens"); // ok: test
        assert_eq!(out, b"body");
    }
}
#[tokio::test(start_paused = true)]
async fn ttl_zero_starts_a_v2_session_per_message() {
    let kek = kek();
    let client = v2_client(counting_transport(2), Duration::ZERO);
    let a = client.encrypt(&kek, b"a").await.expect("sealed"); // ok: test
    let b = client.encrypt(&kek, b"b").await.expect("sealed"); // ok: test
    assert_ne!(session_of(&a).0, session_of(&b).0);
    assert_eq!((session_of(&a).1, session_of(&b).1), (0, 0));
}
#[tokio::test(start_paused = true)]
async fn a_key_not_active_gets_no_v2_message() {
    let kek = kek();
    let mut transport = counting_transport(1);
    transport
        .expect_send()
        .withf(|call| matches!(call, Call::Describe(_)))
        .returning(|_| {
            Ok(Reply::Info(crate::KeyInfo {
                key_id: KeyId::from_bytes([0; 32]),
                state: crate::KeyState::Suspended,
                strength: Strength::S128,
                created: 0,
                owner: None,
                deactivate_at: None,
                destroy_at: None,
                rotated_to: None,
                rotated_from: None,
                kek_alg: None,
            }))
        });
    let client = KeyClient::new(transport, crate::test_backends::RustCrypto::new())
        .with_envelope(envelope::Version::V2);
    for _ in 0..2 {
        let mut out = b"old".to_vec();
        let refused = client.encrypt_into(&kek, b"x", b"", &mut out).await;
        assert!(
            matches!(refused, Err(Error::KeyState { .. })),
            "{refused:?}"
        );
        assert!(out.is_empty());
    }
    // Its DEK still decrypts (what was sealed before the suspension).
    assert_eq!(client.get(&kek).await.ok(), Some(dek(1)));
}

#[tokio::test(start_paused = true)]
async fn ttl_zero_fetches_on_every_use() {
    let kek = kek();
    let client = client(counting_transport(3)).with_cache_ttl(Duration::ZERO);
    for n in 1..=3 {
        assert_eq!(client.get(&kek).await.ok(), Some(dek(n)));
        assert!(!client.is_cached(&kek.id()));
    }
}

#[tokio::test(start_paused = true)]
async fn the_cache_is_bounded_and_evicts_the_least_recently_used() {
    // Three keys: fixture KEK and two derived key ids via client-side
    // records would need real RSA; the bound is per key id, so use three
    // generated-looking KEKs from the fixtures of other sizes.
    let keks = [
        kek(),
        Kek::from_pem(include_str!("../../../../testing/fixtures/kek-rsa7680.pem"))
            .expect("fixture"), // ok: fixture
        Kek::from_pem(include_str!(
            "../../../../testing/fixtures/kek-rsa15360.pem"
        ))
        .expect("fixture"), // ok: fixture
    ];
    let mut transport = MockTransport::new();
    let fetched = std::sync::Arc::new(Mutex::new(Vec::new()));
    let log = std::sync::Arc::clone(&fetched);
    transport
        .expect_send()
        .withf(|call| !matches!(call, Call::Describe(_)))
        .returning(move |call| {
            let id = call.key_id().expect("get_key names its key"); // ok: test
            log.lock().expect("log").push(id); // ok: test
            Ok(Reply::Dek(dek(1)))
        });
    let client = client(transport).with_capacity(2);
    client.get(&keks[0]).await.ok();
    client.get(&keks[1]).await.ok();
    client.get(&keks[0]).await.ok(); // 0 is now more recent than 1
    client.get(&keks[2]).await.ok(); // evicts 1
    assert_eq!(client.cached_len(), 2);
    assert!(client.is_cached(&keks[0].id()));
    assert!(!client.is_cached(&keks[1].id()));
    client.get(&keks[1]).await.ok();
    let ids: Vec<KeyId> = keks.iter().map(Kek::id).collect();
    assert_eq!(
        *fetched.lock().expect("log"), // ok: test
        vec![ids[0], ids[1], ids[2], ids[1]]
    );
}

#[tokio::test(start_paused = true)]
async fn errors_are_not_cached() {
    let kek = kek();
    let id = kek.id();
    let mut transport = MockTransport::new();
    let mut seq = mockall::Sequence::new();
    transport
        .expect_send()
        .withf(|call| !matches!(call, Call::Describe(_)))
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_| Err(Error::NotFound { key_id: id }));
    transport
        .expect_send()
        .withf(|call| !matches!(call, Call::Describe(_)))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(Reply::Dek(dek(5))));
    let client = client(transport);
    assert!(matches!(
        client.get(&kek).await,
        Err(Error::NotFound { key_id }) if key_id == id
    ));
    assert!(!client.is_cached(&id));
    assert_eq!(client.get(&kek).await.ok(), Some(dek(5)));
    assert!(client.is_cached(&id));
}

/// Callers that miss the same key together make one request: the
/// transport is held at a gate until every caller is waiting.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn concurrent_misses_make_one_request() {
    struct Gated {
        inner: MockTransport,
        gate: std::sync::Arc<tokio::sync::Semaphore>,
    }
    #[async_trait]
    impl Transport for Gated {
        fn endpoint(&self) -> String {
            self.inner.endpoint()
        }
        async fn send(&self, call: Call) -> Result<Reply> {
            let _permit = self.gate.acquire().await;
            self.inner.send(call).await
        }
    }
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let transport = Gated {
        inner: with_describe(counting_transport(1)),
        gate: std::sync::Arc::clone(&gate),
    };
    let client = Arc::new(KeyClient::new(transport, MockCipherSuite::new()));
    let kek = kek();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let client = Arc::clone(&client);
            let kek = kek.clone();
            tokio::spawn(async move { client.get(&kek).await })
        })
        .collect();
    // Let every task run until it waits (at the gate or for the fetch).
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
    gate.add_permits(1);
    for task in tasks {
        let dek_got = task.await.expect("task").expect("DEK"); // ok: test
        assert_eq!(dek_got, dek(1));
    }
}

#[tokio::test(start_paused = true)]
async fn client_side_unwrap_fetches_the_record_and_never_sends_the_kek() {
    let kek = kek();
    let record =
        WrappedDek::new(kek.id(), kek.bits(), Strength::S128, 0, vec![1; 384]).expect("record"); // ok: test fixture
    let mut transport = MockTransport::new();
    transport
        .expect_send()
        .withf(|call| matches!(call, Call::GetWrapped(_)))
        .times(1)
        .returning(move |_| Ok(Reply::Wrapped(record.clone())));
    let mut suite = MockCipherSuite::new();
    suite.expect_rsa_check_key_pair().returning(|_| Ok(()));
    suite
        .expect_rsa_oaep_unwrap()
        .times(1)
        .returning(|_, _| Ok(zeroize::Zeroizing::new(vec![9; 16])));
    let client =
        KeyClient::new(with_describe(transport), suite).with_unwrap_mode(UnwrapMode::Client);
    assert_eq!(client.get(&kek).await.ok(), Some(dek(9)));
    assert_eq!(client.get(&kek).await.ok(), Some(dek(9)), "cached");
}
