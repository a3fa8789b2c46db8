//! [`KeyClient`]: the application side, with a local DEK cache.

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use async_trait::async_trait;

use crate::api::KeyService;
use crate::cache::Bounded;
use crate::envelope;
use crate::record::unwrap_record;
use crate::stream;
use crate::{CipherSuite, Dek, Encryption, Kek, KeyId, Plaintext, Result, Strength, Transport};

/// Default time a fetched DEK is served from the cache: one hour.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(3600);

/// The former name of [`DEFAULT_CACHE_TTL`].
#[deprecated(note = "use DEFAULT_CACHE_TTL")]
pub const DEFAULT_CACHE_TIMEOUT: Duration = DEFAULT_CACHE_TTL;
/// Default number of DEKs the cache holds before evicting the least recently
/// used one.
pub const DEFAULT_CACHE_CAPACITY: usize = 1024;

/// Where a DEK is unwrapped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnwrapMode {
    /// The client sends the KEK (over TLS) and the server returns the DEK:
    /// the original key server's way, and the default.
    #[default]
    Server,
    /// The client fetches the wrapped record by key id and unwraps it
    /// locally: the private KEK never leaves the application host.
    Client,
}

struct Entry {
    dek: Dek,
    /// The key's lifecycle state when the DEK was fetched (`None`: the
    /// server did not say: an older server, or `describe` not granted).
    state: Option<crate::KeyState>,
    /// The fingerprint of the KEK that fetched it: a later caller gets the
    /// DEK from the cache only by presenting the same private key document
    /// (the key id alone is public).
    kek: zeroize::Zeroizing<[u8; 32]>,
    fetched: Instant,
    fetched_at: SystemTime,
    /// The envelope v2 writer of this DEK, made at its first v2 message;
    /// it goes (and its key is wiped) with the entry.
    session: Option<Arc<envelope::Session>>,
    /// The keys of the envelope v2 session this client last opened a
    /// message of (another writer's): the next message of that session
    /// opens without a key derivation.
    opened: Option<Arc<envelope::SessionKey>>,
    /// Messages sealed under this DEK since it was fetched.
    messages: u64,
    /// Plaintext bytes sealed under this DEK since it was fetched.
    sealed_bytes: u64,
}

/// A client of a remote key server, over any [`Transport`].
///
/// It fetches DEKs from the server, caches them locally (by key id, in memory
/// that is wiped when an entry is evicted), and encrypts and decrypts locally
/// with its own [`CipherSuite`], so the key server is never a bottleneck.
/// `generate()` is forwarded: the new key is on the server at once.
///
/// The cache serves an entry for `timeout` after it was fetched (3600 s by
/// default; zero means fetch every time), holds at most `capacity` entries
/// (least recently used evicted first), and concurrent callers missing the
/// same key make one request between them.
///
/// # Example
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use keyserver::{Encryption, KeyServer};
/// use keyserver::backends::{MemoryStorage, RustCrypto};
/// use keyserver::transports::InProcess;
///
/// let server = Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()));
/// let client = InProcess::client(Arc::clone(&server));
/// assert_eq!(client.to_string(), "<KeyClient 'inprocess://keyserver'>");
///
/// let kek = client.generate().await?;
/// assert!(server.contains(&kek.id()).await?);
/// let sealed = client.encrypt(&kek, b"Stephan Richter").await?;
/// assert!(client.is_cached(&kek.id()));
/// assert_eq!(&server.decrypt(&kek, &sealed).await?[..], b"Stephan Richter");
/// # Ok::<(), keyserver::Error>(())
/// # }).unwrap();
/// ```
pub struct KeyClient<T> {
    transport: T,
    suite: Arc<dyn CipherSuite>,
    cache_ttl: Duration,
    capacity: usize,
    mode: UnwrapMode,
    min_strength: Strength,
    envelope: envelope::Version,
    max_messages: Option<u64>,
    max_bytes: Option<u64>,
    cache: Mutex<Bounded<Entry>>,
    inflight: Mutex<HashMap<KeyId, Arc<tokio::sync::Mutex<()>>>>,
}

