//! The public conformance kit on this storage, from its own crate, on a new
//! database for each check; and the record cache in front of it, following
//! the storage's change feed.
//!
//! They need a PostgreSQL cluster, so they are ignored unless asked for:
//! `export KEYSERVER_TEST_POSTGRES=$(scripts/pg-cluster start /tmp/ks-pg)`,
//! then `cargo test -p keyserver-postgres -- --ignored` (what `.ci/run` does).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use keyserver_core::plugin::RecordCache;
use keyserver_postgres::PostgresStorage;

/// A new, empty database on the cluster `KEYSERVER_TEST_POSTGRES` names
/// (a URL whose role may create databases).
async fn fresh_database() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let admin = std::env::var("KEYSERVER_TEST_POSTGRES").expect(
        "KEYSERVER_TEST_POSTGRES names a PostgreSQL cluster (scripts/pg-cluster start DIR prints one)",
    );
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("KEYSERVER_TEST_POSTGRES={admin}: {e}"));
    let task = tokio::spawn(connection);
    let name = format!(
        "ks_pgcrate_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    drop(client);
    let _ = task.await;
    let (base, _) = admin
        .rsplit_once('/')
        .expect("KEYSERVER_TEST_POSTGRES is a URL with a database");
    format!("{base}/{name}")
}

keyserver_testing::storage_conformance!(
    #[ignore = "needs PostgreSQL: KEYSERVER_TEST_POSTGRES, then cargo test -- --ignored"]
    postgres,
    {
        let store = PostgresStorage::connect(&fresh_database().await)
            .await
            .unwrap();
        (store, ())
    }
);

keyserver_testing::storage_conformance!(
    #[ignore = "needs PostgreSQL: KEYSERVER_TEST_POSTGRES, then cargo test -- --ignored"]
    cached_postgres,
    {
        let store = PostgresStorage::connect(&fresh_database().await)
            .await
            .unwrap();
        let cache = Arc::new(RecordCache::new(store, 4));
        let follower = Arc::clone(&cache);
        let watch = cache.inner().watch(move |feed| feed.apply_to(&follower));
        (cache, AbortOnDrop(watch))
    }
);

/// Stops a background task when the check ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
