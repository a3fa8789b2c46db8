//! Two key servers on one PostgreSQL database, and a client that knows both:
//! a key made through one is read through the other, a suspension made
//! through one is refused by the other, and the client rides out the loss
//! of a server.
//!
//! ```sh
//! export KEYSERVER_POSTGRES=$(scripts/pg-cluster start /tmp/ks-pg)   # any database will do
//! cargo run --example postgres_failover --features cipher-rustcrypto,storage-postgres,transport-jsonrpc
//! ```

use std::sync::Arc;
use std::time::Duration;

use keyserver::backends::{PostgresStorage, RecordCache, RustCrypto};
use keyserver::transports::{Failover, HttpServer, JsonRpc, ServerConfig};
use keyserver::{Change, Encryption, Error, KeyClient, KeyServer, KeyService, Target};

/// One key server on the database at `url`: its record cache forgets what
/// the other servers change (LISTEN/NOTIFY), as `keyserver serve` does.
async fn start(url: &str) -> keyserver::Result<HttpServer> {
    let store = PostgresStorage::connect(url).await?;
    let cache = Arc::new(RecordCache::new(store, 1024).with_ttl(Duration::from_secs(15)));
    let follower = Arc::clone(&cache);
    drop(cache.inner().watch(move |feed| feed.apply_to(&follower)));
    let keys = Arc::new(KeyServer::new(RustCrypto::new(), cache));
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        ..ServerConfig::default()
    };
    HttpServer::start(keys, config).await
}

fn main() -> keyserver::Result<()> {
    let Ok(url) = std::env::var("KEYSERVER_POSTGRES") else {
        eprintln!(
            "set KEYSERVER_POSTGRES to a PostgreSQL URL (scripts/pg-cluster start DIR prints one)"
        );
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let (a, b) = (start(&url).await?, start(&url).await?);
        println!("servers at {} and {}", a.url(), b.url());
        let both = Failover::new(vec![JsonRpc::new(&a.url())?, JsonRpc::new(&b.url())?])?;
        let client = KeyClient::new(both, RustCrypto::new()).with_cache_ttl(Duration::ZERO);

        let kek = client.generate().await?;
        let sealed = client.encrypt(&kek, b"Stephan Richter").await?;
        let through_b = JsonRpc::new(&b.url())?;
        assert_eq!(
            through_b.get_key(&kek).await?.as_bytes(),
            client.get(&kek).await?.as_bytes()
        );
        println!(
            "key {} made through one server, read through the other",
            kek.id()
        );

        JsonRpc::new(&a.url())?
            .change(Change::Suspend, &Target::Kek(kek.clone()))
            .await?;
        // The other server hears of it within milliseconds (15 s at worst).
        let mut refused = false;
        for _ in 0..300 {
            if matches!(through_b.get_key(&kek).await, Err(Error::KeyState { .. })) {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(refused, "the suspension reached the other server");
        println!("suspended through one server, refused by the other");
        through_b
            .change(Change::Resume, &Target::Kek(kek.clone()))
            .await?;

        a.shutdown().await;
        let opened = client.decrypt(&kek, &sealed).await?;
        assert_eq!(&opened[..], b"Stephan Richter");
        println!("one server stopped: the client decrypted through the other");
        b.shutdown().await;
        Ok(())
    })
}
