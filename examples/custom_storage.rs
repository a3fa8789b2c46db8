//! A storage backend written outside this crate, proving itself with the
//! public conformance kit (feature `testing`), then serving a key server.
//!
//! Everything here is what another crate would write: it uses only
//! keyserver's public API, and `keyserver::async_trait` (re-exported, so the
//! dependent crate needs no `async-trait` of its own, and the versions match).
//!
//! ```sh
//! cargo run --example custom_storage --features "testing cipher-rustcrypto"
//! ```
//!
//! In the backend's own crate, the kit is one line in a test file:
//!
//! ```ignore
//! keyserver::storage_conformance!(btree, (my_crate::BTreeStorage::default(), ()));
//! ```

use std::collections::BTreeMap;
use std::sync::RwLock;

use keyserver::backends::RustCrypto;
use keyserver::{async_trait, Error, KeyId, KeyServer, KeyStorage, Result, WrappedDek};

/// Records in an ordered map: a minimal, complete `KeyStorage`.
#[derive(Default)]
struct BTreeStorage {
    records: RwLock<BTreeMap<KeyId, WrappedDek>>,
}

impl BTreeStorage {
    fn records(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<KeyId, WrappedDek>> {
        // Every update is one insert or remove: a panic cannot tear the map.
        self.records.read().unwrap_or_else(|p| p.into_inner())
    }

    fn records_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<KeyId, WrappedDek>> {
        self.records.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl KeyStorage for BTreeStorage {
    fn name(&self) -> &'static str {
        "btree"
    }

    async fn put(&self, record: &WrappedDek) -> Result<()> {
        let mut records = self.records_mut();
        let key_id = *record.key_id();
        if records.contains_key(&key_id) {
            // Create-only: never overwrite a record.
            return Err(Error::AlreadyExists { key_id });
        }
        records.insert(key_id, record.clone());
        Ok(())
    }

    async fn get(&self, key_id: &KeyId) -> Result<WrappedDek> {
        self.records()
            .get(key_id)
            .cloned()
            .ok_or(Error::NotFound { key_id: *key_id })
    }

    async fn contains(&self, key_id: &KeyId) -> Result<bool> {
        Ok(self.records().contains_key(key_id))
    }

    fn count(&self) -> u64 {
        self.records().len() as u64
    }

    async fn delete(&self, key_id: &KeyId) -> Result<bool> {
        Ok(self.records_mut().remove(key_id).is_some())
    }

    async fn list(&self) -> Result<Vec<KeyId>> {
        Ok(self.records().keys().copied().collect())
    }
}

fn main() -> Result<()> {
    use keyserver::testing::{run, storage};

    // The conformance kit, check by check (in a test file, the
    // `storage_conformance!` line above does the same).
    run(storage::put_is_create_only(BTreeStorage::default()));
    run(storage::crud(BTreeStorage::default()));
    run(storage::concurrent_puts_lose_nothing(
        BTreeStorage::default(),
    ));
    println!("BTreeStorage passes the storage conformance kit");

    // And it serves keys like any other backend.
    run(async {
        let keys = KeyServer::new(RustCrypto::new(), BTreeStorage::default());
        let kek = keys.generate().await?;
        let sealed = keys.encrypt(&kek, b"Stephan Richter").await?;
        assert_eq!(&keys.decrypt(&kek, &sealed).await?[..], b"Stephan Richter");
        println!("{keys}: generate, encrypt, decrypt");
        Ok(())
    })
}
