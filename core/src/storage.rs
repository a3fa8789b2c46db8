//! The [`KeyStorage`] trait: where wrapped DEKs live.

use async_trait::async_trait;

use crate::{Error, KeyId, KeyMeta, Result, WrappedDek};

/// A store of wrapped-DEK records keyed by [`KeyId`].
///
/// Records are create-only: [`KeyStorage::put`] never overwrites. A `put` that
/// returned `Ok` must survive whatever the backend promises to survive (the
/// file backend: a crash). Stored records contain nothing secret without the
/// KEK.
///
/// Implementations: `MemoryStorage` (feature `storage-memory`).
///
/// # Errors
///
/// [`Error::NotFound`](crate::Error::NotFound) for a missing key,
/// [`Error::AlreadyExists`](crate::Error::AlreadyExists) for a duplicate put,
/// [`Error::CorruptRecord`](crate::Error::CorruptRecord) for a damaged record,
/// [`Error::Storage`](crate::Error::Storage) for anything else.
///
/// # Example
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use keyserver::{KeyId, KeyStorage, Strength, WrappedDek};
/// use keyserver::backends::MemoryStorage;
///
/// let store = MemoryStorage::new();
/// let id = KeyId::from_bytes([1; 32]);
/// let rec = WrappedDek::new(id, 3072, Strength::S128, 0, vec![0; 384])?;
/// store.put(&rec).await?;
/// assert!(store.put(&rec).await.is_err()); // create-only
/// assert_eq!(store.get(&id).await?, rec);
/// assert_eq!(store.count(), 1);
/// # Ok::<(), keyserver::Error>(())
/// # }).unwrap();
/// ```
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait KeyStorage: Send + Sync + 'static {
    /// A short stable name, such as `"memory"`.
    fn name(&self) -> &'static str;

    /// Stores a new record under its key id. Fails with
    /// [`Error::AlreadyExists`](crate::Error::AlreadyExists) if the id is present.
    async fn put(&self, record: &WrappedDek) -> Result<()>;

    /// The record stored under `key_id`.
    async fn get(&self, key_id: &KeyId) -> Result<WrappedDek>;

    /// Whether a record is stored under `key_id`.
    async fn contains(&self, key_id: &KeyId) -> Result<bool>;

    /// How many records are stored. Backends keep this in memory: O(1).
    fn count(&self) -> u64;

    /// Removes the record under `key_id`; `Ok(false)` if there was none.
    /// The data encrypted under that key is lost for good.
    async fn delete(&self, key_id: &KeyId) -> Result<bool>;

    /// All stored key ids, in ascending order.
    async fn list(&self) -> Result<Vec<KeyId>>;

    /// Whether this storage keeps lifecycle metadata ([`KeyStorage::put_meta`]).
    /// A storage that does not (the default, for backends written before
    /// lifecycle existed) serves every key as active with no owner, and
    /// the lifecycle methods answer that it cannot.
    fn keeps_lifecycle(&self) -> bool {
        false
    }

    /// The lifecycle metadata of `key_id`; `None` if none was ever written
    /// (a record without metadata is an active key of no owner).
    async fn get_meta(&self, key_id: &KeyId) -> Result<Option<KeyMeta>> {
        let _ = key_id;
        Ok(None)
    }

    /// The record under `key_id` and its lifecycle metadata, read
    /// together: what `get_wrapped` and `get_key` need, in one round trip
    /// where the storage can (PostgreSQL: one query, so one snapshot). The
    /// record is `None` when none is stored (never put, or a destroyed
    /// key's, whose metadata stays as its tombstone); the metadata is `None`
    /// when none was written, and always for a storage that does not
    /// [keep lifecycle](KeyStorage::keeps_lifecycle).
    ///
    /// The default reads the metadata, then the record.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use keyserver::backends::MemoryStorage;
    /// use keyserver::{KeyId, KeyStorage};
    /// let store = MemoryStorage::new();
    /// let (record, meta) = store.get_with_meta(&KeyId::from_bytes([1; 32])).await.unwrap();
    /// assert!(record.is_none() && meta.is_none());
    /// # });
    /// ```
    ///
    /// # Errors
    /// Storage errors, and a record or metadata that fails its checks;
    /// never [`Error::NotFound`](crate::Error::NotFound).
    async fn get_with_meta(&self, key_id: &KeyId) -> Result<(Option<WrappedDek>, Option<KeyMeta>)> {
        let meta = if self.keeps_lifecycle() {
            self.get_meta(key_id).await?
        } else {
            None
        };
        let record = match self.get(key_id).await {
            Ok(record) => Some(record),
            Err(crate::Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        Ok((record, meta))
    }

    /// Writes the metadata of `meta.key_id`, replacing what was there:
    /// atomically (a reader sees the old or the new, never a mix) and as
    /// durably as `put`. Metadata outlives the record: a destroyed key's
    /// metadata is its tombstone.
    async fn put_meta(&self, meta: &KeyMeta) -> Result<()> {
        Err(Error::Storage {
            backend: self.name().into(),
            message: format!("cannot keep the lifecycle of key {}", meta.key_id),
            source: None,
        })
    }

    /// Stores a new key: its record and, if given, its metadata, as one
    /// change where the storage can (PostgreSQL: one transaction; a crash
    /// leaves both or neither). With `max_keys` and a storage that
    /// [counts owners](KeyStorage::counts_owners), refuses with
    /// [`Error::NotPermitted`], storing nothing, when `meta`'s owner already
    /// owns `max_keys` live keys: counted by the storage in the same
    /// change, so the quota is exact whatever number of servers share it.
    ///
    /// The default writes the record, then the metadata, and leaves
    /// `max_keys` to the server (which counts per process).
    async fn put_new<'m>(
        &self,
        record: &WrappedDek,
        meta: Option<&'m KeyMeta>,
        max_keys: Option<u64>,
    ) -> Result<()> {
        let _ = max_keys;
        self.put(record).await?;
        if let Some(meta) = meta {
            self.put_meta(meta).await?;
        }
        Ok(())
    }

    /// Whether [`KeyStorage::put_new`] enforces `max_keys` itself, from
    /// live-key counts the storage keeps per owner. When it does not (the
    /// default), the server counts the owners' keys once, at start, and
    /// follows its own changes: exact for a storage one process owns.
    fn counts_owners(&self) -> bool {
        false
    }

    /// The keys that may need the sweeper at `now` (a destruction due, or
    /// the record of a destroyed key left behind), read from an index of
    /// due keys, in order of when they fell due (`(due, key id)`), after
    /// `after`, at most `limit`; `None` if the storage keeps no such index
    /// (the default: the sweeper reads every key's metadata instead).
    async fn due_keys(
        &self,
        now: u64,
        after: Option<(u64, KeyId)>,
        limit: u32,
    ) -> Result<Option<Vec<(u64, KeyId)>>> {
        let _ = (now, after, limit);
        Ok(None)
    }

    /// Up to `limit` key ids with a record or metadata (tombstones
    /// included) after `after`, in ascending order: a page of
    /// [`KeyStorage::list_all`]. The default reads the whole listing; a
    /// storage with an ordered index reads only the page.
    async fn list_page(&self, after: Option<KeyId>, limit: u32) -> Result<Vec<KeyId>> {
        let mut all = self.list_all().await?;
        all.retain(|id| after.is_none_or(|a| *id > a));
        all.truncate(limit as usize);
        Ok(all)
    }

    /// Up to `limit` ids of the keys `owner` made (live or destroyed),
    /// after `after`, in ascending order, from an index of owners; `None`
    /// if the storage keeps no such index (the default: `list_keys` then
    /// reads every key's metadata to find them).
    async fn list_owned(
        &self,
        owner: &str,
        after: Option<KeyId>,
        limit: u32,
    ) -> Result<Option<Vec<KeyId>>> {
        let _ = (owner, after, limit);
        Ok(None)
    }

    /// Whether the storage can be reached now, as far as this process
    /// knows without asking (a cheap check on every call). `false` makes
    /// the server refuse calls before it does anything, with
    /// [`Error::Busy`](crate::Error::Busy) (code 12, "nothing was done"),
    /// so a client of several servers sends even a `generate` to another
    /// one. The default is `true`; PostgreSQL answers from its health
    /// probe.
    fn reachable(&self) -> bool {
        true
    }

    /// Says this server is alive to the others sharing the storage, and
    /// answers how many servers (this one included) share it now: each
    /// shares the cluster's rate limits by that number. The default, right
    /// for a storage one process owns, is 1; PostgreSQL counts the servers
    /// that checked in within the last 15 s (the `keyserver` command checks
    /// in every 5 s).
    async fn check_in(&self) -> Result<u32> {
        Ok(1)
    }

    /// Every key id with a record or metadata (tombstones included), in
    /// ascending order.
    async fn list_all(&self) -> Result<Vec<KeyId>> {
        self.list().await
    }

    /// Serialises lifecycle changes of `key_id` across every process that
    /// shares this storage: the server takes it (after its own in-process
    /// lock) around each read-decide-write of a key's metadata, and drops
    /// the [`KeyLock`] when done. The default is no lock at all, right for
    /// a storage that one process owns (the file storage's directory lock
    /// makes it so); a storage that several servers share (PostgreSQL)
    /// takes a lock they all see, and a cache in front of it forgets the
    /// key, so what is read under the lock is what is stored.
    async fn lock_key(&self, key_id: &KeyId) -> Result<KeyLock> {
        let _ = key_id;
        Ok(KeyLock::none())
    }

    /// Replaces the record of a key that is stored with `record` (the same
    /// key's record in another form: sealed under another master key, for
    /// `keyserver reseal`), atomically and as durably as `put`.
    /// [`Error::NotFound`] if no record is stored under its id (a
    /// destroyed key stays destroyed). The default cannot.
    async fn replace(&self, record: &WrappedDek) -> Result<()> {
        Err(Error::Storage {
            backend: self.name().into(),
            message: format!("cannot replace the record of key {}", record.key_id()),
            source: None,
        })
    }

    /// Whether the storage can serve now, for `/readyz`: by default, a
    /// lookup that reads it.
    async fn ready(&self) -> Result<()> {
        self.contains(&KeyId::from_bytes([0; 32])).await.map(drop)
    }

    /// Tries to make this process the one that does the periodic work of
    /// every server sharing the storage (scheduled destructions): a
    /// [`Lease`] while it leads, `None` while another process does. The
    /// default, right for a storage one process owns, always leads; a
    /// shared one (PostgreSQL) elects one leader, and another takes over
    /// within a bound when the leader dies.
    async fn try_lead(&self) -> Result<Option<Box<dyn Lease>>> {
        Ok(Some(Box::new(SoleLeader)))
    }
}

