//! [`RecordCache`]: verified wrapped-DEK records kept in memory, around any
//! storage (a wrapper, as tower layers are, not code inside each backend).
//!
//! The bounded map under it, and under the client's DEK cache, is the `lru`
//! crate's `LruCache`: strict least-recently-used eviction (what the client
//! cache promises, and what its tests check), O(1) operations, and values
//! dropped on eviction, so a DEK is wiped the moment it leaves. (quick_cache
//! and moka are concurrent and faster under contention, but their CLOCK-Pro
//! and TinyLFU policies are not LRU; both caches here sit behind one short
//! lock per operation, which the benchmarks show is not a bottleneck.)

use std::collections::HashSet;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lru::LruCache;

use crate::storage::{KeyLock, KeyStorage};
use crate::{KeyId, KeyMeta, Result, WrappedDek};

/// Records kept in memory by default: about 8 MiB of 3072-bit records.
pub const DEFAULT_CACHE_RECORDS: usize = 16_384;

/// A bounded LRU map whose capacity may be 0 (then it holds nothing).
pub(crate) struct Bounded<V> {
    map: LruCache<KeyId, V>,
    capacity: usize,
}

impl<V> Bounded<V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Bounded {
            map: LruCache::new(NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN)),
            capacity,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Changes the bound, dropping the least recently used entries beyond it.
    pub(crate) fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
        if capacity == 0 {
            self.map.clear();
        }
        self.map
            .resize(NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN));
    }

    /// The entry, marked as the most recently used.
    pub(crate) fn get(&mut self, key: &KeyId) -> Option<&V> {
        self.map.get(key)
    }

    /// The entry, to change it in place, marked as the most recently used.
    pub(crate) fn get_mut(&mut self, key: &KeyId) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    /// The entry, leaving the order as it is.
    pub(crate) fn peek(&self, key: &KeyId) -> Option<&V> {
        self.map.peek(key)
    }

    /// Inserts, evicting (dropping) the least recently used entry when full.
    pub(crate) fn insert(&mut self, key: KeyId, value: V) {
        if self.capacity > 0 {
            self.map.put(key, value);
        }
    }

    pub(crate) fn remove(&mut self, key: &KeyId) {
        self.map.pop(key);
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn clear(&mut self) {
        self.map.clear();
    }
}

struct State {
    /// Records, with when they were read or written.
    records: Bounded<(WrappedDek, Instant)>,
    /// Lifecycle metadata read or written, `None` for "none stored" (the
    /// common case of a key that never changed state).
    metas: Bounded<(Option<KeyMeta>, Instant)>,
    /// How long an entry may be served from memory (`None`: until evicted).
    ttl: Option<Duration>,
    /// Keep nothing new (the storage's change feed is down).
    paused: bool,
    /// Counts announced changes of single keys ([`RecordCache::invalidate`]).
    seq: u64,
    /// The `seq` of the last announced change of recently changed keys...
    changed: LruCache<KeyId, u64>,
    /// ...and at least that of every key no longer in `changed`.
    changed_floor: u64,
    /// Counts metadata writes: a read that began before one must not put
    /// the old metadata back.
    meta_epoch: u64,
    /// Counts deletes: a read that began before a delete must not put the
    /// deleted record back.
    epoch: u64,
    /// Keys whose delete was abandoned half way (its future dropped): the
    /// storage may still be finishing it, at a moment nobody can observe, so
    /// these are read through and never kept again (a later delete that
    /// returns proves nothing about the abandoned one). Only abandoned
    /// deletes add to it, and no wire method deletes.
    abandoned: HashSet<KeyId>,
}

/// A [`KeyStorage`] that keeps the records it has read or written in memory
/// (the most recently used `capacity` of them), so a hot key is served
/// without touching the storage under it: no file read, no hop to the
/// blocking thread pool, no round trip to a database.
///
/// Safe when this process is the only writer of the storage under it (as the
/// file storage's lock guarantees): records are create-only, hold nothing
/// secret without the KEK, were verified when read, and `delete` through this
/// wrapper forgets them. Do not put it in front of a storage that other
/// processes change.
///
/// # Example
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use keyserver::{KeyId, KeyStorage, Strength, WrappedDek};
/// use keyserver::backends::{MemoryStorage, RecordCache};
///
/// let store = RecordCache::new(MemoryStorage::new(), 2);
/// let rec = WrappedDek::new(KeyId::from_bytes([1; 32]), 3072, Strength::S128, 0, vec![0; 384])?;
/// store.put(&rec).await?;
/// assert_eq!(store.cached_len(), 1);
/// assert_eq!(store.get(rec.key_id()).await?, rec); // from memory
/// # Ok::<(), keyserver::Error>(())
/// # }).unwrap();
/// ```
pub struct RecordCache<S> {
    inner: S,
    state: Mutex<State>,
}

