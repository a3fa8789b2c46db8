//! The public conformance kit on this storage, from its own crate: what any
//! third-party storage runs; and the record cache in front of it, small
//! enough that the checks evict.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyserver_core::plugin::RecordCache;
use keyserver_file::FileStorage;

keyserver_testing::storage_conformance!(file, {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStorage::open(dir.path().join("store")).await.unwrap();
    (store, dir)
});

keyserver_testing::storage_conformance!(cached_file, {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStorage::open(dir.path().join("store")).await.unwrap();
    (RecordCache::new(store, 4), dir)
});
