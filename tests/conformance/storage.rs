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