impl<T: Transport> KeyClient<T> {
    /// A client that talks through `transport` and encrypts locally with
    /// `suite`; cache timeout 3600 s, capacity 1024, server-side unwrap.
    pub fn new(transport: T, suite: impl CipherSuite) -> Self {
        KeyClient {
            transport,
            suite: Arc::new(suite),
            cache_ttl: DEFAULT_CACHE_TTL,
            capacity: DEFAULT_CACHE_CAPACITY,
            mode: UnwrapMode::default(),
            min_strength: Strength::default(),
            envelope: envelope::Version::default(),
            max_messages: None,
            max_bytes: None,
            cache: Mutex::new(Bounded::new(DEFAULT_CACHE_CAPACITY)),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the cache TTL: how long a fetched DEK is served from the cache;
    /// zero fetches on every use. (The network time limit is the
    /// transport's, `ClientOptions::timeout`.)
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// The former name of [`KeyClient::with_cache_ttl`].
    #[deprecated(note = "use with_cache_ttl: this is the cache TTL, not a network timeout")]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.cache_ttl = timeout;
        self
    }

    /// Sets how many DEKs the cache holds (at least one).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self.with_cache(|c| c.set_capacity(self.capacity));
        self
    }

    /// Chooses server-side or client-side unwrap.
    pub fn with_unwrap_mode(mut self, mode: UnwrapMode) -> Self {
        self.mode = mode;
        self
    }

    /// The weakest KEK accepted for client-side unwrap (default 128 bits).
    pub fn with_min_strength(mut self, strength: Strength) -> Self {
        self.min_strength = strength;
        self
    }

