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