/// Leadership of a storage's periodic work ([`KeyStorage::try_lead`]),
/// held until dropped.
#[async_trait]
pub trait Lease: Send + Sync {
    /// Whether it is still held: the leader checks before each pass, and
    /// stops leading when it is not (its session died, or the database
    /// ended it).
    async fn held(&self) -> bool;
}

/// The lease of a storage that one process owns: always held.
struct SoleLeader;

#[async_trait]
impl Lease for SoleLeader {
    async fn held(&self) -> bool {
        true
    }
}

/// A lock on one key's lifecycle, held until dropped
/// ([`KeyStorage::lock_key`]).
///
/// ```
/// use keyserver::plugin::KeyLock;
/// let held = KeyLock::new(std::sync::Mutex::new(()));
/// drop(held); // released
/// let _nothing = KeyLock::none();
/// ```
#[must_use = "the lock is released when dropped"]
pub struct KeyLock(Option<Box<dyn Send + Sync>>);

impl KeyLock {
    /// No lock: for a storage that one process owns.
    pub fn none() -> Self {
        KeyLock(None)
    }

    /// `guard`, whose drop releases the lock.
    pub fn new(guard: impl Send + Sync + 'static) -> Self {
        KeyLock(Some(Box::new(guard)))
    }
}

impl std::fmt::Debug for KeyLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "KeyLock(held)"
        } else {
            "KeyLock(none)"
        })
    }
}

