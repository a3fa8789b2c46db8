//! The key server's lifecycle operations (`docs/LIFECYCLE.md`): the state
//! checks on the data path, `describe`, the state changes, `rotate`,
//! `list_keys`, scheduled destruction, and per-owner quotas.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::api::{Caller, LifecycleRight};
use crate::blocking::blocking;
use crate::lifecycle::{now, Change, KeyFilter, KeyInfo, KeyPage, Target, MAX_PAGE};
use crate::record::{unwrap_record, wrap_dek};
use crate::{
    CipherSuite, Error, Kek, KeyId, KeyMeta, KeyServer, KeyState, KeyStorage, Result, Strength,
    WrappedDek,
};

/// Keys in a `list_keys` page when the filter names no limit.
const DEFAULT_PAGE: u32 = 100;

/// The clock lifecycle decisions read: Unix seconds.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The lifecycle settings and bookkeeping of a [`KeyServer`].
pub(crate) struct Keeper {
    clock: Clock,
    pub(crate) cryptoperiod: Duration,
    pub(crate) destroy_window: Duration,
    /// One state change (or rotation) at a time: each reads a key's
    /// metadata and writes it back.
    changes: tokio::sync::Mutex<()>,
    /// Live (not destroyed) keys per owner, counted from storage on first
    /// need; `None` until then.
    owned: Mutex<Option<HashMap<String, u64>>>,
    /// One count of the owners at a time.
    counting: tokio::sync::Mutex<()>,
    /// Records a listing could not read and left out.
    unreadable: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keeper")
            .field("cryptoperiod", &self.cryptoperiod)
            .field("destroy_window", &self.destroy_window)
            .finish_non_exhaustive()
    }
}

impl Default for Keeper {
    fn default() -> Self {
        Keeper {
            clock: Arc::new(now),
            cryptoperiod: crate::DEFAULT_CRYPTOPERIOD,
            destroy_window: crate::DEFAULT_DESTROY_WINDOW,
            changes: tokio::sync::Mutex::new(()),
            owned: Mutex::new(None),
            counting: tokio::sync::Mutex::new(()),
            unreadable: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Keeper {
    /// Now, by the server's clock.
    pub(crate) fn now(&self) -> u64 {
        (self.clock)()
    }

    /// Records a listing could not read, since start.
    pub(crate) fn unreadable(&self) -> u64 {
        self.unreadable.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts and names a record a listing leaves out, since it cannot be
    /// read: one damaged record must not fail the listing for everyone.
    fn left_out(&self, id: &KeyId, error: &Error) {
        self.unreadable
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            target: "keyserver::storage",
            "key {id} left out of a listing: {error}"
        );
    }

    fn owned(&self) -> std::sync::MutexGuard<'_, Option<HashMap<String, u64>>> {
        self.owned.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one more (`up`) or one fewer key for `owner`, if counting.
    fn count(&self, owner: Option<&str>, up: bool) {
        let mut owned = self.owned();
        let (Some(owner), Some(map)) = (owner, owned.as_mut()) else {
            return;
        };
        let n = map.entry(owner.to_owned()).or_default();
        *n = if up { *n + 1 } else { n.saturating_sub(1) };
    }
}

/// A quota place held for a key being made: given back unless kept.
struct Reservation<'a> {
    keeper: &'a Keeper,
    owner: Option<String>,
    kept: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.keeper.count(self.owner.as_deref(), false);
        }
    }
}

impl<C: CipherSuite, S: KeyStorage> KeyServer<C, S> {
    /// Sets the cryptoperiod: an active key older than this is deactivated
    /// (it still gives its DEK to decrypt, but encrypts nothing new).
    /// Default [`DEFAULT_CRYPTOPERIOD`](crate::DEFAULT_CRYPTOPERIOD), two
    /// years.
    ///
    /// ```
    /// # {
    /// use std::time::Duration;
    /// use keyserver::KeyServer;
    /// use keyserver::backends::{MemoryStorage, RustCrypto};
    ///
    /// let keys = KeyServer::new(RustCrypto::new(), MemoryStorage::new())
    ///     .with_cryptoperiod(Duration::from_secs(90 * 86_400))
    ///     .with_destroy_window(Duration::from_secs(86_400));
    /// assert_eq!(keys.cryptoperiod().as_secs(), 90 * 86_400);
    /// # }
    /// ```
    pub fn with_cryptoperiod(mut self, period: Duration) -> Self {
        self.lifecycle.cryptoperiod = period;
        self
    }

