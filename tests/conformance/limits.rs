//! The client's per-DEK limits (`KeyClient::with_max_messages`,
//! `with_max_bytes`): never exceeded, even by concurrent callers, and a
//! refetched DEK starts a new envelope v2 session.

use std::collections::HashMap;
use std::sync::Arc;

use keyserver::backends::{MemoryStorage, RustCrypto};
use keyserver::transports::InProcess;
use keyserver::{Encryption, KeyServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_never_seal_past_the_message_limit() {
    let server = Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()));
    let client = Arc::new(InProcess::client(Arc::clone(&server)).with_max_messages(3));
    let kek = Arc::new(client.generate().await.unwrap());
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let (client, kek) = (Arc::clone(&client), Arc::clone(&kek));
            tokio::spawn(async move { client.encrypt(&kek, format!("m{i}").as_bytes()).await })
        })
        .collect();
    let mut per_session: HashMap<Vec<u8>, usize> = HashMap::new();
    for task in tasks {
        let sealed = task.await.unwrap().unwrap();
        assert_eq!(sealed[3], keyserver::envelope::VERSION_2);
        // The session salt: one per fetched DEK.
        *per_session.entry(sealed[37..69].to_vec()).or_default() += 1;
        assert!(server.decrypt(&kek, &sealed).await.is_ok());
    }
    assert!(per_session.values().all(|&n| n <= 3), "{per_session:?}");
    assert!(per_session.len() >= 40 / 3, "{}", per_session.len());
}

#[tokio::test]
async fn a_message_above_the_byte_limit_still_seals_on_a_fresh_dek() {
    let server = Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()));
    let client = InProcess::client(server).with_max_bytes(10);
    let kek = client.generate().await.unwrap();
    client.get(&kek).await.unwrap();
    let fetched = client.fetched_at(&kek.id());
    client.encrypt(&kek, &[0; 100]).await.unwrap(); // first on this DEK: no refetch
    assert_eq!(client.fetched_at(&kek.id()), fetched);
    client.encrypt(&kek, &[0; 5]).await.unwrap(); // 105 > 10: fetched again
    assert!(client.fetched_at(&kek.id()) > fetched);
}