impl<S: KeyStorage> RecordCache<S> {
    /// `inner`, with up to `capacity` records kept in memory (0 keeps none).
    pub fn new(inner: S, capacity: usize) -> Self {
        RecordCache {
            inner,
            state: Mutex::new(State {
                records: Bounded::new(capacity),
                metas: Bounded::new(capacity),
                ttl: None,
                paused: false,
                seq: 0,
                changed: LruCache::new(CHANGED_KEYS),
                changed_floor: 0,
                meta_epoch: 0,
                epoch: 0,
                abandoned: HashSet::new(),
            }),
        }
    }

    /// Serves an entry from memory for at most `ttl` after it was read: the
    /// bound on staleness when other processes change the storage and
    /// their changes may not be announced ([`RecordCache::invalidate`]).
    pub fn with_ttl(self, ttl: Duration) -> Self {
        self.state().ttl = Some(ttl);
        self
    }

    /// Forgets what is kept of `key_id` (its record and its metadata): for
    /// a storage that other processes change, when one announces a change
    /// (PostgreSQL's LISTEN/NOTIFY). A read already under way when this is
    /// called does not put the old value back.
    pub fn invalidate(&self, key_id: &KeyId) {
        let mut state = self.state();
        // Per key: a read of another key under way is still kept.
        state.seq += 1;
        let seq = state.seq;
        // `push` also hands back the key's own previous entry: only an
        // evicted other key raises the floor.
        if let Some((evicted, at)) = state.changed.push(*key_id, seq) {
            if evicted != *key_id {
                state.changed_floor = state.changed_floor.max(at);
            }
        }
        state.records.remove(key_id);
        state.metas.remove(key_id);
    }

    /// Forgets everything kept; `pause`: keep nothing new until called
    /// again with `false` (while the announcements of other processes'
    /// changes cannot be heard, every read goes to the storage).
    pub fn invalidate_all(&self, pause: bool) {
        let mut state = self.state();
        state.epoch += 1;
        state.meta_epoch += 1;
        state.records.clear();
        state.metas.clear();
        state.paused = pause;
    }

    /// Changes how many records are kept (0 turns the cache off).
    pub fn set_capacity(&self, capacity: usize) {
        let mut state = self.state();
        state.records.set_capacity(capacity);
        state.metas.set_capacity(capacity);
    }

    /// How many records may be kept.
    pub fn capacity(&self) -> usize {
        self.state().records.capacity()
    }

    /// How many records are kept now.
    pub fn cached_len(&self) -> usize {
        self.state().records.len()
    }

    /// The storage under the cache.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update is one step: a panic cannot leave the map torn.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `write`, a change of `key_id`'s metadata: the key's metadata
    /// is forgotten (and the epoch moved) before the write starts, and
    /// again after it, so a read racing the write leaves nothing stale in
    /// memory. A write abandoned half way (its future dropped) may still be
    /// finished by the storage later: its key is never kept again.
    async fn write_meta<T>(
        &self,
        key_id: KeyId,
        write: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        struct Guard<'a, S> {
            cache: &'a RecordCache<S>,
            key_id: KeyId,
            finished: bool,
        }
        impl<S> Drop for Guard<'_, S> {
            fn drop(&mut self) {
                let mut state = self
                    .cache
                    .state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                state.meta_epoch += 1;
                state.metas.remove(&self.key_id);
                if !self.finished {
                    state.abandoned.insert(self.key_id);
                }
            }
        }
        {
            let mut state = self.state();
            state.meta_epoch += 1;
            state.metas.remove(&key_id);
        }
        let mut guard = Guard {
            cache: self,
            key_id,
            finished: false,
        };
        let written = write.await;
        guard.finished = true;
        written
    }

    /// Keeps `record`, read since `fill`, unless it may be stale: a delete
    /// or an announced change of it happened since, one may still be
    /// running, or changes cannot be heard.
    fn remember(&self, record: &WrappedDek, fill: Fill) {
        let mut state = self.state();
        if state.epoch == fill.epoch && state.may_keep(record.key_id(), &fill) {
            state
                .records
                .insert(*record.key_id(), (record.clone(), fill.at));
        }
    }
}

impl<S> RecordCache<S> {
    /// Forgets `key_id`; `abandoned`: its delete was dropped half way and
    /// may still be running.
    fn forget(&self, key_id: &KeyId, abandoned: bool) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.epoch += 1;
        state.records.remove(key_id);
        if abandoned {
            state.abandoned.insert(*key_id);
        }
    }
}

