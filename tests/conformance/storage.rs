//! Storage conformance: this crate's backends through the public kit
//! (`keyserver::testing::storage`), one line each.

#[cfg(feature = "storage-memory")]
keyserver::storage_conformance!(memory, (keyserver::backends::MemoryStorage::new(), ()));

#[cfg(feature = "storage-file")]
keyserver::storage_conformance!(file, {
    let dir = tempfile::tempdir().unwrap();
    let store = keyserver::backends::FileStorage::open(dir.path().join("store"))
        .await
        .unwrap();
    (store, dir)
});

// PostgreSQL: a new database for each check, on the cluster
// KEYSERVER_TEST_POSTGRES names (`.ci/run` starts one).
#[cfg(feature = "storage-postgres")]
keyserver::storage_conformance!(postgres, {
    let Some(url) = crate::common::postgres_db("postgres storage conformance").await else {
        return;
    };
    let store = keyserver::backends::PostgresStorage::connect(&url)
        .await
        .unwrap();
    (store, ())
});

#[cfg(feature = "storage-postgres")]
keyserver::storage_conformance!(cached_postgres, {
    let Some(url) = crate::common::postgres_db("postgres storage conformance").await else {
        return;
    };
    let store = keyserver::backends::PostgresStorage::connect(&url)
        .await
        .unwrap();
    let cache = std::sync::Arc::new(keyserver::backends::RecordCache::new(store, 4));
    let follower = std::sync::Arc::clone(&cache);
    let watch = cache.inner().watch(move |feed| follower.follow(feed));
    (cache, AbortOnDrop(watch))
});

/// Stops a background task when the check ends.
#[cfg(feature = "storage-postgres")]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

#[cfg(feature = "storage-postgres")]
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// The record cache is a storage too: in front of each backend, small enough
// that the checks evict.
#[cfg(feature = "storage-memory")]
keyserver::storage_conformance!(
    cached_memory,
    (
        keyserver::backends::RecordCache::new(keyserver::backends::MemoryStorage::new(), 4),
        ()
    )
);

#[cfg(feature = "storage-file")]
keyserver::storage_conformance!(cached_file, {
    let dir = tempfile::tempdir().unwrap();
    let store = keyserver::backends::FileStorage::open(dir.path().join("store"))
        .await
        .unwrap();
    (keyserver::backends::RecordCache::new(store, 4), dir)
});
