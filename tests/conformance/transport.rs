//! Transport conformance: the seed's client narrative and the cache rules over
//! every transport (in-process, and XML-RPC and JSON-RPC on real loopback
//! sockets). Add a transport with one `transport_conformance!` line.

#![allow(dead_code, unused_imports, unused_macros)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use keyserver::api::{Call, Reply};
use keyserver::backends::{MemoryStorage, RustCrypto};
use keyserver::{
    Dek, Encryption, Error, Kek, KeyClient, KeyId, KeyServer, KeyService, Result, Status, Strength,
    Transport, UnwrapMode, WrappedDek,
};

pub type Server = KeyServer<RustCrypto, MemoryStorage>;

pub fn new_server() -> Arc<Server> {
    Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()))
}

/// The seed's client narrative.
pub async fn client_narrative<T: Transport>(server: Arc<Server>, transport: T) {
    let url = transport.endpoint();
    let client = KeyClient::new(transport, RustCrypto::new());
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
pub async fn timeout_zero_refetches<T: Transport>(server: Arc<Server>, transport: T) {
    let kek = server.generate().await.unwrap();
    let client = KeyClient::new(transport, RustCrypto::new()).with_cache_ttl(Duration::ZERO);
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
pub async fn client_side_unwrap<T: Transport>(server: Arc<Server>, transport: T) {
    let kek = server.generate().await.unwrap();
    let record = transport.get_wrapped(&kek.id()).await.unwrap();
    assert_eq!(*record.key_id(), kek.id());
    assert_eq!(record.strength(), Strength::S128);
    let client = KeyClient::new(transport, RustCrypto::new()).with_unwrap_mode(UnwrapMode::Client);
    assert_eq!(
        client.get(&kek).await.unwrap(),
        server.get(&kek).await.unwrap()
    );
    let sealed = client.encrypt(&kek, b"local").await.unwrap();
    assert_eq!(&server.decrypt(&kek, &sealed).await.unwrap()[..], b"local");
    // A KEK that is not the one: not found by id.
    let stranger = Kek::from_pkcs8_der(
        &keyserver::CipherSuite::generate_rsa(&RustCrypto::new(), 3072).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        client.get(&stranger).await,
        Err(e) if e.code() == 1
    ));
}

/// Status, contains, explicit strength and typed errors through the transport.
pub async fn calls_and_errors<T: Transport>(server: Arc<Server>, transport: T) {
    let kek = transport.generate(Some(Strength::S128)).await.unwrap();
    assert_eq!(kek.bits(), 3072);
    assert!(transport.contains(&kek.id()).await.unwrap());
    let missing = KeyId::from_bytes([0xab; 32]);
    assert!(!transport.contains(&missing).await.unwrap());
    let status = transport.status().await.unwrap();
    assert_eq!(status, server.status());
    assert_eq!(status.keys, 1);
    assert_eq!(status.suite, "rustcrypto");
    assert_eq!(status.storage, "memory");
    assert_eq!(status.strength, 128);

    let err = transport.get_wrapped(&missing).await.unwrap_err();
    assert_eq!(err.code(), 1, "{err:?}");
    assert!(matches!(err, Error::NotFound { key_id } if key_id == missing));
    let stranger = crate::common::fixture_kek(3072);
    let err = transport.get_key(&stranger).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");

    // An RSA-2048 KEK is below the policy floor: refused with code 4 (its
    // record is planted directly in the server's storage).
    let weak = crate::common::fixture_kek(2048);
    let wrapped =
        keyserver::CipherSuite::rsa_oaep_wrap(&RustCrypto::new(), weak.public_key_der(), &[1; 16])
            .unwrap();
    let record = WrappedDek::new(weak.id(), 2048, Strength::S128, 0, wrapped).unwrap();
    keyserver::KeyStorage::put(server.storage(), &record)
        .await
        .unwrap();
    let err = transport.get_key(&weak).await.unwrap_err();
    assert_eq!(err.code(), 4, "{err:?}");

    // A record the KEK does not open: code 3 (a record under the fixture's
    // id, wrapped under another key).
    let other = crate::common::fixture_kek(3072);
    let wrong =
        keyserver::CipherSuite::rsa_oaep_wrap(&RustCrypto::new(), kek.public_key_der(), &[2; 16])
            .unwrap();
    let record = WrappedDek::new(other.id(), 3072, Strength::S128, 0, wrong).unwrap();
    keyserver::KeyStorage::put(server.storage(), &record)
        .await
        .unwrap();
    let err = transport.get_key(&other).await.unwrap_err();
    assert_eq!(err.code(), 3, "{err:?}");
}

/// Counts `get_key` calls that reach the inner transport.
pub struct Counting<T> {
    pub inner: T,
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
pub async fn concurrency<T: Transport + 'static>(server: Arc<Server>, transport: T) {
    let kek = server.generate().await.unwrap();
    let client = Arc::new(KeyClient::new(
        Counting {
            inner: transport,
            get_keys: AtomicUsize::new(0),
        },
        RustCrypto::new(),
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
pub async fn cache_is_bounded_lru<T: Transport>(server: Arc<Server>, transport: T) {
    let client = KeyClient::new(transport, RustCrypto::new()).with_capacity(2);
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

macro_rules! transport_conformance {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn make(
                server: std::sync::Arc<super::Server>,
            ) -> (
                impl keyserver::Transport + 'static,
                Box<dyn std::any::Any + Send>,
            ) {
                let f = $make;
                f(server).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn client_narrative() {
                let server = super::new_server();
                let (t, guard) = make(std::sync::Arc::clone(&server)).await;
                super::client_narrative(server, t).await;
                drop(guard);
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn timeout_zero_refetches() {
                let server = super::new_server();
                let (t, guard) = make(std::sync::Arc::clone(&server)).await;
                super::timeout_zero_refetches(server, t).await;
                drop(guard);
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn client_side_unwrap() {
                let server = super::new_server();
                let (t, guard) = make(std::sync::Arc::clone(&server)).await;
                super::client_side_unwrap(server, t).await;
                drop(guard);
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn calls_and_errors() {
                let server = super::new_server();
                let (t, guard) = make(std::sync::Arc::clone(&server)).await;
                super::calls_and_errors(server, t).await;
                drop(guard);
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrency() {
                let server = super::new_server();
                let (t, guard) = make(std::sync::Arc::clone(&server)).await;
                super::concurrency(server, t).await;
                drop(guard);
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cache_is_bounded_lru() {
                let server = super::new_server();
                let (t, guard) = make(std::sync::Arc::clone(&server)).await;
                super::cache_is_bounded_lru(server, t).await;
                drop(guard);
            }
        }
    };
}

transport_conformance!(in_process, |s| async move {
    (
        keyserver::transports::InProcess::new(s),
        Box::new(()) as Box<dyn std::any::Any + Send>,
    )
});

/// A server on an ephemeral loopback port, plain HTTP.
#[cfg(any(feature = "transport-xmlrpc", feature = "transport-jsonrpc"))]
pub async fn loopback(server: Arc<Server>) -> keyserver::transports::HttpServer {
    let config = keyserver::transports::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    keyserver::transports::HttpServer::start(server, config)
        .await
        .unwrap()
}

#[cfg(feature = "transport-xmlrpc")]
transport_conformance!(xmlrpc, |s| async move {
    let http = super::loopback(s).await;
    let t = keyserver::transports::XmlRpc::new(&http.url()).unwrap();
    (t, Box::new(http) as Box<dyn std::any::Any + Send>)
});

#[cfg(feature = "transport-jsonrpc")]
transport_conformance!(jsonrpc, |s| async move {
    let http = super::loopback(s).await;
    let t = keyserver::transports::JsonRpc::new(&http.url()).unwrap();
    (t, Box::new(http) as Box<dyn std::any::Any + Send>)
});