/// Keys whose last announced change is remembered one by one; beyond them,
/// a read that began before the oldest forgotten change is not kept.
const CHANGED_KEYS: NonZeroUsize = NonZeroUsize::new(4096).expect("nonzero"); // ok: const

/// Where a read from the storage began: what must not have changed since
/// for its result to be kept, and when (the age of the entry counts from
/// before the read, so the TTL bounds the age of what it saw).
struct Fill {
    epoch: u64,
    seq: u64,
    at: Instant,
}

impl State {
    /// A read begins now (of metadata if `meta`).
    fn fill(&self, meta: bool) -> Fill {
        Fill {
            epoch: if meta { self.meta_epoch } else { self.epoch },
            seq: self.seq,
            at: Instant::now(),
        }
    }

    /// Whether what a read of `key_id` begun at `fill` saw may be kept:
    /// changes are heard, no announced change of the key came since, and
    /// no abandoned delete or write of it may still be running.
    fn may_keep(&self, key_id: &KeyId, fill: &Fill) -> bool {
        let last_change = self
            .changed
            .peek(key_id)
            .copied()
            .unwrap_or(self.changed_floor);
        !self.paused && last_change <= fill.seq && !self.abandoned.contains(key_id)
    }
}

/// Whether an entry kept since `at` may still be served.
fn fresh(at: Instant, ttl: Option<Duration>) -> bool {
    ttl.is_none_or(|ttl| at.elapsed() < ttl)
}

/// Forgets a record when dropped: at the end of a delete, or when the
/// delete's future is dropped (then the key is never cached again).
struct Forget<'a, S> {
    cache: &'a RecordCache<S>,
    key_id: &'a KeyId,
    finished: bool,
}

impl<S> Drop for Forget<'_, S> {
    fn drop(&mut self) {
        self.cache.forget(self.key_id, !self.finished);
    }
}

impl<S> fmt::Debug for RecordCache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordCache").finish_non_exhaustive()
    }
}

