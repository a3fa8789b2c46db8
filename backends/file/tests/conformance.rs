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

/// A read-only view beside the process holding the store: it reads every
/// record, writes nothing, and leaves the holder's temporary files alone.
#[test]
fn a_read_only_view_reads_beside_the_holder_and_writes_nothing() {
    use keyserver_core::KeyStorage;
    keyserver_testing::run(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let holder = FileStorage::open(&path).await.unwrap();
        for n in 0..5 {
            holder
                .put(&keyserver_testing::storage::record(n))
                .await
                .unwrap();
        }
        // A write in progress by the holder.
        let shard = std::fs::read_dir(&path)
            .unwrap()
            .flatten()
            .find(|e| e.path().is_dir())
            .unwrap()
            .path();
        let in_flight = shard.join(".tmp-in-flight");
        std::fs::write(&in_flight, b"half").unwrap();
        assert!(FileStorage::open(&path).await.is_err(), "the lock holds");
        let view = FileStorage::open_read_only(&path).await.unwrap();
        assert_eq!(view.count(), 5);
        assert_eq!(view.list().await.unwrap().len(), 5);
        let one = keyserver_testing::storage::record(3);
        assert_eq!(view.get(one.key_id()).await.unwrap(), one);
        assert!(view
            .put(&keyserver_testing::storage::record(9))
            .await
            .is_err());
        assert!(view.delete(one.key_id()).await.is_err());
        assert!(view.replace(&one).await.is_err());
        assert!(
            in_flight.exists(),
            "the holder's temporary file is left alone"
        );
        assert!(holder.contains(one.key_id()).await.unwrap());
        assert!(
            FileStorage::open_read_only(dir.path()).await.is_err(),
            "not a store"
        );
    });
}
