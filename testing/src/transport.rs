//! Transport conformance: the original key server's client narrative and the cache rules
//! through a transport to a live server (in-process, or over the transport's
//! own network protocol), and typed errors across it. Run them all with one
//! [`transport_conformance!`](crate::transport_conformance) line.
//!
//! Each check takes the server (a [`KeyServer`] on [`MemoryStorage`] with the
//! suite under test) and a transport connected to it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keyserver_core::api::{Call, Reply};
use keyserver_core::crypto::RsaKek;
use keyserver_core::{
    async_trait, CipherSuite, Encryption, Error, Kek, KeyClient, KeyId, KeyServer, KeyService,
    KeyStorage, Result, Strength, Transport, UnwrapMode, WrappedDek,
};
use keyserver_memory::MemoryStorage;

use super::fixtures::fixture_kek;

/// The seed's client narrative.
pub async fn client_narrative<C: CipherSuite + Clone, T: Transport>(
    server: Arc<KeyServer<C, MemoryStorage>>,
    transport: T,
) {
    let url = transport.endpoint();
    let client = KeyClient::new(transport, server.suite().clone());
    assert_eq!(client.to_string(), format!("<KeyClient '{url}'>"));
    assert_eq!(client.cache_ttl(), Duration::from_secs(3600));

    // The client asks the server to generate: the key is there at once.
    let kek = client.generate().await.unwrap();
    assert!(server.contains(&kek.id()).await.unwrap());
    assert_eq!(server.to_string(), "<KeyServer (1)>");
    assert!(!client.is_cached(&kek.id()));

    // Encrypt and decrypt locally through the client; the DEK is now cached.
    let sealed = client.encrypt(&kek, b"Stephan Richter").await.unwrap();
    assert!(client.is_cached(&kek.id()), "key in cache");
    let first_fetch = client.fetched_at(&kek.id()).unwrap();
    assert_eq!(
        &client.decrypt(&kek, &sealed).await.unwrap()[..],
        b"Stephan Richter"
    );
    // Served from the cache: not fetched again.
    assert_eq!(client.fetched_at(&kek.id()), Some(first_fetch));

    // Data encrypted through the client decrypts on the server, and back.
    assert_eq!(
        &server.decrypt(&kek, &sealed).await.unwrap()[..],
        b"Stephan Richter"
    );
    let by_server = server.encrypt(&kek, b"from the server").await.unwrap();
    assert_eq!(
        &client.decrypt(&kek, &by_server).await.unwrap()[..],
        b"from the server"
    );
    assert_eq!(
        client.get(&kek).await.unwrap(),
        server.get(&kek).await.unwrap()
    );
}