/// A shared storage is a storage: several servers (for example one per cipher
/// suite during a migration) can use one store through an `Arc`.
#[async_trait]
impl<T: KeyStorage + ?Sized> KeyStorage for std::sync::Arc<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    async fn put(&self, record: &WrappedDek) -> Result<()> {
        (**self).put(record).await
    }
    async fn get(&self, key_id: &KeyId) -> Result<WrappedDek> {
        (**self).get(key_id).await
    }
    async fn contains(&self, key_id: &KeyId) -> Result<bool> {
        (**self).contains(key_id).await
    }
    fn count(&self) -> u64 {
        (**self).count()
    }
    async fn delete(&self, key_id: &KeyId) -> Result<bool> {
        (**self).delete(key_id).await
    }
    async fn list(&self) -> Result<Vec<KeyId>> {
        (**self).list().await
    }
    fn keeps_lifecycle(&self) -> bool {
        (**self).keeps_lifecycle()
    }
    async fn get_meta(&self, key_id: &KeyId) -> Result<Option<KeyMeta>> {
        (**self).get_meta(key_id).await
    }
    async fn get_with_meta(&self, key_id: &KeyId) -> Result<(Option<WrappedDek>, Option<KeyMeta>)> {
        (**self).get_with_meta(key_id).await
    }
    async fn put_meta(&self, meta: &KeyMeta) -> Result<()> {
        (**self).put_meta(meta).await
    }
    async fn list_all(&self) -> Result<Vec<KeyId>> {
        (**self).list_all().await
    }
    async fn lock_key(&self, key_id: &KeyId) -> Result<KeyLock> {
        (**self).lock_key(key_id).await
    }
    async fn replace(&self, record: &WrappedDek) -> Result<()> {
        (**self).replace(record).await
    }
    async fn ready(&self) -> Result<()> {
        (**self).ready().await
    }
    async fn try_lead(&self) -> Result<Option<Box<dyn Lease>>> {
        (**self).try_lead().await
    }
    async fn put_new<'m>(
        &self,
        record: &WrappedDek,
        meta: Option<&'m KeyMeta>,
        max_keys: Option<u64>,
    ) -> Result<()> {
        (**self).put_new(record, meta, max_keys).await
    }
    fn counts_owners(&self) -> bool {
        (**self).counts_owners()
    }
    async fn due_keys(
        &self,
        now: u64,
        after: Option<(u64, KeyId)>,
        limit: u32,
    ) -> Result<Option<Vec<(u64, KeyId)>>> {
        (**self).due_keys(now, after, limit).await
    }
    async fn list_page(&self, after: Option<KeyId>, limit: u32) -> Result<Vec<KeyId>> {
        (**self).list_page(after, limit).await
    }
    async fn check_in(&self) -> Result<u32> {
        (**self).check_in().await
    }
    fn reachable(&self) -> bool {
        (**self).reachable()
    }
    async fn list_owned(
        &self,
        owner: &str,
        after: Option<KeyId>,
        limit: u32,
    ) -> Result<Option<Vec<KeyId>>> {
        (**self).list_owned(owner, after, limit).await
    }
}