    /// Chooses the envelope version `encrypt` writes. Decryption opens
    /// both, whatever this says.
    ///
    /// [`envelope::Version::V2`], the default, seals a small message in
    /// about half the time of v1 (no random bytes, key derivation or key
    /// set-up per message: one [`envelope::Session`] per cached DEK, renewed
    /// with the DEK, after its message or byte limit, and in a forked
    /// child), and commits to the DEK. [`envelope::Version::V1`] is for a
    /// reader older than v2 (none was released); every release opens both.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use keyserver::{envelope, Encryption, KeyServer};
    /// use keyserver::backends::{MemoryStorage, RustCrypto};
    /// use keyserver::transports::InProcess;
    ///
    /// let server = Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()));
    /// let client = InProcess::client(Arc::clone(&server));
    /// let kek = client.generate().await?;
    /// let sealed = client.encrypt(&kek, b"Stephan Richter").await?;
    /// assert_eq!(sealed[3], envelope::VERSION_2);
    /// let v1 = client.with_envelope(envelope::Version::V1);
    /// assert_eq!(v1.encrypt(&kek, b"Stephan Richter").await?[3], envelope::VERSION);
    /// assert_eq!(&server.decrypt(&kek, &sealed).await?[..], b"Stephan Richter");
    /// # Ok::<(), keyserver::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn with_envelope(mut self, version: envelope::Version) -> Self {
        self.envelope = version;
        self
    }

    /// Limits how many messages one fetched DEK seals: after `messages`,
    /// the next `encrypt` fetches the DEK again (and starts a new envelope
    /// session), however fresh the cache entry is. The caching limits of the
    /// AWS Encryption SDK's caching materials manager; none by default.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use keyserver::{Encryption, KeyServer};
    /// use keyserver::backends::{MemoryStorage, RustCrypto};
    /// use keyserver::transports::InProcess;
    ///
    /// let server = Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()));
    /// let client = InProcess::client(server).with_max_messages(2);
    /// let kek = client.generate().await?;
    /// client.encrypt(&kek, b"one").await?;
    /// let first = client.fetched_at(&kek.id());
    /// client.encrypt(&kek, b"two").await?;
    /// assert_eq!(client.fetched_at(&kek.id()), first);
    /// client.encrypt(&kek, b"three").await?; // fetched again
    /// assert!(client.fetched_at(&kek.id()) > first);
    /// # Ok::<(), keyserver::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn with_max_messages(mut self, messages: u64) -> Self {
        self.max_messages = Some(messages);
        self
    }

    /// Limits how many plaintext bytes one fetched DEK seals as messages: a
    /// message that would take the total above `bytes` is sealed under a
    /// DEK fetched again. None by default.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use keyserver::{Encryption, KeyServer};
    /// use keyserver::backends::{MemoryStorage, RustCrypto};
    /// use keyserver::transports::InProcess;
    ///
    /// let server = Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()));
    /// let client = InProcess::client(server).with_max_bytes(100);
    /// let kek = client.generate().await?;
    /// client.encrypt(&kek, &[0; 60]).await?;
    /// let first = client.fetched_at(&kek.id());
    /// client.encrypt(&kek, &[0; 60]).await?; // 120 > 100: fetched again
    /// assert!(client.fetched_at(&kek.id()) > first);
    /// # Ok::<(), keyserver::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn with_max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// The envelope version `encrypt` writes ([`KeyClient::with_envelope`]).
    pub fn envelope_version(&self) -> envelope::Version {
        self.envelope
    }

    /// The cache TTL ([`KeyClient::with_cache_ttl`]).
    pub fn cache_ttl(&self) -> Duration {
        self.cache_ttl
    }

    /// The former name of [`KeyClient::cache_ttl`].
    #[deprecated(note = "use cache_ttl")]
    pub fn timeout(&self) -> Duration {
        self.cache_ttl
    }

    /// The cache capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The unwrap mode.
    pub fn unwrap_mode(&self) -> UnwrapMode {
        self.mode
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Whether a DEK for `key_id` is cached and still fresh (the original key server's
    /// `key in cache`).
    pub fn is_cached(&self, key_id: &KeyId) -> bool {
        self.with_cache(|c| c.peek(key_id).is_some_and(|e| self.fresh(e)))
    }

    /// When the cached DEK for `key_id` was fetched from the server, if there
    /// is an entry (fresh or expired).
    pub fn fetched_at(&self, key_id: &KeyId) -> Option<SystemTime> {
        self.with_cache(|c| c.peek(key_id).map(|e| e.fetched_at))
    }

    /// Number of cache entries (fresh or expired).
    pub fn cached_len(&self) -> usize {
        self.with_cache(|c| c.len())
    }

    /// Drops every cached DEK (their memory is wiped).
    pub fn clear_cache(&self) {
        self.with_cache(|c| c.clear());
    }

    fn with_cache<R>(&self, f: impl FnOnce(&mut Bounded<Entry>) -> R) -> R {
        // A panic while holding the lock cannot leave the map inconsistent
        // (every update is a single insert or remove), so keep using it.
        let mut guard = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    fn fresh(&self, entry: &Entry) -> bool {
        entry.fetched.elapsed() < self.cache_ttl
    }

    fn cached(&self, kek: &Kek) -> Option<(Dek, Option<crate::KeyState>)> {
        self.with_cache(|c| {
            let entry = c.get(&kek.id())?;
            (self.fresh(entry) && *entry.kek == *kek.fingerprint())
                .then(|| (entry.dek.clone(), entry.state))
        })
    }

    /// Caches `dek`; when full, the least recently used entry is dropped
    /// (and its key wiped).
    fn insert(&self, kek: &Kek, dek: Dek, state: Option<crate::KeyState>) {
        let entry = Entry {
            dek,
            state,
            kek: zeroize::Zeroizing::new(*kek.fingerprint()),
            fetched: Instant::now(),
            fetched_at: SystemTime::now(),
            session: None,
            opened: None,
            messages: 0,
            sealed_bytes: 0,
        };
        self.with_cache(|c| c.insert(kek.id(), entry));
    }

    /// Counts one message of `len` bytes against the cached DEK of `kek`,
    /// check and count under one lock, so concurrent callers never seal
    /// past the limit ([`KeyClient::with_max_messages`],
    /// [`KeyClient::with_max_bytes`]). A DEK that has sealed its limit is
    /// dropped instead, so this message fetches it again and starts a new
    /// session; a DEK that has sealed nothing yet is kept whatever the
    /// message's size (fetching again could not help). Returns whether the
    /// message was counted (otherwise [`KeyClient::count`] counts it on the
    /// DEK fetched for it).
    fn charge(&self, kek: &Kek, len: u64) -> bool {
        if self.max_messages.is_none() && self.max_bytes.is_none() {
            return true;
        }
        self.with_cache(|c| {
            let id = kek.id();
            let Some(entry) = c.get_mut(&id) else {
                return false;
            };
            if *entry.kek != *kek.fingerprint() {
                return false;
            }
            let spent = entry.messages > 0
                && (self.max_messages.is_some_and(|m| entry.messages >= m)
                    || self
                        .max_bytes
                        .is_some_and(|b| entry.sealed_bytes.saturating_add(len) > b));
            if spent {
                c.remove(&id);
                return false;
            }
            entry.messages += 1;
            entry.sealed_bytes = entry.sealed_bytes.saturating_add(len);
            true
        })
    }

    /// Records one sealed message of `len` bytes on the cached DEK of `kek`.
    fn count(&self, kek: &Kek, len: u64) {
        if self.max_messages.is_none() && self.max_bytes.is_none() {
            return;
        }
        self.with_entry(kek, |entry| {
            entry.messages += 1;
            entry.sealed_bytes = entry.sealed_bytes.saturating_add(len);
        });
    }

    /// The DEK of `kek`: from the cache when fresh, otherwise fetched (one
    /// request however many callers miss the same key at once).
    ///
    /// The cache is keyed by the whole private key document, not by the
    /// public key id: a cached DEK is served only to a caller presenting the
    /// same KEK that fetched it, so a key forged from a public key (made-up
    /// private fields) goes to the server, or to the local unwrap, and is
    /// refused there as an [`Error::InvalidKey`](crate::Error::InvalidKey).
    ///
    /// # Errors
    /// The transport's errors; for client-side unwrap also
    /// [`Error::Policy`](crate::Error::Policy), [`Error::UnwrapFailed`](crate::Error::UnwrapFailed) and
    /// [`Error::CorruptRecord`](crate::Error::CorruptRecord).
    pub async fn get(&self, kek: &Kek) -> Result<Dek> {
        Ok(self.get_with_state(kek).await?.0)
    }

    /// The DEK of `kek` for encrypting new data: refused with
    /// [`Error::KeyState`](crate::Error::KeyState) unless the key is active
    /// (as the server said when the DEK was fetched: a state change reaches
    /// a cached DEK within the cache TTL).
    async fn get_for_encrypt(&self, kek: &Kek) -> Result<Dek> {
        let (dek, state) = self.get_with_state(kek).await?;
        match state {
            Some(state) if !state.allows_encrypt() => Err(crate::Error::KeyState {
                key_id: kek.id(),
                state,
            }),
            _ => Ok(dek),
        }
    }

    /// Seals `plaintext` into `out` in the chosen envelope version.
    async fn seal_into(
        &self,
        kek: &Kek,
        plaintext: &[u8],
        context: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let len = plaintext.len() as u64;
        let counted = self.charge(kek, len);
        let sealed = self.seal_unmetered(kek, plaintext, context, out).await;
        if sealed.is_ok() && !counted {
            // Sealed under a DEK fetched for this message: its first.
            self.count(kek, len);
        }
        sealed
    }

    /// [`KeyClient::seal_into`] without the DEK's message and byte count.
    async fn seal_unmetered(
        &self,
        kek: &Kek,
        plaintext: &[u8],
        context: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        out.clear();
        if self.envelope == envelope::Version::V1 {
            let dek = self.get_for_encrypt(kek).await?;
            return envelope::seal_into(&*self.suite, &kek.id(), &dek, context, plaintext, out);
        }
        // A fresh session is spent only if this process forks between its
        // making and its first message: try a few.
        for _ in 0..3 {
            let session = self.session(kek).await?;
            if let Some(sealed) = session.try_seal_into(&*self.suite, context, plaintext, out) {
                return sealed;
            }
            self.with_entry(kek, |entry| {
                if entry
                    .session
                    .as_ref()
                    .is_some_and(|s| Arc::ptr_eq(s, &session))
                {
                    entry.session = None;
                }
            });
        }
        Err(crate::Error::policy(
            "no envelope session could be started (is the process forking repeatedly?)",
        ))
    }

    /// Opens `ciphertext` (either envelope version) into `out`.
    async fn open_into(
        &self,
        kek: &Kek,
        ciphertext: &[u8],
        context: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        out.clear();
        let header = envelope::Header::parse(ciphertext)?;
        self.check_sealed_under(kek, &header.key_id).await?;
        if ciphertext[3] != envelope::VERSION_2 {
            let dek = self.get(kek).await?;
            return envelope::open_into(&*self.suite, &dek, context, ciphertext, out);
        }
        let cached = self.with_cache(|c| {
            let entry = c.get(&kek.id())?;
            if !self.fresh(entry) || *entry.kek != *kek.fingerprint() {
                return None;
            }
            let own = entry.session.as_ref().map(|s| s.key());
            own.into_iter()
                .chain(entry.opened.as_ref())
                .find(|key| key.is_for(ciphertext))
                .cloned()
        });
        if let Some(key) = cached {
            return key.open_into(&*self.suite, context, ciphertext, out);
        }
        let dek = self.get(kek).await?;
        if header.strength != dek.strength() {
            return Err(crate::Error::DecryptionFailed);
        }
        let key = Arc::new(envelope::SessionKey::derive(
            &*self.suite,
            &dek,
            header.salt,
        )?);
        key.open_into(&*self.suite, context, ciphertext, out)?;
        // Kept only once a message of the session authenticated: forged
        // salts cannot push out the key in use.
        self.with_entry(kek, |entry| entry.opened = Some(key));
        Ok(())
    }

    /// Runs `f` on the cache entry of `kek`'s key id if that entry was
    /// fetched with this very KEK document (fresh or not).
    fn with_entry(&self, kek: &Kek, f: impl FnOnce(&mut Entry)) {
        self.with_cache(|c| {
            if let Some(entry) = c.get_mut(&kek.id()) {
                if *entry.kek == *kek.fingerprint() {
                    f(entry);
                }
            }
        });
    }

    /// The envelope v2 session of `kek`'s DEK: the cached one while the
    /// DEK is fresh in the cache, for the same KEK document, and not spent;
    /// otherwise a new one (kept in the DEK's cache entry).
    async fn session(&self, kek: &Kek) -> Result<Arc<envelope::Session>> {
        let cached = self.with_cache(|c| {
            let entry = c.get(&kek.id())?;
            let usable = self.fresh(entry)
                && *entry.kek == *kek.fingerprint()
                && entry.state.is_none_or(|s| s.allows_encrypt());
            entry
                .session
                .as_ref()
                .filter(|s| usable && !s.is_spent())
                .cloned()
        });
        if let Some(session) = cached {
            return Ok(session);
        }
        // Checks the key's state, fetching the DEK if it is not cached.
        let dek = self.get_for_encrypt(kek).await?;
        let session = Arc::new(envelope::Session::new(&*self.suite, &kek.id(), &dek)?);
        self.with_entry(kek, |entry| {
            if entry.session.as_ref().is_none_or(|s| s.is_spent()) {
                entry.session = Some(Arc::clone(&session));
            }
        });
        Ok(session)
    }

    /// The DEK of `kek` and the key's state as last learnt.
    async fn get_with_state(&self, kek: &Kek) -> Result<(Dek, Option<crate::KeyState>)> {
        let id = kek.id();
        if let Some(found) = self.cached(kek) {
            return Ok(found);
        }
        let gate = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(inflight.entry(id).or_default())
        };
        let result = {
            let _turn = gate.lock().await;
            // Someone ahead of us may have fetched it meanwhile.
            match self.cached(kek) {
                Some(found) => Ok(found),
                None => match self.fetch(kek).await {
                    Ok(dek) => {
                        let state = self.learn_state(&id).await;
                        self.insert(kek, dek.clone(), state);
                        Ok((dek, state))
                    }
                    Err(e) => Err(e),
                },
            }
        };
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        // The map's Arc plus ours: nobody else is waiting, so forget the gate.
        if Arc::strong_count(&gate) <= 2 {
            inflight.remove(&id);
        }
        result
    }

    /// The former name of [`KeyClient::get`].
    ///
    /// # Errors
    /// As for [`KeyClient::get`].
    #[deprecated(note = "use get (the one name for the DEK of a KEK)")]
    pub async fn dek(&self, kek: &Kek) -> Result<Dek> {
        self.get(kek).await
    }

    /// Asks the server for a KEK of `strength` (where
    /// [`Encryption::generate`] takes the server's minimum strength).
    ///
    /// # Errors
    /// [`Error::Policy`](crate::Error::Policy) for a strength below the
    /// server's minimum; the transport's errors.
    pub async fn generate_with_strength(&self, strength: Strength) -> Result<Kek> {
        self.transport.generate(Some(strength)).await
    }

    /// Asks the server for a KEK of `strength` and `alg` (`None`: the
    /// server's). A server older than KEK algorithms refuses an algorithm
    /// with "invalid parameters" (code -32602).
    ///
    /// ```
    /// # keyserver::testing::run(async {
    /// use keyserver::{KekAlg, Strength};
    /// use keyserver::backends::RustCrypto;
    ///
    /// let (_server, client) = keyserver::testing::set_up_rpc(RustCrypto::new());
    /// // The in-process server allows only its own algorithm (rsa).
    /// let err = client.generate_with(Some(Strength::S256), Some(KekAlg::Ec)).await.unwrap_err();
    /// assert_eq!(err.code(), 4);
    /// # Ok::<(), keyserver::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// [`Error::Policy`](crate::Error::Policy) for a strength or an
    /// algorithm the server does not offer; the transport's errors.
    pub async fn generate_with(
        &self,
        strength: Option<Strength>,
        alg: Option<crate::KekAlg>,
    ) -> Result<Kek> {
        let kek = self.transport.generate_with_alg(strength, alg).await?;
        if alg.is_some_and(|a| a != kek.alg())
            || strength.is_some_and(|s| kek.security_bits() < s.bits())
        {
            return Err(crate::Error::Transport {
                message: "the server answered with a KEK other than the one asked for".into(),
                source: None,
            });
        }
        Ok(kek)
    }

    /// Whether the server stores a key under `key_id`.
    ///
    /// # Errors
    /// The transport's errors.
    pub async fn contains(&self, key_id: &KeyId) -> Result<bool> {
        self.transport.contains(key_id).await
    }

    /// The stored record of `key_id` (what client-side unwrap fetches).
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound); the transport's errors.
    pub async fn get_wrapped(&self, key_id: &KeyId) -> Result<crate::WrappedDek> {
        self.transport.get_wrapped(key_id).await
    }

    /// The server's status.
    ///
    /// # Errors
    /// The transport's errors.
    pub async fn status(&self) -> Result<crate::Status> {
        self.transport.status().await
    }

    /// The lifecycle of `key_id` (`describe`).
    ///
    /// # Errors
    /// The transport's errors.
    pub async fn describe(&self, key_id: &KeyId) -> Result<crate::KeyInfo> {
        self.transport.describe(key_id).await
    }

    /// Rotates the key of `kek` (`rotate`): the new KEK's record wraps the
    /// same DEK; the old key is deactivated. The old key's cached DEK is
    /// dropped.
    ///
    /// # Errors
    /// The transport's errors.
    pub async fn rotate(&self, kek: &Kek, strength: Option<Strength>) -> Result<Kek> {
        let rotated = self.transport.rotate(kek, strength).await;
        self.with_cache(|c| c.remove(&kek.id()));
        rotated
    }

    /// A state change of `target` (`suspend`, `resume`, `compromised`,
    /// `destroy`, `cancel_destroy`); its cached DEK is dropped.
    ///
    /// # Errors
    /// The transport's errors.
    pub async fn change(
        &self,
        change: crate::Change,
        target: &crate::Target,
    ) -> Result<crate::KeyInfo> {
        let changed = self.transport.change(change, target).await;
        self.with_cache(|c| c.remove(&target.key_id()));
        changed
    }

    /// A page of keys (`list_keys`).
    ///
    /// # Errors
    /// The transport's errors.
    pub async fn list_keys(&self, filter: &crate::KeyFilter) -> Result<crate::KeyPage> {
        self.transport.list_keys(filter).await
    }

    /// [`Encryption::encrypt_with_context`] into the caller's buffer: `out`
    /// is cleared, then holds the envelope. For callers that seal many small
    /// messages: with the DEK cached and `out` reused, a message costs no
    /// allocation and one copy (see [`envelope::seal_into`]).
    ///
    /// # Errors
    /// As for [`Encryption::encrypt_with_context`]; on failure `out` is
    /// left empty.
    ///
    /// # Example
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use keyserver::{Encryption, KeyServer};
    /// use keyserver::backends::{MemoryStorage, RustCrypto};
    /// use keyserver::transports::InProcess;
    ///
    /// let client = InProcess::client(Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new())));
    /// let kek = client.generate().await?;
    /// let (mut sealed, mut opened) = (Vec::new(), zeroize::Zeroizing::new(Vec::new()));
    /// for message in [&b"one"[..], b"two", b"three"] {
    ///     client.encrypt_into(&kek, message, b"ctx", &mut sealed).await?;
    ///     client.decrypt_into(&kek, &sealed, b"ctx", &mut opened).await?;
    ///     assert_eq!(&opened[..], message);
    /// }
    /// # Ok::<(), keyserver::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn encrypt_into(
        &self,
        kek: &Kek,
        plaintext: &[u8],
        context: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        self.seal_into(kek, plaintext, context, out).await
    }

    /// [`Encryption::decrypt_with_context`] into the caller's buffer: `out`
    /// is cleared, then holds the plaintext (see [`envelope::open_into`]:
    /// the ciphertext is only read, nothing unauthenticated reaches `out`,
    /// and wiping the buffer is the caller's, for example with
    /// `zeroize::Zeroizing<Vec<u8>>`).
    ///
    /// # Errors
    /// As for [`Encryption::decrypt_with_context`]; on failure `out` is
    /// left empty.
    pub async fn decrypt_into(
        &self,
        kek: &Kek,
        ciphertext: &[u8],
        context: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        self.open_into(kek, ciphertext, context, out).await
    }

    /// Encrypts everything `input` gives into `output` in the stream format
    /// ([`crate::stream`]: constant memory, any length), with this client's
    /// suite and a DEK from its cache. Returns the plaintext bytes read.
    ///
    /// The reading and writing are blocking I/O: on a multi-threaded Tokio
    /// runtime they run in place of the task without stalling others
    /// ([`tokio::task::block_in_place`]); elsewhere they run inline.
    ///
    /// # Errors
    /// The errors of [`KeyClient::get`]; [`Error::Io`](crate::Error::Io) if
    /// reading or writing fails.
    ///
    /// # Example
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use keyserver::{Encryption, KeyServer};
    /// use keyserver::backends::{MemoryStorage, RustCrypto};
    /// use keyserver::transports::InProcess;
    ///
    /// let client = InProcess::client(Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new())));
    /// let kek = client.generate().await?;
    /// let mut sealed = Vec::new();
    /// client.encrypt_stream(&kek, &b"a long file"[..], &mut sealed).await?;
    /// let mut opened = Vec::new();
    /// client.decrypt_stream(&kek, &sealed[..], &mut opened).await?;
    /// assert_eq!(opened, b"a long file");
    /// # Ok::<(), keyserver::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn encrypt_stream(
        &self,
        kek: &Kek,
        input: impl Read + Send,
        output: impl Write + Send,
    ) -> Result<u64> {
        let dek = self.get_for_encrypt(kek).await?;
        let id = kek.id();
        blocking_io(|| stream::encrypt(&*self.suite, &id, &dek, input, output))
    }

    /// Decrypts a stream written by [`KeyClient::encrypt_stream`] (or the
    /// `keyserver encrypt` command) from `input` into `output`. The header is
    /// read first: a stream sealed under another key is refused before the
    /// DEK is asked for. Returns the plaintext bytes written.
    ///
    /// Nothing unauthenticated is written: each chunk is checked before it
    /// is written, and a truncated or reordered stream is an error. On error,
    /// `output` may hold the authentic chunks before the failure: write to a
    /// temporary file and keep it only on success.
    ///
    /// # Errors
    /// [`Error::KeyMismatch`](crate::Error::KeyMismatch),
    /// [`Error::MalformedCiphertext`](crate::Error::MalformedCiphertext),
    /// [`Error::DecryptionFailed`](crate::Error::DecryptionFailed); the errors
    /// of [`KeyClient::get`]; [`Error::Io`](crate::Error::Io).
    pub async fn decrypt_stream(
        &self,
        kek: &Kek,
        mut input: impl Read + Send,
        output: impl Write + Send,
    ) -> Result<u64> {
        let header = blocking_io(|| stream::StreamHeader::read_from(&mut input))?;
        self.check_sealed_under(kek, &header.key_id).await?;
        let dek = self.get(kek).await?;
        blocking_io(|| stream::decrypt_after_header(&*self.suite, &dek, &header, input, output))
    }

    /// Re-encrypts a stream sealed under `old` (or a key `old` was rotated
    /// from) so that it opens under `new` only: decrypts and encrypts in
    /// one pass, with the plaintext only in memory, a few chunks at a time,
    /// and wiped. For rekeying data after a compromise: a rotated KEK wraps
    /// the same DEK, which the compromised KEK has already exposed, so data
    /// must move to a new key made by `generate`. Returns the plaintext
    /// bytes.
    ///
    /// `old` may be in any state that still gives its DEK (active,
    /// deactivated, compromised); `new` must be active. The new stream is
    /// finished only once the old one verified to its end (see
    /// [`stream::reencrypt`]); on error write nothing you keep.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use keyserver::{Encryption, KeyServer};
    /// use keyserver::backends::{MemoryStorage, RustCrypto};
    /// use keyserver::transports::InProcess;
    ///
    /// let client = InProcess::client(Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new())));
    /// let (old, new) = (client.generate().await?, client.generate().await?);
    /// let mut sealed = Vec::new();
    /// client.encrypt_stream(&old, &b"payroll"[..], &mut sealed).await?;
    /// let mut rekeyed = Vec::new();
    /// client.reencrypt_stream(&old, &new, &sealed[..], &mut rekeyed).await?;
    /// let mut opened = Vec::new();
    /// client.decrypt_stream(&new, &rekeyed[..], &mut opened).await?;
    /// assert_eq!(opened, b"payroll");
    /// assert!(client.decrypt_stream(&old, &rekeyed[..], &mut Vec::new()).await.is_err());
    /// # Ok::<(), keyserver::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// As for [`KeyClient::decrypt_stream`] with `old` (first) and
    /// [`KeyClient::encrypt_stream`] with `new`;
    /// [`Error::Policy`](crate::Error::Policy) if `new` wraps the same DEK
    /// as `old` (a key rotated from it, or itself).
    pub async fn reencrypt_stream(
        &self,
        old: &Kek,
        new: &Kek,
        mut input: impl Read + Send,
        output: impl Write + Send,
    ) -> Result<u64> {
        let header = blocking_io(|| stream::StreamHeader::read_from(&mut input))?;
        self.check_sealed_under(old, &header.key_id).await?;
        let old_dek = self.get(old).await?;
        let new_dek = self.get_for_encrypt(new).await?;
        // A key rotated from the old one (or the old one itself) wraps the
        // same DEK: moving data to it changes nothing a leak exposed.
        if same_key(old_dek.as_bytes(), new_dek.as_bytes()) {
            return Err(crate::Error::policy(
                "the new KEK wraps the same DEK as the old one (a rotation, or the same key): \
                 re-encrypt under a key made by generate",
            ));
        }
        let new_id = new.id();
        blocking_io(|| {
            stream::reencrypt(
                &*self.suite,
                &old_dek,
                &header,
                input,
                &new_id,
                &new_dek,
                output,
            )
        })
    }

    /// The key's state, from `describe`; `None` when the server does not
    /// say (an older server without the method, or a principal not granted
    /// it: the server still refuses the DEK of a key whose state forbids
    /// it, but this client cannot know to stop encrypting under a
    /// deactivated one).
    async fn learn_state(&self, key_id: &KeyId) -> Option<crate::KeyState> {
        match self.transport.describe(key_id).await {
            Ok(info) => Some(info.state),
            Err(e) => {
                tracing::debug!(
                    target: "keyserver::client",
                    "the state of key {key_id} is unknown (describe: error {})",
                    e.code()
                );
                None
            }
        }
    }

    /// Whether the key of `kek` was made by rotating (once or more)
    /// `ancestor`: its record wraps the same DEK, so data sealed under
    /// `ancestor` opens with it.
    async fn rotated_from(&self, kek: &Kek, ancestor: &KeyId) -> Result<bool> {
        let mut id = kek.id();
        for _ in 0..MAX_ROTATIONS {
            match self.transport.describe(&id).await?.rotated_from {
                Some(from) if from == *ancestor => return Ok(true),
                Some(from) => id = from,
                None => return Ok(false),
            }
        }
        Ok(false)
    }

    /// Refuses data sealed under another key than `kek`'s, unless `kek`
    /// was rotated from it.
    async fn check_sealed_under(&self, kek: &Kek, sealed_under: &KeyId) -> Result<()> {
        if *sealed_under == kek.id() || self.rotated_from(kek, sealed_under).await.unwrap_or(false)
        {
            return Ok(());
        }
        Err(crate::Error::KeyMismatch {
            expected: *sealed_under,
            given: kek.id(),
        })
    }

    async fn fetch(&self, kek: &Kek) -> Result<Dek> {
        match self.mode {
            UnwrapMode::Server => self.transport.get_key(kek).await,
            UnwrapMode::Client => {
                let record = self.transport.get_wrapped(&kek.id()).await?;
                unwrap_record(
                    Arc::clone(&self.suite),
                    kek,
                    record,
                    self.min_strength,
                    None,
                )
                .await
            }
        }
    }
}