/// timeout 0 refetches on every use, with a later fetch time each time.
pub async fn timeout_zero_refetches<C: CipherSuite + Clone, T: Transport>(
    server: Arc<KeyServer<C, MemoryStorage>>,
    transport: T,
) {
    let kek = server.generate().await.unwrap();
    let client = KeyClient::new(transport, server.suite().clone()).with_cache_ttl(Duration::ZERO);
    assert_eq!(client.cache_ttl(), Duration::ZERO);
    client.get(&kek).await.unwrap();
    let t1 = client.fetched_at(&kek.id()).unwrap();
    assert!(
        !client.is_cached(&kek.id()),
        "an entry with timeout 0 is never fresh"
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    let sealed = client.encrypt(&kek, b"again").await.unwrap();
    let t2 = client.fetched_at(&kek.id()).unwrap();
    assert!(t2 > t1, "refetched: {t1:?} then {t2:?}");
    tokio::time::sleep(Duration::from_millis(5)).await;
    client.decrypt(&kek, &sealed).await.unwrap();
    assert!(client.fetched_at(&kek.id()).unwrap() > t2);
}

/// Client-side unwrap: the KEK never leaves the client, same results.
pub async fn client_side_unwrap<C: CipherSuite + Clone, T: Transport>(
    server: Arc<KeyServer<C, MemoryStorage>>,
    transport: T,
) {
    let kek = server.generate().await.unwrap();
    let record = transport.get_wrapped(&kek.id()).await.unwrap();
    assert_eq!(*record.key_id(), kek.id());
    assert_eq!(record.strength(), Strength::S128);
    let client =
        KeyClient::new(transport, server.suite().clone()).with_unwrap_mode(UnwrapMode::Client);
    assert_eq!(
        client.get(&kek).await.unwrap(),
        server.get(&kek).await.unwrap()
    );
    let sealed = client.encrypt(&kek, b"local").await.unwrap();
    assert_eq!(&server.decrypt(&kek, &sealed).await.unwrap()[..], b"local");
    // A KEK that is not the one: not found by id.
    let stranger =
        Kek::from_pkcs8_der(&RsaKek::generate_rsa(&server.suite().clone(), 3072).unwrap()).unwrap();
    assert!(matches!(
        client.get(&stranger).await,
        Err(e) if e.code() == 1
    ));
}

/// Status, contains, explicit strength and typed errors through the transport.
pub async fn calls_and_errors<C: CipherSuite + Clone, T: Transport>(
    server: Arc<KeyServer<C, MemoryStorage>>,
    transport: T,
) {
    let kek = transport.generate(Some(Strength::S128)).await.unwrap();
    assert_eq!(kek.bits(), 3072);
    assert!(transport.contains(&kek.id()).await.unwrap());
    let missing = KeyId::from_bytes([0xab; 32]);
    assert!(!transport.contains(&missing).await.unwrap());
    let status = transport.status().await.unwrap();
    assert_eq!(status, server.status());
    assert_eq!(status.keys, 1);
    assert_eq!(status.suite, server.suite().name());
    assert_eq!(status.storage, "memory");
    assert_eq!(status.strength, 128);

    let err = transport.get_wrapped(&missing).await.unwrap_err();
    assert_eq!(err.code(), 1, "{err:?}");
    assert!(matches!(err, Error::NotFound { key_id } if key_id == missing));
    let stranger = fixture_kek(3072);
    let err = transport.get_key(&stranger).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");

    // An RSA-2048 KEK is below the policy floor: refused with code 4 (its
    // record is planted directly in the server's storage).
    let weak = fixture_kek(2048);
    let wrapped =
        RsaKek::rsa_oaep_wrap(&server.suite().clone(), weak.public_key_der(), &[1; 16]).unwrap();
    let record = WrappedDek::new(weak.id(), 2048, Strength::S128, 0, wrapped).unwrap();
    KeyStorage::put(server.storage(), &record).await.unwrap();
    let err = transport.get_key(&weak).await.unwrap_err();
    assert_eq!(err.code(), 4, "{err:?}");

    // A record the KEK does not open: code 3 (a record under the fixture's
    // id, wrapped under another key).
    let other = fixture_kek(3072);
    let wrong =
        RsaKek::rsa_oaep_wrap(&server.suite().clone(), kek.public_key_der(), &[2; 16]).unwrap();
    let record = WrappedDek::new(other.id(), 3072, Strength::S128, 0, wrong).unwrap();
    KeyStorage::put(server.storage(), &record).await.unwrap();
    let err = transport.get_key(&other).await.unwrap_err();
    assert_eq!(err.code(), 3, "{err:?}");
}

/// Counts `get_key` calls that reach the inner transport.
pub struct Counting<T> {
    /// The transport counted.
    pub inner: T,
    /// `get_key` calls so far.
    pub get_keys: AtomicUsize,
}

#[async_trait]
impl<T: Transport> Transport for Counting<T> {
    fn endpoint(&self) -> String {
        self.inner.endpoint()
    }
    async fn send(&self, call: Call) -> Result<Reply> {
        if matches!(call, Call::GetKey(_)) {
            self.get_keys.fetch_add(1, Ordering::SeqCst);
            // Widen the window in which concurrent callers miss together.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.inner.send(call).await
    }
}

/// 32 concurrent callers of a cold key make one request; 16 concurrent
/// clients each doing their own work all succeed.
pub async fn concurrency<C: CipherSuite + Clone, T: Transport + 'static>(
    server: Arc<KeyServer<C, MemoryStorage>>,
    transport: T,
) {
    let kek = server.generate().await.unwrap();
    let client = Arc::new(KeyClient::new(
        Counting {
            inner: transport,
            get_keys: AtomicUsize::new(0),
        },
        server.suite().clone(),
    ));
    let sealed = server.encrypt(&kek, b"cold").await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let client = Arc::clone(&client);
        let kek = kek.clone();
        let sealed = sealed.clone();
        tasks.push(tokio::spawn(async move {
            client.decrypt(&kek, &sealed).await.map(|p| p.to_vec())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), b"cold");
    }
    assert_eq!(
        client.transport().get_keys.load(Ordering::SeqCst),
        1,
        "single flight"
    );

    let mut tasks = Vec::new();
    for i in 0..16u32 {
        let client = Arc::clone(&client);
        tasks.push(tokio::spawn(async move {
            let kek = client.generate().await?;
            let msg = format!("client {i}");
            let sealed = client.encrypt(&kek, msg.as_bytes()).await?;
            let opened = client.decrypt(&kek, &sealed).await?;
            assert_eq!(&opened[..], msg.as_bytes());
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(server.len(), 17);
}

/// The cache holds at most `capacity` DEKs, evicting the least recently used.
pub async fn cache_is_bounded_lru<C: CipherSuite + Clone, T: Transport>(
    server: Arc<KeyServer<C, MemoryStorage>>,
    transport: T,
) {
    let client = KeyClient::new(transport, server.suite().clone()).with_capacity(2);
    let a = server.generate().await.unwrap();
    let b = server.generate().await.unwrap();
    let c = server.generate().await.unwrap();
    client.get(&a).await.unwrap();
    client.get(&b).await.unwrap();
    client.get(&a).await.unwrap(); // a is now the most recently used
    client.get(&c).await.unwrap(); // evicts b
    assert_eq!(client.cached_len(), 2);
    assert!(client.is_cached(&a.id()));
    assert!(!client.is_cached(&b.id()));
    assert!(client.is_cached(&c.id()));
    client.clear_cache();
    assert_eq!(client.cached_len(), 0);
}

/// Runs the whole transport conformance kit: one module named `$name`, one
/// `#[test]` per check. For each check a fresh server is made with the suite
/// `$suite` on memory storage, and `$connect` (a closure taking the server as
/// an `Arc<dyn KeyService>` and returning a future of `(transport, guard)`)
/// connects a transport to it; the guard keeps alive what the transport needs
/// (a listener), `()` if nothing.
///
/// ```
/// # #[cfg(feature = "cipher-rustcrypto")]
/// # mod demo {
/// keyserver::transport_conformance!(
///     in_process,
///     keyserver::backends::RustCrypto::new(),
///     |service| async move { (keyserver::transports::InProcess::new(service), ()) }
/// );
/// # }
/// ```
#[macro_export]
macro_rules! transport_conformance {
    ($name:ident, $suite:expr, $connect:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::transport_conformance!(@check client_narrative, $suite, $connect);
            $crate::transport_conformance!(@check timeout_zero_refetches, $suite, $connect);
            $crate::transport_conformance!(@check client_side_unwrap, $suite, $connect);
            $crate::transport_conformance!(@check calls_and_errors, $suite, $connect);
            $crate::transport_conformance!(@check concurrency, $suite, $connect);
            $crate::transport_conformance!(@check cache_is_bounded_lru, $suite, $connect);
        }
    };
    (@check $check:ident, $suite:expr, $connect:expr) => {
        #[test]
        fn $check() {
            $crate::run(async {
                let server = ::std::sync::Arc::new($crate::__core::KeyServer::new(
                    $suite,
                    $crate::MemoryStorage::new(),
                ));
                let connect = $connect;
                let (transport, guard) = connect(
                    ::std::sync::Arc::clone(&server) as ::std::sync::Arc<dyn $crate::__core::KeyService>,
                )
                .await;
                $crate::transport::$check(server, transport).await;
                drop(guard);
            });
        }
    };
}
