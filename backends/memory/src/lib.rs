//! `MemoryStorage`: records in a map in process memory.
//!
//! A crate of [keyserver](https://github.com/keyserver/keyserver), built only on
//! the public plugin API of `keyserver-core`, as a third party's backend would be.
//! Applications reach it as `keyserver::backends` with its Cargo feature.

#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use async_trait::async_trait;

use keyserver_core::plugin::KeyStorage;
use keyserver_core::{Error, KeyId, KeyMeta, Result, WrappedDek};

const NAME: &str = "memory";

/// Records kept in process memory: fast, and gone when the process ends.
///
/// For tests, embedding, and servers whose keys need not outlive them. A
/// record (and a key's lifecycle entry) is encoded and decoded again on the
/// way in, so what is kept went through the same checks as a record read
/// from disk; it is kept decoded, so reading it back costs a copy, not a
/// checksum.
///
/// Feature `storage-memory`.
///
/// # Example
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use keyserver_core::{KeyId, KeyStorage};
/// use keyserver_memory::MemoryStorage;
///
/// let store = MemoryStorage::new();
/// assert!(!store.contains(&KeyId::from_bytes([0; 32])).await?);
/// assert_eq!(store.count(), 0);
/// # Ok::<(), keyserver_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Default)]
pub struct MemoryStorage {
    records: RwLock<BTreeMap<KeyId, WrappedDek>>,
    metas: RwLock<BTreeMap<KeyId, KeyMeta>>,
    count: AtomicU64,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn poisoned() -> Error {
    Error::Storage {
        backend: NAME.into(),
        message: "a writer panicked while holding the lock".into(),
        source: None,
    }
}

#[async_trait]
impl KeyStorage for MemoryStorage {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn put(&self, record: &WrappedDek) -> Result<()> {
        let checked = WrappedDek::decode(&record.encode(), record.key_id())?;
        let mut map = self.records.write().map_err(|_| poisoned())?;
        match map.entry(*record.key_id()) {
            std::collections::btree_map::Entry::Occupied(_) => Err(Error::AlreadyExists {
                key_id: *record.key_id(),
            }),
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(checked);
                self.count.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    async fn replace(&self, record: &WrappedDek) -> Result<()> {
        let checked = WrappedDek::decode(&record.encode(), record.key_id())?;
        let mut map = self.records.write().map_err(|_| poisoned())?;
        match map.get_mut(record.key_id()) {
            Some(slot) => {
                *slot = checked;
                Ok(())
            }
            None => Err(Error::NotFound {
                key_id: *record.key_id(),
            }),
        }
    }

    async fn get(&self, key_id: &KeyId) -> Result<WrappedDek> {
        let map = self.records.read().map_err(|_| poisoned())?;
        match map.get(key_id) {
            Some(record) => Ok(record.clone()),
            None => Err(Error::NotFound { key_id: *key_id }),
        }
    }

    async fn contains(&self, key_id: &KeyId) -> Result<bool> {
        Ok(self
            .records
            .read()
            .map_err(|_| poisoned())?
            .contains_key(key_id))
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    async fn delete(&self, key_id: &KeyId) -> Result<bool> {
        let mut map = self.records.write().map_err(|_| poisoned())?;
        let removed = map.remove(key_id).is_some();
        if removed {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(removed)
    }

    async fn list(&self) -> Result<Vec<KeyId>> {
        Ok(self
            .records
            .read()
            .map_err(|_| poisoned())?
            .keys()
            .copied()
            .collect())
    }

    fn keeps_lifecycle(&self) -> bool {
        true
    }

    async fn get_meta(&self, key_id: &KeyId) -> Result<Option<KeyMeta>> {
        let map = self.metas.read().map_err(|_| poisoned())?;
        Ok(map.get(key_id).cloned())
    }

    async fn put_meta(&self, meta: &KeyMeta) -> Result<()> {
        let checked = KeyMeta::decode(&meta.encode(), &meta.key_id)?;
        self.metas
            .write()
            .map_err(|_| poisoned())?
            .insert(meta.key_id, checked);
        Ok(())
    }

    async fn list_all(&self) -> Result<Vec<KeyId>> {
        let mut ids: std::collections::BTreeSet<KeyId> = self
            .records
            .read()
            .map_err(|_| poisoned())?
            .keys()
            .copied()
            .collect();
        ids.extend(self.metas.read().map_err(|_| poisoned())?.keys().copied());
        Ok(ids.into_iter().collect())
    }
}