/// Runs blocking I/O without stalling the other tasks of a multi-threaded
/// runtime; inline anywhere else (a current-thread runtime, no runtime).
/// Whether two keys are equal, in time that depends only on their lengths.
fn same_key(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

fn blocking_io<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl<T: Transport> fmt::Display for KeyClient<T> {
    /// `<KeyClient 'URL'>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<KeyClient '{}'>", self.transport.endpoint())
    }
}

impl<T: Transport> fmt::Debug for KeyClient<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyClient")
            .field("endpoint", &self.transport.endpoint())
            .field("suite", &self.suite.name())
            .field("cache_ttl", &self.cache_ttl)
            .field("capacity", &self.capacity)
            .field("mode", &self.mode)
            .field("envelope", &self.envelope)
            .field("cached", &self.cached_len())
            .finish()
    }
}

#[async_trait]
impl<T: Transport> Encryption for KeyClient<T> {
    async fn generate(&self) -> Result<Kek> {
        self.transport.generate(None).await
    }

    async fn get(&self, kek: &Kek) -> Result<Dek> {
        KeyClient::get(self, kek).await
    }

    async fn encrypt_with_context(
        &self,
        kek: &Kek,
        plaintext: &[u8],
        context: &[u8],
    ) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.seal_into(kek, plaintext, context, &mut out).await?;
        Ok(out)
    }

    async fn decrypt_with_context(
        &self,
        kek: &Kek,
        ciphertext: &[u8],
        context: &[u8],
    ) -> Result<Plaintext> {
        let mut out = Vec::new();
        self.open_into(kek, ciphertext, context, &mut out).await?;
        Ok(Plaintext::from(out))
    }
}

/// Longest chain of rotations followed back to the key data was sealed
/// under.
const MAX_ROTATIONS: usize = 32;

#[cfg(test)]
mod tests;