#[async_trait]
impl<S: KeyStorage> KeyStorage for RecordCache<S> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn put(&self, record: &WrappedDek) -> Result<()> {
        let fill = self.state().fill(false);
        self.inner.put(record).await?;
        self.remember(record, fill);
        Ok(())
    }

    async fn get(&self, key_id: &KeyId) -> Result<WrappedDek> {
        let fill = {
            let mut state = self.state();
            let ttl = state.ttl;
            match state.records.get(key_id) {
                Some((record, at)) if fresh(*at, ttl) => return Ok(record.clone()),
                Some(_) => state.records.remove(key_id),
                None => {}
            }
            state.fill(false)
        };
        let record = self.inner.get(key_id).await?;
        self.remember(&record, fill);
        Ok(record)
    }

    async fn contains(&self, key_id: &KeyId) -> Result<bool> {
        {
            let state = self.state();
            if state
                .records
                .peek(key_id)
                .is_some_and(|(_, at)| fresh(*at, state.ttl))
            {
                return Ok(true);
            }
        }
        self.inner.contains(key_id).await
    }

    fn count(&self) -> u64 {
        self.inner.count()
    }

    async fn delete(&self, key_id: &KeyId) -> Result<bool> {
        // Forgotten before the delete starts, and again when it ends however
        // it ends: with an error (the record may be gone all the same), or
        // with this future dropped half way. A get racing the delete then
        // cannot leave the record in memory: its epoch is stale. A dropped
        // delete may still be finished by the storage later (the file
        // storage's runs on the blocking pool), so its key is never kept
        // again.
        self.forget(key_id, false);
        let mut forget = Forget {
            cache: self,
            key_id,
            finished: false,
        };
        let deleted = self.inner.delete(key_id).await;
        forget.finished = true;
        deleted
    }

    async fn list(&self) -> Result<Vec<KeyId>> {
        self.inner.list().await
    }

    fn keeps_lifecycle(&self) -> bool {
        self.inner.keeps_lifecycle()
    }

    async fn get_meta(&self, key_id: &KeyId) -> Result<Option<KeyMeta>> {
        let fill = {
            let mut state = self.state();
            let ttl = state.ttl;
            match state.metas.get(key_id) {
                Some((meta, at)) if fresh(*at, ttl) => return Ok(meta.clone()),
                Some(_) => state.metas.remove(key_id),
                None => {}
            }
            state.fill(true)
        };
        let meta = self.inner.get_meta(key_id).await?;
        let mut state = self.state();
        if state.meta_epoch == fill.epoch && state.may_keep(key_id, &fill) {
            state.metas.insert(*key_id, (meta.clone(), fill.at));
        }
        Ok(meta)
    }

    async fn get_with_meta(&self, key_id: &KeyId) -> Result<(Option<WrappedDek>, Option<KeyMeta>)> {
        // Both in memory: no storage access. Otherwise both are read in one
        // go (one round trip), and both kept.
        let (record_fill, meta_fill) = {
            let mut state = self.state();
            let ttl = state.ttl;
            let record = match state.records.get(key_id) {
                Some((record, at)) if fresh(*at, ttl) => Some(record.clone()),
                Some(_) => {
                    state.records.remove(key_id);
                    None
                }
                None => None,
            };
            let meta = match state.metas.get(key_id) {
                Some((meta, at)) if fresh(*at, ttl) => Some(meta.clone()),
                Some(_) => {
                    state.metas.remove(key_id);
                    None
                }
                None => None,
            };
            if let (Some(record), Some(meta)) = (record, meta) {
                return Ok((Some(record), meta));
            }
            (state.fill(false), state.fill(true))
        };
        let (record, meta) = self.inner.get_with_meta(key_id).await?;
        if let Some(record) = &record {
            self.remember(record, record_fill);
        }
        let mut state = self.state();
        if state.meta_epoch == meta_fill.epoch && state.may_keep(key_id, &meta_fill) {
            state.metas.insert(*key_id, (meta.clone(), meta_fill.at));
        }
        Ok((record, meta))
    }

    async fn put_meta(&self, meta: &KeyMeta) -> Result<()> {
        self.write_meta(meta.key_id, self.inner.put_meta(meta))
            .await
    }

    async fn put_new<'m>(
        &self,
        record: &WrappedDek,
        meta: Option<&'m KeyMeta>,
        max_keys: Option<u64>,
    ) -> Result<()> {
        let fill = self.state().fill(false);
        let stored = self.inner.put_new(record, meta, max_keys);
        match meta {
            Some(meta) => self.write_meta(meta.key_id, stored).await?,
            None => stored.await?,
        }
        self.remember(record, fill);
        Ok(())
    }

    fn counts_owners(&self) -> bool {
        self.inner.counts_owners()
    }

    async fn due_keys(
        &self,
        now: u64,
        after: Option<(u64, KeyId)>,
        limit: u32,
    ) -> Result<Option<Vec<(u64, KeyId)>>> {
        self.inner.due_keys(now, after, limit).await
    }

    async fn list_page(&self, after: Option<KeyId>, limit: u32) -> Result<Vec<KeyId>> {
        self.inner.list_page(after, limit).await
    }

    async fn check_in(&self) -> Result<u32> {
        self.inner.check_in().await
    }

    fn reachable(&self) -> bool {
        self.inner.reachable()
    }

    async fn list_owned(
        &self,
        owner: &str,
        after: Option<KeyId>,
        limit: u32,
    ) -> Result<Option<Vec<KeyId>>> {
        self.inner.list_owned(owner, after, limit).await
    }

    async fn list_all(&self) -> Result<Vec<KeyId>> {
        self.inner.list_all().await
    }

    async fn replace(&self, record: &WrappedDek) -> Result<()> {
        // As a delete: forgotten before and after, however it ends.
        let key_id = record.key_id();
        self.forget(key_id, false);
        let mut forget = Forget {
            cache: self,
            key_id,
            finished: false,
        };
        let replaced = self.inner.replace(record).await;
        forget.finished = true;
        replaced
    }

    async fn ready(&self) -> Result<()> {
        self.inner.ready().await
    }

    async fn try_lead(&self) -> Result<Option<Box<dyn crate::storage::Lease>>> {
        self.inner.try_lead().await
    }

    async fn lock_key(&self, key_id: &KeyId) -> Result<KeyLock> {
        let lock = self.inner.lock_key(key_id).await?;
        // Another process may have changed the key before the lock was
        // ours: what is read under it comes from the storage.
        self.invalidate(key_id);
        Ok(lock)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::Arc;

    use tokio::sync::Semaphore;

    use super::*;
    use crate::test_backends::MemoryStorage;
    use crate::Error;

    /// A storage whose deletes run on a task of their own, as the file
    /// storage's run on the blocking pool: dropping the delete's future does
    /// not stop it. Each delete waits for one permit of `gate`.
    struct Detached {
        inner: Arc<MemoryStorage>,
        gate: Arc<Semaphore>,
    }

    #[async_trait]
    impl KeyStorage for Detached {
        fn name(&self) -> &'static str {
            "detached"
        }
        async fn put(&self, record: &WrappedDek) -> Result<()> {
            self.inner.put(record).await
        }
        async fn get(&self, key_id: &KeyId) -> Result<WrappedDek> {
            self.inner.get(key_id).await
        }
        async fn contains(&self, key_id: &KeyId) -> Result<bool> {
            self.inner.contains(key_id).await
        }
        fn count(&self) -> u64 {
            self.inner.count()
        }
        async fn delete(&self, key_id: &KeyId) -> Result<bool> {
            let (inner, gate, key_id) = (Arc::clone(&self.inner), Arc::clone(&self.gate), *key_id);
            tokio::spawn(async move {
                gate.acquire().await.expect("gate open").forget();
                inner.delete(&key_id).await
            })
            .await
            .expect("delete task")
        }
        async fn list(&self) -> Result<Vec<KeyId>> {
            self.inner.list().await
        }
    }

    fn record(n: u8) -> WrappedDek {
        WrappedDek::test_record(n)
    }

    /// An announced change forgets its key and discards reads of that key
    /// begun before it, and only of that key; a key changed again and
    /// again does not discard reads of others; keys beyond the bounded
    /// memory of changes are treated as changed (safe).
    #[test]
    fn announced_changes_are_per_key() {
        let store = RecordCache::new(MemoryStorage::new(), 8);
        let (a, b) = (*record(1).key_id(), *record(2).key_id());
        let fill = store.state().fill(false);
        store.invalidate(&a);
        {
            let state = store.state();
            assert!(
                !state.may_keep(&a, &fill),
                "a read of a began before a changed"
            );
            assert!(state.may_keep(&b, &fill), "b did not change");
        }
        let fill = store.state().fill(false);
        for _ in 0..100 {
            store.invalidate(&a);
        }
        assert!(
            store.state().may_keep(&b, &fill),
            "a's changes do not discard b"
        );
        assert_eq!(store.state().changed_floor, 0);
        // Beyond the remembered keys: conservative.
        let fill = store.state().fill(false);
        for n in 0..(CHANGED_KEYS.get() as u32 + 1) {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&n.to_be_bytes());
            store.invalidate(&KeyId::from_bytes(id));
        }
        assert!(
            !store.state().may_keep(&b, &fill),
            "forgotten changes count as changes"
        );
        // Paused: nothing kept.
        let fill = store.state().fill(false);
        store.invalidate_all(true);
        assert!(!store.state().may_keep(&b, &fill));
    }

    /// The window the epoch alone leaves open: a delete abandoned half way,
    /// a get after that (the record is still in storage, so it is read), and
    /// only then the storage finishing the delete. The get must not have put
    /// the record in memory, or it is served after it is gone.
    #[tokio::test]
    async fn a_record_read_while_an_abandoned_delete_runs_is_not_kept() {
        let gate = Arc::new(Semaphore::new(0));
        let store = RecordCache::new(
            Detached {
                inner: Arc::new(MemoryStorage::new()),
                gate: Arc::clone(&gate),
            },
            8,
        );
        let rec = record(1);
        let id = *rec.key_id();
        store.put(&rec).await.unwrap();
        assert_eq!(store.cached_len(), 1);

        // Start the delete, let its task reach the gate, drop the future.
        {
            let delete = store.delete(&id);
            tokio::pin!(delete);
            let polled = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(delete.as_mut().poll(cx).is_ready())
            })
            .await;
            assert!(!polled, "the delete waits at the gate");
        }
        tokio::task::yield_now().await;
        // Still stored: the get reads it through, and must not keep it.
        assert_eq!(store.get(&id).await.unwrap(), rec);
        assert_eq!(store.cached_len(), 0, "not kept while a delete may run");
        // The abandoned delete finishes now.
        gate.add_permits(1);
        for _ in 0..100 {
            if store.inner().count() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(store.inner().count(), 0, "the delete finished");
        assert!(matches!(store.get(&id).await, Err(Error::NotFound { .. })));

        // A later delete that returns proves nothing about the abandoned
        // one: the key stays read-through (served right, never kept).
        store.put(&rec).await.unwrap();
        gate.add_permits(1);
        assert!(store.delete(&id).await.unwrap());
        store.put(&rec).await.unwrap();
        assert_eq!(store.get(&id).await.unwrap(), rec);
        assert_eq!(store.cached_len(), 0);
        // Other keys are cached as ever.
        store.put(&record(2)).await.unwrap();
        assert_eq!(store.cached_len(), 1);
    }
}