    /// Replaces the clock lifecycle decisions read (the cryptoperiod, the
    /// destruction time, the times recorded by state changes): for tests
    /// that move time without sleeping.
    ///
    /// ```
    /// # {
    /// use std::sync::Arc;
    /// use keyserver::KeyServer;
    /// use keyserver::backends::{MemoryStorage, RustCrypto};
    ///
    /// let keys = KeyServer::new(RustCrypto::new(), MemoryStorage::new())
    ///     .with_clock(Arc::new(|| 1_800_000_000));
    /// # }
    /// ```
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.lifecycle.clock = clock;
        self
    }

    /// The cryptoperiod ([`KeyServer::with_cryptoperiod`]).
    pub fn cryptoperiod(&self) -> Duration {
        self.lifecycle.cryptoperiod
    }

    /// Sets the time between `destroy` and the destruction of the wrapped
    /// DEK (during which `cancel_destroy` undoes it). Default
    /// [`DEFAULT_DESTROY_WINDOW`](crate::DEFAULT_DESTROY_WINDOW), 7 days;
    /// zero destroys at once.
    pub fn with_destroy_window(mut self, window: Duration) -> Self {
        self.lifecycle.destroy_window = window;
        self
    }

    /// The destroy window ([`KeyServer::with_destroy_window`]).
    pub fn destroy_window(&self) -> Duration {
        self.lifecycle.destroy_window
    }

    /// The metadata of `key_id`: as stored, or (for a record written
    /// without any) an active key of no owner.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is neither a record nor metadata.
    pub async fn key_meta(&self, key_id: &KeyId) -> Result<KeyMeta> {
        if let Some(meta) = self.storage.get_meta(key_id).await? {
            return Ok(meta);
        }
        let record = self.storage.get(key_id).await?;
        Ok(KeyMeta::new(
            *key_id,
            record.strength(),
            record.created(),
            None,
        ))
    }

    /// `describe(key_id)`: the key's state in force, owner and times. A key
    /// whose destruction time has passed is destroyed now.
    ///
    /// # Errors
    /// [`Error::NotFound`] for a key never stored; storage errors.
    pub async fn describe(&self, key_id: &KeyId) -> Result<KeyInfo> {
        let meta = self.key_meta(key_id).await?;
        let mut info = KeyInfo::of(&meta, self.lifecycle.now(), self.lifecycle.cryptoperiod);
        // The algorithm is read from the record; a record this version
        // cannot read (damaged, or of a newer format) leaves it unsaid
        // rather than failing `describe`.
        if info.state == KeyState::Destroyed && meta.state != KeyState::Destroyed {
            self.destroy_if_due(key_id).await?;
        }
        if info.state != KeyState::Destroyed {
            info.kek_alg = match self.storage.get(key_id).await {
                Ok(record) => Some(record.alg()),
                Err(Error::NotFound { .. } | Error::CorruptRecord { .. }) => None,
                Err(e) => return Err(e),
            };
        }
        Ok(info)
    }

    /// The record of `key_id` and its metadata, read together (one round
    /// trip where the storage can): the metadata `None` for a storage that
    /// keeps no lifecycle, the record `None` if none is stored.
    pub(crate) async fn record_and_meta(
        &self,
        key_id: &KeyId,
    ) -> Result<(Option<WrappedDek>, Option<KeyMeta>)> {
        if self.storage.keeps_lifecycle() {
            return self.storage.get_with_meta(key_id).await;
        }
        match self.storage.get(key_id).await {
            Ok(record) => Ok((Some(record), None)),
            Err(Error::NotFound { .. }) => Ok((None, None)),
            Err(e) => Err(e),
        }
    }

    /// The state of `key_id` for handing out its DEK, from its metadata
    /// (`None`: no lifecycle kept or written, an active key): refused
    /// unless it allows decryption. A compromised key's DEK is handed out
    /// with a warning; a key whose destruction time has passed is destroyed
    /// now.
    pub(crate) async fn decrypt_allowed(
        &self,
        key_id: &KeyId,
        meta: Option<&KeyMeta>,
    ) -> Result<()> {
        let Some(meta) = meta else {
            return Ok(());
        };
        let state = meta.state_at(self.lifecycle.now(), self.lifecycle.cryptoperiod);
        if state == KeyState::Compromised {
            tracing::warn!(
                target: "keyserver::lifecycle",
                key_id = %key_id,
                "the DEK of compromised key {key_id} was handed out"
            );
        }
        if state == KeyState::Destroyed && meta.state != KeyState::Destroyed {
            self.destroy_if_due(key_id).await?;
        }
        if state.allows_decrypt() {
            Ok(())
        } else {
            Err(Error::KeyState {
                key_id: *key_id,
                state,
            })
        }
    }

    /// The state of `key_id` for encrypting new data: only an active key.
    pub(crate) async fn check_encrypt(&self, key_id: &KeyId) -> Result<()> {
        if !self.storage.keeps_lifecycle() {
            return Ok(());
        }
        let meta = self.key_meta(key_id).await?;
        let state = meta.state_at(self.lifecycle.now(), self.lifecycle.cryptoperiod);
        if state.allows_encrypt() {
            Ok(())
        } else {
            Err(Error::KeyState {
                key_id: *key_id,
                state,
            })
        }
    }

    fn lifecycle_storage(&self) -> Result<()> {
        if self.storage.keeps_lifecycle() {
            Ok(())
        } else {
            Err(Error::policy(format!(
                "the {} storage keeps no key lifecycle",
                self.storage.name()
            )))
        }
    }

    /// Proof of possession: `kek` is one consistent key pair (so its
    /// holder has the private key of `kek.id()`).
    pub(crate) async fn check_possession(&self, kek: &Kek) -> Result<()> {
        if self.checked.contains(kek) {
            return Ok(());
        }
        let suite = Arc::clone(&self.suite);
        let owned = kek.clone();
        blocking(move || crate::record::check_key_pair(&*suite, &owned)).await??;
        self.checked.insert(kek);
        Ok(())
    }

    /// `suspend`, `resume`, `compromised`, `destroy`, `cancel_destroy` of
    /// `target` (permissions are the listener's: a KEK is proof enough, a
    /// key id needs the method granted). Returns the key as it is after.
    ///
    /// # Errors
    /// [`Error::KeyState`] if the key's state does not allow the change
    /// (the table in [`KeyState`]); [`Error::NotFound`]; [`Error::Policy`]
    /// for a storage that keeps no lifecycle; storage errors.
    pub async fn change_state(&self, change: Change, target: &Target) -> Result<KeyInfo> {
        self.change_state_as(change, target, LifecycleRight::Full)
            .await
    }

    /// [`KeyServer::change_state`] held to `right`: with
    /// [`LifecycleRight::RestrictOnly`], only a change of a key whose KEK
    /// is presented, and only one after which the key is usable for
    /// nothing it was not usable for before. The check is made on the state
    /// read under the state-change lock, so no concurrent change can slip
    /// between the check and the write.
    ///
    /// # Errors
    /// [`Error::NotPermitted`] for a change `right` does not allow; as for
    /// [`KeyServer::change_state`].
    pub async fn change_state_as(
        &self,
        change: Change,
        target: &Target,
        right: LifecycleRight,
    ) -> Result<KeyInfo> {
        self.lifecycle_storage()?;
        match target {
            Target::Kek(kek) => self.check_possession(kek).await?,
            Target::KeyId(_) if right != LifecycleRight::Full => return Err(Error::NotPermitted),
            Target::KeyId(_) => {}
        }
        // Undoing (resume, cancel_destroy) is never a restriction, even
        // between two unusable states.
        if right != LifecycleRight::Full && !change.restricts() {
            return Err(Error::NotPermitted);
        }
        let key_id = target.key_id();
        let _one = self.lifecycle.changes.lock().await;
        let _shared = self.storage.lock_key(&key_id).await?;
        let meta = self.key_meta(&key_id).await?;
        let now = self.lifecycle.now();
        let from = meta.state_at(now, self.lifecycle.cryptoperiod);
        let mut to = change.apply(from, meta.previous).ok_or(Error::KeyState {
            key_id,
            state: from,
        })?;
        // A rotated key never encrypts again, whatever it went through.
        if to == KeyState::Active && meta.rotated_to.is_some() {
            to = KeyState::Deactivated;
        }
        if right != LifecycleRight::Full && !narrows(from, to) {
            return Err(Error::NotPermitted);
        }
        let mut next = meta.clone();
        next.state = to;
        next.changed = now;
        match change {
            Change::Suspend | Change::Destroy => next.previous = Some(from),
            Change::Compromised => {}
            Change::Resume | Change::CancelDestroy => next.previous = None,
        }
        match change {
            Change::Destroy => {
                next.destroy_at = Some(now.saturating_add(self.lifecycle.destroy_window.as_secs()));
            }
            Change::CancelDestroy => next.destroy_at = None,
            _ => {}
        }
        self.storage.put_meta(&next).await?;
        tracing::info!(
            target: "keyserver::lifecycle",
            key_id = %key_id,
            "key {key_id}: {} ({from} -> {to})",
            change.name()
        );
        if next.state_at(now, self.lifecycle.cryptoperiod) == KeyState::Destroyed {
            next = self.destroy_locked(next).await?;
        }
        Ok(KeyInfo::of(&next, now, self.lifecycle.cryptoperiod))
    }

    /// Destroys `key_id` if its destruction is due (or a crash left the
    /// record of a destroyed key), under the state-change lock and on the
    /// metadata read under it: racing callers destroy it once.
    async fn destroy_if_due(&self, key_id: &KeyId) -> Result<bool> {
        let _one = self.lifecycle.changes.lock().await;
        let _shared = self.storage.lock_key(key_id).await?;
        let Some(meta) = self.storage.get_meta(key_id).await? else {
            return Ok(false);
        };
        let due =
            meta.state_at(self.lifecycle.now(), self.lifecycle.cryptoperiod) == KeyState::Destroyed;
        let leftover = meta.state == KeyState::Destroyed && self.storage.contains(key_id).await?;
        if due && (meta.state != KeyState::Destroyed || leftover) {
            self.destroy_locked(meta).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Destroys the wrapped DEK of a key whose destruction is due (the
    /// caller holds the state-change lock): its metadata becomes the
    /// tombstone (written first, so a crash in between leaves a destroyed
    /// key whose record the next sweep removes), then the record goes.
    async fn destroy_locked(&self, meta: KeyMeta) -> Result<KeyMeta> {
        let mut tombstone = meta.clone();
        tombstone.state = KeyState::Destroyed;
        tombstone.previous = None;
        tombstone.changed = self.lifecycle.now();
        if meta.state != KeyState::Destroyed {
            self.storage.put_meta(&tombstone).await?;
            self.lifecycle.count(meta.owner.as_deref(), false);
        }
        self.storage.delete(&meta.key_id).await?;
        tracing::warn!(
            target: "keyserver::lifecycle",
            key_id = %meta.key_id,
            "key {}: destroyed (its wrapped DEK is gone; the data encrypted under it cannot be \
             decrypted any more)",
            meta.key_id
        );
        Ok(tombstone)
    }

    /// Destroys every key whose destruction time has passed (and removes
    /// the record of any destroyed key a crash left behind). The `keyserver`
    /// binary runs it at start and every minute; `describe` and the data
    /// path also destroy a due key they meet.
    ///
    /// # Errors
    /// Storage errors (keys destroyed before the error stay destroyed).
    pub async fn destroy_due(&self) -> Result<usize> {
        self.destroy_due_keys().await.map(|ids| ids.len())
    }

    /// [`KeyServer::destroy_due`], naming the keys destroyed.
    ///
    /// # Errors
    /// As for [`KeyServer::destroy_due`].
    pub async fn destroy_due_keys(&self) -> Result<Vec<KeyId>> {
        if !self.storage.keeps_lifecycle() {
            return Ok(Vec::new());
        }
        let now = self.lifecycle.now();
        let mut destroyed = Vec::new();
        let mut failed = 0;
        for id in self.sweep_candidates(now).await? {
            // One unreadable key must not keep the others from their
            // destruction: each is tried, failures are counted and logged.
            let due = match self.storage.get_meta(&id).await {
                Ok(Some(meta)) => {
                    meta.state_at(now, self.lifecycle.cryptoperiod) == KeyState::Destroyed
                }
                Ok(None) => false,
                Err(e) => {
                    failed += 1;
                    tracing::warn!(target: "keyserver::lifecycle", "key {id}: {e}");
                    false
                }
            };
            if due {
                match self.destroy_if_due(&id).await {
                    Ok(true) => destroyed.push(id),
                    Ok(false) => {}
                    Err(e) => {
                        failed += 1;
                        tracing::warn!(target: "keyserver::lifecycle", "key {id}: {e}");
                    }
                }
            }
        }
        if failed > 0 {
            return Err(Error::Storage {
                backend: self.storage.name().into(),
                message: format!(
                    "{failed} keys could not be checked or destroyed ({} destroyed)",
                    destroyed.len()
                ),
                source: None,
            });
        }
        Ok(destroyed)
    }

    /// The keys the sweeper looks at: those the storage's index of due
    /// keys names, or, for a storage without one, every key.
    async fn sweep_candidates(&self, now: u64) -> Result<Vec<KeyId>> {
        const BATCH: u32 = 1_000;
        let mut due = Vec::new();
        let mut after = None;
        loop {
            let Some(batch) = self.storage.due_keys(now, after, BATCH).await? else {
                return self.storage.list_all().await;
            };
            after = batch.last().copied();
            let full = batch.len() == BATCH as usize;
            due.extend(batch.into_iter().map(|(_, id)| id));
            if !full {
                return Ok(due);
            }
        }
    }

    /// `list_keys(filter)`: a page of keys in key id order. A record that
    /// cannot be read (damaged, or of a newer format) is left out, named in
    /// the log and counted (`keyserver_records_unreadable_total`): one
    /// damaged record does not fail the listing for everyone.
    ///
    /// # Errors
    /// Storage errors (the store cannot be read).
    pub async fn list_keys(&self, filter: &KeyFilter) -> Result<KeyPage> {
        let limit = filter.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE) as usize;
        let now = self.lifecycle.now();
        let period = self.lifecycle.cryptoperiod;
        let mut keys = Vec::new();
        let mut cursor = None;
        // Read ids from the storage a chunk at a time, until the page is
        // full: first one more than the page (to know whether another
        // follows), then twice as many each time, so a filter that keeps
        // few keys costs a storage without an ordered index (whose
        // `list_page` reads its whole listing) a few listings, not one per
        // page of ids.
        let mut chunk = u32::try_from(limit + 1).unwrap_or(MAX_PAGE);
        let mut after = filter.cursor;
        let mut ids = Vec::new().into_iter();
        loop {
            let Some(id) = ids.next() else {
                let next = match &filter.owner {
                    // One owner's keys from the storage's index of owners,
                    // where it keeps one.
                    Some(owner) => match self.storage.list_owned(owner, after, chunk).await? {
                        Some(ids) => ids,
                        None => self.storage.list_page(after, chunk).await?,
                    },
                    None => self.storage.list_page(after, chunk).await?,
                };
                chunk = chunk.saturating_mul(2).min(1 << 20);
                if next.is_empty() {
                    break;
                }
                after = next.last().copied();
                ids = next.into_iter();
                continue;
            };
            let meta = match self.key_meta(&id).await {
                Ok(meta) => meta,
                // A record removed since the listing.
                Err(Error::NotFound { .. }) => continue,
                Err(e @ Error::CorruptRecord { .. }) => {
                    self.lifecycle.left_out(&id, &e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let info = KeyInfo::of(&meta, now, period);
            let wanted = filter.state.is_none_or(|s| s == info.state)
                && filter
                    .owner
                    .as_ref()
                    .is_none_or(|o| meta.owner.as_ref() == Some(o))
                && (!filter.past_cryptoperiod || now >= meta.deactivate_at(period));
            if !wanted {
                continue;
            }
            if keys.len() == limit {
                cursor = keys.last().map(|k: &KeyInfo| k.key_id);
                break;
            }
            keys.push(info);
        }
        Ok(KeyPage::new(keys, cursor))
    }

    /// The state of the newest key of `meta`'s rotation chain (following
    /// `rotated_to`), `None` if it cannot be read.
    async fn newest_of_chain_state(&self, meta: &KeyMeta, now: u64) -> Option<KeyState> {
        let mut next = meta.rotated_to?;
        for _ in 0..32 {
            let meta = self.key_meta(&next).await.ok()?;
            match meta.rotated_to {
                Some(to) => next = to,
                None => return Some(meta.state_at(now, self.lifecycle.cryptoperiod)),
            }
        }
        None
    }

    /// Whether `key_id` was made by rotating (once or more) `ancestor`.
    pub(crate) async fn was_rotated_from(&self, key_id: &KeyId, ancestor: &KeyId) -> bool {
        let mut id = *key_id;
        for _ in 0..32 {
            match self.storage.get_meta(&id).await {
                Ok(Some(meta)) => match meta.rotated_from {
                    Some(from) if from == *ancestor => return true,
                    Some(from) => id = from,
                    None => return false,
                },
                _ => return false,
            }
        }
        false
    }

    /// Holds a quota place for `caller` (when it has a quota).
    async fn reserve(
        &self,
        owner: Option<&str>,
        caller: &Caller,
    ) -> Result<Option<Reservation<'_>>> {
        let Some(owner) = owner else {
            return Ok(None);
        };
        let Some(max) = caller.max_keys_of(owner) else {
            return Ok(None);
        };
        if self.storage.counts_owners() {
            // Counted by the storage, in the change that stores the key.
            return Ok(None);
        }
        let owner = owner.to_owned();
        if self.lifecycle.owned().is_none() {
            self.count_owners().await?;
        }
        let mut owned = self.lifecycle.owned();
        let n = owned
            .as_mut()
            .map(|m| m.entry(owner.clone()).or_default())
            .ok_or_else(|| Error::Internal("owner counts missing".into()))?;
        if *n >= max {
            return Err(Error::NotPermitted);
        }
        *n += 1;
        Ok(Some(Reservation {
            keeper: &self.lifecycle,
            owner: Some(owner),
            kept: false,
        }))
    }

    /// Counts every owner's live keys now, for the quotas of a storage
    /// that does not count them itself ([`KeyStorage::counts_owners`]), so
    /// that no `generate` has to: the `keyserver` command calls it at
    /// start, in the background. A `generate` with a quota that comes
    /// before it is done waits for it. Nothing to do for a storage that
    /// counts owners.
    ///
    /// # Errors
    /// Storage errors (the store cannot be listed).
    pub async fn count_owners(&self) -> Result<()> {
        if self.storage.counts_owners() {
            return Ok(());
        }
        let _one = self.lifecycle.counting.lock().await;
        if self.lifecycle.owned().is_some() {
            return Ok(());
        }
        // A storage that keeps no lifecycle records no owner: its keys are
        // counted from now on, in this process.
        let counts = if self.storage.keeps_lifecycle() {
            self.count_owned().await?
        } else {
            HashMap::new()
        };
        *self.lifecycle.owned() = Some(counts);
        Ok(())
    }

    /// Live keys per owner, from storage.
    async fn count_owned(&self) -> Result<HashMap<String, u64>> {
        let mut counts = HashMap::new();
        for id in self.storage.list_all().await? {
            let meta = match self.storage.get_meta(&id).await {
                Ok(meta) => meta,
                // Left out of the count (logged): one damaged record must
                // not refuse every owner's generate.
                Err(e @ Error::CorruptRecord { .. }) => {
                    self.lifecycle.left_out(&id, &e);
                    None
                }
                Err(e) => return Err(e),
            };
            if let Some(meta) = meta {
                if let (Some(owner), false) = (meta.owner, meta.state == KeyState::Destroyed) {
                    *counts.entry(owner).or_default() += 1;
                }
            }
        }
        Ok(counts)
    }

    /// The metadata a key just made gets, if any: its owner, and the key
    /// it was rotated from. A key of no owner, not rotated, has none (the
    /// record alone says "active"); nor has any key of a storage that
    /// keeps no lifecycle.
    fn new_meta(
        &self,
        kek: &Kek,
        strength: Strength,
        owner: Option<&str>,
        rotated_from: Option<(KeyId, u64)>,
    ) -> Option<KeyMeta> {
        if (owner.is_none() && rotated_from.is_none()) || !self.storage.keeps_lifecycle() {
            return None;
        }
        let mut meta = KeyMeta::new(
            kek.id(),
            strength,
            self.lifecycle.now(),
            owner.map(str::to_owned),
        );
        meta.rotated_from = rotated_from.map(|(id, _)| id);
        meta.dek_created = rotated_from.map(|(_, dek_created)| dek_created);
        Some(meta)
    }

    /// Stores a key just made, with its metadata, within its owner's
    /// quota: counted by the storage in the same change when it counts
    /// owners (exact across every server sharing it), otherwise by this
    /// process (`reservation`, taken before the key was made).
    async fn store_new(
        &self,
        record: &WrappedDek,
        meta: Option<&KeyMeta>,
        owner: Option<&str>,
        max_keys: Option<u64>,
        reservation: Option<Reservation<'_>>,
    ) -> Result<()> {
        let by_storage = self.storage.counts_owners();
        let put = self
            .storage
            .put_new(record, meta, max_keys.filter(|_| by_storage));
        // The witness's sync and the storage's at once; both must hold.
        let (stored, noted) = match super::witness::storing(*record.key_id()) {
            Some(noted) => both(put, noted).await,
            None => (put.await, Ok(())),
        };
        stored?;
        // Stored: counted for its owner even if the witness failed (the key
        // exists, answered to nobody).
        match reservation {
            Some(mut r) => r.kept = true,
            None if !by_storage => {
                // The key's owner, whether or not the storage keeps it.
                self.lifecycle.count(owner, true);
            }
            None => {}
        }
        noted
    }

    /// `generate` for `caller`: within its quota, recording it as the
    /// key's owner.
    ///
    /// # Errors
    /// [`Error::NotPermitted`] when the caller owns its `max_keys` live
    /// keys; as for [`KeyServer::generate_with_strength`].
    pub async fn generate_for(
        &self,
        strength: Option<Strength>,
        alg: Option<crate::KekAlg>,
        caller: &Caller,
    ) -> Result<Kek> {
        let owner = caller.principal();
        let reservation = self.reserve(owner, caller).await?;
        let strength = strength.unwrap_or(self.strength);
        let (kek, record) = self.new_key(strength, alg.unwrap_or(self.kek_alg)).await?;
        let meta = self.new_meta(&kek, strength, owner, None);
        let max_keys = owner.and_then(|o| caller.max_keys_of(o));
        self.store_new(&record, meta.as_ref(), owner, max_keys, reservation)
            .await?;
        Ok(kek)
    }

    /// The algorithm a key of `alg` rotates to: its own while this server
    /// allows it, otherwise the server's (how an operator moves RSA keys to
    /// EC: `--kek-alg ec` without allowing `rsa`). A hybrid post-quantum key
    /// never silently becomes a classical one: that is refused.
    fn rotation_alg(&self, alg: crate::KekAlg) -> Result<crate::KekAlg> {
        if self.allowed_kek_algs().contains(&alg) {
            return Ok(alg);
        }
        if alg == crate::KekAlg::HybridPq {
            return Err(Error::policy(
                "a hybrid-pq key rotates only to hybrid-pq: this server does not offer it",
            ));
        }
        Ok(self.kek_alg)
    }

    /// `rotate(kek[, strength])`: a new KEK whose record wraps the same DEK,
    /// so data encrypted under the old key decrypts with the new KEK
    /// unchanged (an envelope names the key it was sealed under; the new
    /// key's `rotated_from` links the two, and the server's and
    /// `KeyClient`'s decrypt follow it). The old key becomes deactivated
    /// with `rotated_to` set. `strength` moves the key to a stronger KEK
    /// (never weaker than the DEK).
    ///
    /// # Errors
    /// [`Error::KeyState`] unless the old key is active or deactivated, and
    /// for a key already rotated whose chain's newest key is not active,
    /// unless the caller has every lifecycle right; [`Error::NotPermitted`]
    /// over the caller's quota; as for
    /// [`KeyServer::get`] and [`KeyServer::generate_with_strength`].
    pub async fn rotate_for(
        &self,
        kek: &Kek,
        strength: Option<Strength>,
        caller: &Caller,
    ) -> Result<Kek> {
        self.lifecycle_storage()?;
        // Proof of possession before anything about the key is told: a
        // forged KEK learns nothing of its state.
        self.check_possession(kek).await?;
        let old_id = kek.id();
        let rotatable = |meta: &KeyMeta, now: u64| {
            let from = meta.state_at(now, self.lifecycle.cryptoperiod);
            if matches!(from, KeyState::Active | KeyState::Deactivated) {
                Ok(from)
            } else {
                Err(Error::KeyState {
                    key_id: old_id,
                    state: from,
                })
            }
        };
        // Checked, unwrapped and the new KEK made before the state-change
        // lock is taken: key generation can take seconds.
        let meta = self.key_meta(&old_id).await?;
        rotatable(&meta, self.lifecycle.now())?;
        let record = self.storage.get(&old_id).await?;
        let dek_strength = record.strength();
        let dek = unwrap_record(
            Arc::clone(&self.suite),
            kek,
            record,
            self.strength,
            Some(&self.checked),
        )
        .await?;
        let kek_strength = strength.unwrap_or(self.strength.max(dek_strength));
        self.check_strength(kek_strength)?;
        // The new key belongs to the old key's owner (the caller's, if it
        // had none), and counts against that owner's quota whoever rotates
        // it: otherwise anyone holding an owner's KEKs could grow its live
        // keys past `max_keys`.
        let owner = meta
            .owner
            .clone()
            .or_else(|| caller.principal().map(str::to_owned));
        let reservation = self.reserve(owner.as_deref(), caller).await?;
        let new = self
            .new_kek(self.rotation_alg(kek.alg())?, kek_strength)
            .await?;
        let now = self.lifecycle.now();
        let record = wrap_dek(&*self.suite, &new, dek_strength, dek.as_bytes(), now)?;
        drop(dek);

        let _one = self.lifecycle.changes.lock().await;
        let _shared = self.storage.lock_key(&old_id).await?;
        let meta = self.key_meta(&old_id).await?;
        let now = self.lifecycle.now();
        let from = rotatable(&meta, now)?;
        // A key already rotated, rotated again, gives its DEK one more
        // active key. That widens nothing while the newest key of the
        // chain is active (an answer lost, rotated again); once an
        // operator restricted it (or its cryptoperiod ended), it would
        // make the DEK usable for encryption again: only a caller with
        // every lifecycle right may.
        if meta.rotated_to.is_some()
            && caller.lifecycle != crate::api::LifecycleRight::Full
            && self.newest_of_chain_state(&meta, now).await != Some(KeyState::Active)
        {
            return Err(Error::KeyState {
                key_id: old_id,
                state: from,
            });
        }
        let new_meta = self.new_meta(
            &new,
            dek_strength,
            owner.as_deref(),
            Some((old_id, meta.dek_created.unwrap_or(meta.created))),
        );
        let max_keys = owner.as_deref().and_then(|o| caller.max_keys_of(o));
        self.store_new(
            &record,
            new_meta.as_ref(),
            owner.as_deref(),
            max_keys,
            reservation,
        )
        .await?;
        let mut old = meta;
        old.state = KeyState::Deactivated;
        old.changed = now;
        old.previous = None;
        old.rotated_to = Some(new.id());
        self.storage.put_meta(&old).await?;
        tracing::info!(
            target: "keyserver::lifecycle",
            key_id = %old_id,
            "key {old_id}: rotated to {} ({from} -> deactivated)",
            new.id()
        );
        Ok(new)
    }
}

/// Whether a key in state `to` is usable for nothing it was not usable for
/// in state `from`: what a caller without the lifecycle grant may do.
pub(crate) fn narrows(from: KeyState, to: KeyState) -> bool {
    (!to.allows_decrypt() || from.allows_decrypt())
        && (!to.allows_encrypt() || from.allows_encrypt())
}

/// Runs two futures at once, to the end of both (what `tokio::join!` does,
/// without the feature that brings tokio's macros to every build).
async fn both<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    use std::task::Poll;
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    let (mut first, mut second) = (None, None);
    std::future::poll_fn(|cx| {
        if first.is_none() {
            if let Poll::Ready(out) = a.as_mut().poll(cx) {
                first = Some(out);
            }
        }
        if second.is_none() {
            if let Poll::Ready(out) = b.as_mut().poll(cx) {
                second = Some(out);
            }
        }
        match (first.take(), second.take()) {
            (Some(a), Some(b)) => Poll::Ready((a, b)),
            (a, b) => {
                (first, second) = (a, b);
                Poll::Pending
            }
        }
    })
    .await
}
