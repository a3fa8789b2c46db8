//! The public conformance kit on this storage, from its own crate: what any
//! third-party storage runs; and the record cache in front of it, small
//! enough that the checks evict.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyserver_core::plugin::RecordCache;
use keyserver_memory::MemoryStorage;

keyserver_testing::storage_conformance!(memory, (MemoryStorage::new(), ()));

keyserver_testing::storage_conformance!(
    cached_memory,
    (RecordCache::new(MemoryStorage::new(), 4), ())
);
