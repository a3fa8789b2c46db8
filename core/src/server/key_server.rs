//! [`KeyServer`]: the key server composed of a cipher suite and a storage.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::api::KeyService;
use crate::blocking::blocking;
use crate::envelope;
use crate::pool::KekPool;
use crate::record::{unwrap_record, wrap_dek};
use crate::work::Limiter;
use crate::{
    CipherSuite, Curve, Dek, Encryption, Error, Kek, KekAlg, KeyId, KeyStorage, Plaintext, Result,
    Status, Strength, WrappedDek,
};

/// A key server: generates KEK/DEK pairs, stores only the wrapped DEK, and
/// serves DEKs to whoever presents the KEK.
///
/// `C` chooses the cryptography, `S` the storage; both are fixed at compile
/// time. The configured [`Strength`] is the deployment's floor: `generate()`
/// uses it, a weaker strength is refused, and so is any KEK weaker than it or
/// than the DEK it wraps.
///
/// Slow RSA operations (key generation, unwrap) run on Tokio's blocking pool
/// when called inside a Tokio runtime, so they never stall other requests.
///
/// # Example
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use keyserver::KeyServer;
/// use keyserver::backends::{MemoryStorage, RustCrypto};
///
/// let keys = KeyServer::new(RustCrypto::new(), MemoryStorage::new());
/// assert_eq!(keys.to_string(), "<KeyServer (0)>");
/// let kek = keys.generate().await?;
/// assert_eq!(keys.to_string(), "<KeyServer (1)>");
/// assert!(keys.contains(&kek.id()).await?);
///
/// let sealed = keys.encrypt_with_context(&kek, b"secret", b"user=42").await?;
/// let opened = keys.decrypt_with_context(&kek, &sealed, b"user=42").await?;
/// assert_eq!(&opened[..], b"secret");
/// assert!(keys.decrypt_with_context(&kek, &sealed, b"user=43").await.is_err());
/// # Ok::<(), keyserver::Error>(())
/// # }).unwrap();
/// ```
pub struct KeyServer<C, S> {
    pub(crate) suite: Arc<C>,
    pub(crate) storage: S,
    pub(crate) strength: Strength,
    /// Strengths `generate` may ask for; `None`: any at or above `strength`.
    allowed: Option<Vec<Strength>>,
    /// The KEK algorithm of `generate` without one, and of `rotate`.
    pub(crate) kek_alg: KekAlg,
    /// Algorithms `generate` may ask for; `None`: only `kek_alg`.
    allowed_algs: Option<Vec<KekAlg>>,
    pool: Option<KekPool>,
    generation: Limiter,
    /// Lifecycle: the cryptoperiod, the destroy window, one state change
    /// at a time, and the live keys each owner has (counted on first use).
    pub(crate) lifecycle: crate::keeper::Keeper,
    /// KEK documents that passed the key-pair check here (by fingerprint).
    pub(crate) checked: crate::record::CheckedKeks,
}

/// Requests that may wait for a key-generation worker by default.
pub const DEFAULT_GENERATE_QUEUE: usize = 16;

/// Key-generation workers by default: one per core.
pub fn default_generate_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

impl<C: CipherSuite, S: KeyStorage> KeyServer<C, S> {
    /// A key server at the default strength (128 bits: RSA-3072 wrapping
    /// AES-128-GCM).
    pub fn new(suite: C, storage: S) -> Self {
        KeyServer {
            suite: Arc::new(suite),
            storage,
            strength: Strength::default(),
            allowed: None,
            kek_alg: KekAlg::default(),
            allowed_algs: None,
            pool: None,
            generation: Limiter::new(
                "key-generation",
                default_generate_workers(),
                DEFAULT_GENERATE_QUEUE,
            ),
            lifecycle: crate::keeper::Keeper::default(),
            checked: crate::record::CheckedKeks::new(),
        }
    }

    /// Limits the strengths `generate` may ask for to `strengths` (each
    /// still at or above the minimum); others are refused with
    /// [`Error::Policy`] (code 4). Without this, any strength at or above
    /// the minimum may be asked for. `generate` without a strength always
    /// uses the minimum. A server open to a network should allow only what
    /// its users need: an RSA-15360 key (strength 256) costs minutes of CPU.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use keyserver::{KeyServer, Strength};
    /// use keyserver::backends::{MemoryStorage, RustCrypto};
    ///
    /// let keys = KeyServer::new(RustCrypto::new(), MemoryStorage::new())
    ///     .with_allowed_strengths(&[Strength::S128]);
    /// let err = keys.generate_with_strength(Strength::S256).await.unwrap_err();
    /// assert_eq!(err.code(), 4);
    /// # });
    /// ```
    pub fn with_allowed_strengths(mut self, strengths: &[Strength]) -> Self {
        let mut allowed = strengths.to_vec();
        allowed.sort();
        allowed.dedup();
        self.allowed = Some(allowed);
        self
    }

    /// The strengths `generate` may ask for: those set by
    /// [`KeyServer::with_allowed_strengths`] at or above the minimum, or
    /// every strength at or above the minimum.
    pub fn allowed_strengths(&self) -> Vec<Strength> {
        [Strength::S128, Strength::S192, Strength::S256]
            .into_iter()
            .filter(|s| *s >= self.strength)
            .filter(|s| self.allowed.as_ref().is_none_or(|a| a.contains(s)))
            .collect()
    }

    /// Sets the KEK algorithm: what `generate` without an algorithm makes,
    /// and what `rotate` moves a key to when the server no longer allows
    /// the key's own algorithm (a hybrid key is never moved to a classical
    /// one). Default [`KekAlg::Rsa`]. With
    /// [`KekAlg::Ec`], a strength-256 KEK (P-521) takes about a millisecond
    /// to make instead of minutes (RSA-15360).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use keyserver::{Curve, KekAlg, KeyServer, Strength};
    /// use keyserver::backends::{MemoryStorage, RustCrypto};
    ///
    /// let keys = KeyServer::new(RustCrypto::new(), MemoryStorage::new())
    ///     .with_kek_alg(KekAlg::Ec)
    ///     .with_min_strength(Strength::S256);
    /// let kek = keys.generate().await?;
    /// assert_eq!(kek.curve(), Some(Curve::P521));
    /// assert_eq!(keys.get(&kek).await?.strength(), Strength::S256);
    /// // Only the configured algorithm unless others are allowed.
    /// assert_eq!(keys.generate_with(Strength::S256, KekAlg::Rsa).await.unwrap_err().code(), 4);
    /// # Ok::<(), keyserver::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn with_kek_alg(mut self, alg: KekAlg) -> Self {
        self.kek_alg = alg;
        // A pool holds RSA keys only.
        if alg != KekAlg::Rsa {
            self.pool = None;
        }
        self
    }

    /// The KEK algorithm ([`KeyServer::with_kek_alg`]).
    pub fn kek_alg(&self) -> KekAlg {
        self.kek_alg
    }

    /// Lets `generate` ask for any of `algs` as well as the configured one
    /// (by default only the configured one may be made).
    ///
    /// ```
    /// # {
    /// use keyserver::{KekAlg, KeyServer};
    /// use keyserver::backends::{MemoryStorage, RustCrypto};
    ///
    /// let keys = KeyServer::new(RustCrypto::new(), MemoryStorage::new())
    ///     .with_allowed_kek_algs(&[KekAlg::Ec]);
    /// assert_eq!(keys.allowed_kek_algs(), vec![KekAlg::Rsa, KekAlg::Ec]);
    /// # }
    /// ```
    pub fn with_allowed_kek_algs(mut self, algs: &[KekAlg]) -> Self {
        let mut allowed = algs.to_vec();
        allowed.sort();
        allowed.dedup();
        self.allowed_algs = Some(allowed);
        self
    }

    /// The KEK algorithms `generate` may ask for: the configured one and
    /// those of [`KeyServer::with_allowed_kek_algs`].
    pub fn allowed_kek_algs(&self) -> Vec<KekAlg> {
        KekAlg::ALL
            .into_iter()
            .filter(|a| {
                *a == self.kek_alg || self.allowed_algs.as_ref().is_some_and(|x| x.contains(a))
            })
            .collect()
    }

    /// Checks that this server's suite can make and use KEKs of `alg`: a
    /// suite without EC support is refused here, at start, rather than on
    /// the first `generate` (a policy error naming the suite).
    ///
    /// # Errors
    /// [`Error::Policy`] if the suite does not offer the algorithm.
    pub fn check_kek_alg_support(&self, alg: KekAlg) -> Result<()> {
        match alg {
            KekAlg::Rsa => Ok(()),
            KekAlg::Ec => crate::crypto::ec_kek(&*self.suite).map(drop),
            KekAlg::HybridPq => {
                crate::crypto::ec_kek(&*self.suite)?;
                crate::crypto::hybrid_kek(&*self.suite).map(drop)
            }
        }
    }

    /// Runs key generation (when the pool has no key ready) on at most
    /// `workers` threads at once, with up to `queue` requests waiting; a
    /// request beyond that is refused at once with [`Error::Busy`] (code
    /// 12). A worker is held until its key is made, even if the request that
    /// asked for it was abandoned, so the CPU spent on generation never
    /// exceeds `workers` cores. Defaults: one worker per core,
    /// [`DEFAULT_GENERATE_QUEUE`] waiting.
    ///
    /// ```
    /// # {
    /// use keyserver::KeyServer;
    /// use keyserver::backends::{MemoryStorage, RustCrypto};
    ///
    /// let keys = KeyServer::new(RustCrypto::new(), MemoryStorage::new()).with_generate_limit(2, 8);
    /// assert_eq!(keys.generate_limit(), (2, 8));
    /// # }
    /// ```
    pub fn with_generate_limit(mut self, workers: usize, queue: usize) -> Self {
        self.generation = Limiter::new("key-generation", workers, queue);
        self
    }

    /// Key-generation workers and queue length
    /// ([`KeyServer::with_generate_limit`]).
    pub fn generate_limit(&self) -> (usize, usize) {
        (self.generation.workers(), self.generation.queue())
    }

    /// Keeps up to `size` RSA key pairs of the configured strength ready,
    /// generated by `workers` background threads, so that `generate()` costs
    /// little more than the storage write. `size` 0 generates inline (the
    /// default). Pooled keys live only in memory and are wiped when the server
    /// is dropped. The pool follows the configured strength, whichever of
    /// this and [`KeyServer::with_strength`] is called first.
    ///
    /// ```
    /// # {
    /// use keyserver::KeyServer;
    /// use keyserver::backends::{MemoryStorage, RustCrypto};
    ///
    /// let keys = KeyServer::new(RustCrypto::new(), MemoryStorage::new()).with_kek_pool(4, 1);
    /// assert_eq!(keys.kek_pool_capacity(), 4);
    /// # }
    /// ```
    pub fn with_kek_pool(mut self, size: usize, workers: usize) -> Self {
        self.pool = (size > 0 && self.kek_alg == KekAlg::Rsa).then(|| {
            KekPool::start(
                Arc::clone(&self.suite),
                self.strength.rsa_bits(),
                size,
                workers,
            )
        });
        self
    }

    /// Keys ready in the pool now (0 without a pool).
    pub fn kek_pool_ready(&self) -> u64 {
        // The count runs ahead by the keys workers hold while the pool is
        // full: never report more than it holds.
        self.pool
            .as_ref()
            .map_or(0, |p| p.ready().min(p.size() as u64))
    }

    /// How many `generate()` calls the pool has served (the others generated
    /// inline).
    pub fn kek_pool_served(&self) -> u64 {
        self.pool.as_ref().map_or(0, KekPool::served)
    }

    /// The pool's capacity (0 without a pool).
    pub fn kek_pool_capacity(&self) -> usize {
        self.pool.as_ref().map_or(0, KekPool::size)
    }

    /// Sets the minimum strength: the lowest strength this server accepts,
    /// and the one `generate` without a strength uses (the client's
    /// counterpart is [`KeyClient::with_min_strength`](crate::KeyClient::with_min_strength)).
    ///
    /// ```
    /// # {
    /// use keyserver::{KeyServer, Strength};
    /// use keyserver::backends::{MemoryStorage, RustCrypto};
    ///
    /// let keys = KeyServer::new(RustCrypto::new(), MemoryStorage::new())
    ///     .with_min_strength(Strength::S192);
    /// assert_eq!(keys.min_strength(), Strength::S192);
    /// # }
    /// ```
    pub fn with_min_strength(mut self, strength: Strength) -> Self {
        self.strength = strength;
        // A pool of keys of the old size would never be used: restart it.
        if let Some(pool) = self.pool.take() {
            let (size, workers) = (pool.size(), pool.workers());
            drop(pool);
            self = self.with_kek_pool(size, workers);
        }
        self
    }

    /// The minimum strength ([`KeyServer::with_min_strength`]).
    pub fn min_strength(&self) -> Strength {
        self.strength
    }

    /// The former name of [`KeyServer::with_min_strength`].
    #[deprecated(note = "use with_min_strength")]
    pub fn with_strength(self, strength: Strength) -> Self {
        self.with_min_strength(strength)
    }

    /// The former name of [`KeyServer::min_strength`].
    #[deprecated(note = "use min_strength")]
    pub fn strength(&self) -> Strength {
        self.strength
    }

    /// The cipher suite.
    pub fn suite(&self) -> &C {
        &self.suite
    }

    /// The storage backend.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Generates a KEK at the configured strength; see [`KeyServer::generate_with_strength`].
    ///
    /// # Errors
    /// As for [`KeyServer::generate_with_strength`].
    pub async fn generate(&self) -> Result<Kek> {
        self.generate_with_strength(self.strength).await
    }

    /// The original key server's workflow: make a KEK pair of `strength`, make a random DEK,
    /// wrap the DEK with the KEK's public half, store only the wrapped DEK
    /// under the KEK's id, and return the private KEK. The KEK is returned
    /// only once the record is stored.
    ///
    /// # Errors
    /// [`Error::Policy`] if `strength` is below the configured strength or
    /// not among the allowed ones; [`Error::Busy`] if every key-generation
    /// worker is busy and the queue is full; [`Error::Crypto`] if key
    /// generation fails; any storage error from the `put` (then no KEK is
    /// handed out).
    pub async fn generate_with_strength(&self, strength: Strength) -> Result<Kek> {
        self.generate_with(strength, self.kek_alg).await
    }

    /// As [`KeyServer::generate_with_strength`], with a KEK of `alg`.
    ///
    /// # Errors
    /// As for [`KeyServer::generate_with_strength`]; [`Error::Policy`] for
    /// an algorithm this server does not allow or its suite does not offer.
    pub async fn generate_with(&self, strength: Strength, alg: KekAlg) -> Result<Kek> {
        let (kek, record) = self.new_key(strength, alg).await?;
        self.storage.put(&record).await?;
        Ok(kek)
    }

    /// A new KEK of `alg` and `strength` and the record of a new DEK
    /// wrapped under it, not yet stored.
    pub(crate) async fn new_key(
        &self,
        strength: Strength,
        alg: KekAlg,
    ) -> Result<(Kek, WrappedDek)> {
        self.check_strength(strength)?;
        self.check_alg(alg)?;
        let kek = self.new_kek(alg, strength).await?;

        let mut dek = zeroize::Zeroizing::new(vec![0u8; strength.aes_key_len()]);
        self.suite.fill_random(&mut dek)?;
        // The public half is not kept: only the wrapped DEK is stored.
        let record = wrap_dek(&*self.suite, &kek, strength, &dek, self.lifecycle.now())?;
        drop(dek);
        Ok((kek, record))
    }

    /// A new KEK of `alg` and `strength`: from the pool if it holds one,
    /// otherwise made on a key-generation worker.
    pub(crate) async fn new_kek(&self, alg: KekAlg, strength: Strength) -> Result<Kek> {
        let bits = strength.rsa_bits();
        let pooled = match alg {
            KekAlg::Rsa => self.pool.as_ref().and_then(|pool| pool.take(bits)),
            KekAlg::Ec | KekAlg::HybridPq => None,
        };
        match pooled {
            Some(der) => Kek::from_pkcs8_der(&der),
            None => {
                let worker = self.generation.acquire().await?;
                let suite = Arc::clone(&self.suite);
                blocking(move || {
                    // Held until the key is made, whoever still waits for it.
                    let _worker = worker;
                    let der = match alg {
                        KekAlg::Rsa => suite.generate_rsa(bits)?,
                        KekAlg::Ec => crate::crypto::ec_kek(&*suite)?
                            .generate_ec(Curve::for_strength(strength))?,
                        KekAlg::HybridPq => crate::hybrid::generate(
                            &*suite,
                            crate::HybridKem::for_strength(strength),
                        )?,
                    };
                    Kek::from_any_der(&der)
                })
                .await?
            }
        }
    }

    /// Checks that `alg` may be asked for.
    pub(crate) fn check_alg(&self, alg: KekAlg) -> Result<()> {
        if self.allowed_kek_algs().contains(&alg) {
            return Ok(());
        }
        let allowed: Vec<&str> = self.allowed_kek_algs().iter().map(|a| a.name()).collect();
        Err(Error::policy(format!(
            "KEK algorithm {alg} is not offered by this server (allowed: {})",
            allowed.join(", ")
        )))
    }

    /// Checks that `strength` may be asked for: at or above the minimum and
    /// among the allowed.
    pub(crate) fn check_strength(&self, strength: Strength) -> Result<()> {
        if strength < self.strength {
            return Err(Error::policy(format!(
                "strength {strength} is below this server's minimum of {}",
                self.strength
            )));
        }
        if self
            .allowed
            .as_ref()
            .is_some_and(|a| !a.contains(&strength))
        {
            let allowed: Vec<String> = self
                .allowed_strengths()
                .iter()
                .map(ToString::to_string)
                .collect();
            return Err(Error::policy(format!(
                "strength {strength} is not offered by this server (allowed: {})",
                allowed.join(", ")
            )));
        }
        Ok(())
    }

    /// The DEK stored under `kek`, unwrapped with it (server-side unwrap).
    ///
    /// # Errors
    /// [`Error::NotFound`] if no record is stored under `kek.id()`;
    /// [`Error::Policy`] if the KEK is weaker than the DEK or the configured
    /// strength; [`Error::UnwrapFailed`] if it does not open the record;
    /// storage errors as they come.
    pub async fn get(&self, kek: &Kek) -> Result<Dek> {
        // Proof of possession before anything about the key is told: a
        // forged KEK (someone's public key with a made-up private part)
        // gets one answer whatever the key's state, or whether it exists.
        self.check_possession(kek).await?;
        // The record and the key's state in one read (one round trip).
        let (record, meta) = self.record_and_meta(&kek.id()).await?;
        let Some(record) = record else {
            // A destroyed key's record is gone: say "destroyed", not "not
            // found".
            self.decrypt_allowed(&kek.id(), meta.as_ref()).await?;
            return Err(Error::NotFound { key_id: kek.id() });
        };
        // The KEK is checked (and opens the record) before the key's state
        // is told: a wrong or forged KEK learns nothing of it.
        let dek = unwrap_record(
            Arc::clone(&self.suite),
            kek,
            record,
            self.strength,
            Some(&self.checked),
        )
        .await?;
        self.decrypt_allowed(&kek.id(), meta.as_ref()).await?;
        Ok(dek)
    }

    /// The stored record under `key_id`, for client-side unwrap.
    ///
    /// # Errors
    /// [`Error::NotFound`] and storage errors; [`Error::KeyState`] for a
    /// key whose state gives no DEK (suspended, destroy-pending,
    /// destroyed).
    pub async fn get_wrapped(&self, key_id: &KeyId) -> Result<WrappedDek> {
        // The record and the key's state in one read (one round trip).
        let (record, meta) = self.record_and_meta(key_id).await?;
        self.decrypt_allowed(key_id, meta.as_ref()).await?;
        let record = record.ok_or(Error::NotFound { key_id: *key_id })?;
        if record.is_sealed() {
            // Sealed at rest, and this server cannot unseal it: no client
            // could open it either.
            return Err(record.sealed_error());
        }
        Ok(record)
    }

    /// Encrypts `plaintext` under the DEK of `kek` with an empty context.
    ///
    /// # Errors
    /// As for [`KeyServer::encrypt_with_context`].
    pub async fn encrypt(&self, kek: &Kek, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.encrypt_with_context(kek, plaintext, &[]).await
    }

    /// Decrypts a ciphertext made under `kek` with an empty context.
    ///
    /// # Errors
    /// As for [`KeyServer::decrypt_with_context`].
    pub async fn decrypt(&self, kek: &Kek, ciphertext: &[u8]) -> Result<Plaintext> {
        self.decrypt_with_context(kek, ciphertext, &[]).await
    }

    /// Encrypts `plaintext` under the DEK of `kek`, binding `context` as
    /// associated data (it must be given again to decrypt). See
    /// [`envelope`](crate::envelope) for the format.
    ///
    /// # Errors
    /// As for [`KeyServer::get`], and [`Error::TooLarge`].
    pub async fn encrypt_with_context(
        &self,
        kek: &Kek,
        plaintext: &[u8],
        context: &[u8],
    ) -> Result<Vec<u8>> {
        self.check_encrypt(&kek.id()).await?;
        let dek = self.get(kek).await?;
        // Envelope v2, as `KeyClient` writes: one session per call.
        let session = envelope::Session::new(&*self.suite, &kek.id(), &dek)?;
        let mut sealed = Vec::new();
        session.seal_into(&*self.suite, context, plaintext, &mut sealed)?;
        Ok(sealed)
    }

    /// Decrypts a ciphertext made under `kek` with the same `context`.
    ///
    /// # Errors
    /// [`Error::MalformedCiphertext`] for a structure this version cannot read;
    /// [`Error::KeyMismatch`] if it was sealed under another KEK;
    /// [`Error::DecryptionFailed`] if it was altered or the context differs;
    /// and the errors of [`KeyServer::get`].
    pub async fn decrypt_with_context(
        &self,
        kek: &Kek,
        ciphertext: &[u8],
        context: &[u8],
    ) -> Result<Plaintext> {
        let header = envelope::Header::parse(ciphertext)?;
        if header.key_id != kek.id() && !self.was_rotated_from(&kek.id(), &header.key_id).await {
            return Err(Error::KeyMismatch {
                expected: header.key_id,
                given: kek.id(),
            });
        }
        let dek = self.get(kek).await?;
        envelope::open(&*self.suite, &dek, context, ciphertext)
    }

    /// Whether a wrapped DEK is stored under `key_id` (the original key server's `key in keys`).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn contains(&self, key_id: &KeyId) -> Result<bool> {
        self.storage.contains(key_id).await
    }

    /// The number of stored keys.
    pub fn len(&self) -> u64 {
        self.storage.count()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The server's status: key count, version, backends, strength.
    pub fn status(&self) -> Status {
        Status {
            keys: self.len(),
            version: crate::VERSION.to_string(),
            suite: self.suite.name().to_string(),
            storage: self.storage.name().to_string(),
            strength: self.strength.bits(),
            kek_alg: self.kek_alg.name().to_string(),
            fips: self.suite.fips_validated(),
        }
    }
}

impl<C, S> fmt::Display for KeyServer<C, S>
where
    C: CipherSuite,
    S: KeyStorage,
{
    /// `<KeyServer (N)>` with N the number of stored keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<KeyServer ({})>", self.len())
    }
}

impl<C, S> fmt::Debug for KeyServer<C, S>
where
    C: CipherSuite,
    S: KeyStorage,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyServer")
            .field("suite", &self.suite.name())
            .field("storage", &self.storage.name())
            .field("strength", &self.strength)
            .field("kek_alg", &self.kek_alg)
            .field("keys", &self.len())
            .field("kek_pool", &self.kek_pool_capacity())
            .field("generate_limit", &self.generate_limit())
            .finish()
    }
}

#[async_trait]
impl<C: CipherSuite, S: KeyStorage> Encryption for KeyServer<C, S> {
    async fn generate(&self) -> Result<Kek> {
        KeyServer::generate(self).await
    }

    async fn get(&self, kek: &Kek) -> Result<Dek> {
        KeyServer::get(self, kek).await
    }

    async fn encrypt_with_context(
        &self,
        kek: &Kek,
        plaintext: &[u8],
        context: &[u8],
    ) -> Result<Vec<u8>> {
        KeyServer::encrypt_with_context(self, kek, plaintext, context).await
    }

    async fn decrypt_with_context(
        &self,
        kek: &Kek,
        ciphertext: &[u8],
        context: &[u8],
    ) -> Result<Plaintext> {
        KeyServer::decrypt_with_context(self, kek, ciphertext, context).await
    }
}

/// The wire API, answered by this server.
#[async_trait]
impl<C: CipherSuite, S: KeyStorage> KeyService for KeyServer<C, S> {
    async fn generate(&self, strength: Option<Strength>) -> Result<Kek> {
        match strength {
            Some(strength) => self.generate_with_strength(strength).await,
            None => KeyServer::generate(self).await,
        }
    }

    async fn generate_with_alg(
        &self,
        strength: Option<Strength>,
        alg: Option<KekAlg>,
    ) -> Result<Kek> {
        self.generate_with(
            strength.unwrap_or(self.strength),
            alg.unwrap_or(self.kek_alg),
        )
        .await
    }

    async fn get_key(&self, kek: &Kek) -> Result<Dek> {
        KeyServer::get(self, kek).await
    }

    async fn get_wrapped(&self, key_id: &KeyId) -> Result<WrappedDek> {
        KeyServer::get_wrapped(self, key_id).await
    }

    async fn contains(&self, key_id: &KeyId) -> Result<bool> {
        KeyServer::contains(self, key_id).await
    }

    async fn status(&self) -> Result<Status> {
        Ok(KeyServer::status(self))
    }

    async fn ready(&self) -> Result<()> {
        // The storage's own condition: it reads, and a sealed one's token
        // can be used.
        self.storage.ready().await
    }

    async fn describe(&self, key_id: &KeyId) -> Result<crate::KeyInfo> {
        KeyServer::describe(self, key_id).await
    }

    async fn rotate(&self, kek: &Kek, strength: Option<Strength>) -> Result<Kek> {
        self.rotate_for(kek, strength, &crate::api::Caller::local())
            .await
    }

    async fn change(
        &self,
        change: crate::Change,
        target: &crate::Target,
    ) -> Result<crate::KeyInfo> {
        self.change_state(change, target).await
    }

    async fn list_keys(&self, filter: &crate::KeyFilter) -> Result<crate::KeyPage> {
        KeyServer::list_keys(self, filter).await
    }

    async fn call_as(
        &self,
        caller: &crate::api::Caller,
        call: crate::api::Call,
    ) -> Result<crate::api::Reply> {
        use crate::api::{Call, Identity, Reply};
        // Cut off from its storage (as far as it knows), a server does
        // nothing and says so: "busy" promises nothing was done, so a
        // client of several servers sends the call, even a change, to
        // another one. `status` still answers.
        if !matches!(call, Call::Status) && !self.storage.reachable() {
            return Err(Error::Busy {
                reason: "this server cannot reach its storage now; nothing was done \
                         (another server of the same storage may answer)"
                    .into(),
            });
        }
        match call {
            // Served without the policy layers, a listener reachable from
            // other hosts without access control has no operators.
            Call::ListKeys(_) if caller.identity == (Identity::Anonymous { remote: true }) => {
                Err(Error::NotPermitted)
            }
            Call::Change(change, target) => Ok(Reply::Info(
                self.change_state_as(change, &target, caller.lifecycle)
                    .await?,
            )),
            Call::Generate(strength, alg) => {
                Ok(Reply::Kek(self.generate_for(strength, alg, caller).await?))
            }
            Call::Rotate(kek, strength) => {
                Ok(Reply::Kek(self.rotate_for(&kek, strength, caller).await?))
            }
            call => self.call(call).await,
        }
    }

    async fn sweep(&self, _caller: &crate::api::Caller) -> Result<Vec<KeyId>> {
        self.destroy_due_keys().await
    }

    fn gauges(&self) -> crate::api::Gauges {
        crate::api::Gauges {
            keys: self.storage.count(),
            kek_pool_ready: self.kek_pool_ready(),
            generate_running: self.generation.busy() as u64,
            generate_waiting: self.generation.waiting() as u64,
            records_unreadable: self.lifecycle.unreadable(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Failure injection with mockall mocks of the suite and the storage.

    use super::*;
    use crate::crypto::MockCipherSuite;
    use crate::storage::MockKeyStorage;
    use mockall::predicate::always;

    const KEK_3072: &str = include_str!("../../../testing/fixtures/kek-rsa3072.pem");

    fn fixture_kek() -> Kek {
        Kek::from_pem(KEK_3072).expect("fixture KEK parses") // ok: unit test fixture
    }

    fn record_for(kek: &Kek, strength: Strength) -> WrappedDek {
        WrappedDek::new(kek.id(), kek.bits(), strength, 0, vec![0; kek.bits() / 8])
            .expect("valid record") // ok: unit test fixture
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("runtime") // ok: unit test set-up
    }

    #[test]
    fn storage_failure_during_generate_hands_out_no_kek() {
        let kek = fixture_kek();
        let der = kek.pkcs8_der().to_vec();
        let mut suite = MockCipherSuite::new();
        suite
            .expect_generate_rsa()
            .with(mockall::predicate::eq(3072))
            .times(1)
            .returning(move |_| Ok(zeroize::Zeroizing::new(der.clone())));
        suite.expect_fill_random().returning(|buf| {
            buf.fill(7);
            Ok(())
        });
        suite
            .expect_rsa_oaep_wrap()
            .times(1)
            .returning(|_, _| Ok(vec![1; 384]));
        let mut storage = MockKeyStorage::new();
        storage.expect_keeps_lifecycle().return_const(false);
        let expected_id = kek.id();
        storage
            .expect_put()
            .withf(move |r| *r.key_id() == expected_id && r.strength() == Strength::S128)
            .times(1)
            .returning(|_| {
                Err(Error::storage(
                    "mock",
                    "writing record",
                    std::io::Error::other("disk full"),
                ))
            });
        storage.expect_count().return_const(0u64);

        let server = KeyServer::new(suite, storage);
        let result = runtime().block_on(server.generate());
        let err = result.expect_err("a failed put must not return a KEK");
        assert!(matches!(err, Error::Storage { .. }), "{err:?}");
        assert_eq!(err.code(), crate::error::codes::STORAGE);
        assert_eq!(server.to_string(), "<KeyServer (0)>");
    }

    #[test]
    fn duplicate_key_id_on_put_is_an_error_not_a_kek() {
        let kek = fixture_kek();
        let der = kek.pkcs8_der().to_vec();
        let mut suite = MockCipherSuite::new();
        suite
            .expect_generate_rsa()
            .returning(move |_| Ok(zeroize::Zeroizing::new(der.clone())));
        suite.expect_fill_random().returning(|_| Ok(()));
        suite
            .expect_rsa_oaep_wrap()
            .returning(|_, _| Ok(vec![1; 384]));
        let mut storage = MockKeyStorage::new();
        storage.expect_keeps_lifecycle().return_const(false);
        let id = kek.id();
        storage
            .expect_put()
            .returning(move |_| Err(Error::AlreadyExists { key_id: id }));
        let server = KeyServer::new(suite, storage);
        let err = runtime().block_on(server.generate()).unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { key_id } if key_id == id));
    }

    #[test]
    fn unwrap_failure_is_typed_and_names_the_key() {
        let kek = fixture_kek();
        let record = record_for(&kek, Strength::S128);
        let mut storage = MockKeyStorage::new();
        storage.expect_keeps_lifecycle().return_const(false);
        storage
            .expect_get()
            .with(mockall::predicate::eq(kek.id()))
            .times(1)
            .returning(move |_| Ok(record.clone()));
        let mut suite = MockCipherSuite::new();
        suite.expect_rsa_check_key_pair().returning(|_| Ok(()));
        suite
            .expect_rsa_oaep_unwrap()
            .with(always(), always())
            .times(1)
            .returning(|_, _| Err(Error::DecryptionFailed));
        let server = KeyServer::new(suite, storage);
        let err = runtime().block_on(server.get(&kek)).unwrap_err();
        assert!(
            matches!(err, Error::UnwrapFailed { key_id } if key_id == kek.id()),
            "{err:?}"
        );
        assert_eq!(err.code(), crate::error::codes::UNWRAP_FAILED);
    }

    #[test]
    fn an_inconsistent_kek_is_refused_before_unwrapping() {
        let kek = fixture_kek();
        let record = record_for(&kek, Strength::S128);
        let mut storage = MockKeyStorage::new();
        storage.expect_keeps_lifecycle().return_const(false);
        storage.expect_get().returning(move |_| Ok(record.clone()));
        let mut suite = MockCipherSuite::new();
        suite.expect_rsa_check_key_pair().times(1).returning(|_| {
            Err(Error::InvalidKey {
                reason: "the private key does not match its public key".into(),
            })
        });
        suite.expect_rsa_oaep_unwrap().times(0);
        let server = KeyServer::new(suite, storage);
        let err = runtime().block_on(server.get(&kek)).unwrap_err();
        assert!(matches!(err, Error::InvalidKey { .. }), "{err:?}");
    }

    /// `kek` with another private exponent: the same key id, another
    /// private key document (a forged private half).
    fn forged_twin(kek: &Kek) -> Kek {
        use der::{Decode, Encode};
        let info = pkcs8::PrivateKeyInfoRef::from_der(kek.pkcs8_der()).expect("PKCS#8"); // ok: unit test fixture
        let mut rsa =
            pkcs1::RsaPrivateKeyRef::from_der(info.private_key.as_bytes()).expect("PKCS#1"); // ok: unit test fixture
        rsa.private_exponent = der::asn1::UintRef::new(&[3]).expect("an integer"); // ok: unit test fixture
        let inner = rsa.to_der().expect("encodes"); // ok: unit test fixture
        let forged = pkcs8::PrivateKeyInfoRef::new(
            info.algorithm,
            der::asn1::OctetStringRef::new(&inner).expect("an octet string"), // ok: unit test fixture
        )
        .to_der()
        .expect("encodes"); // ok: unit test fixture
        Kek::from_pkcs8_der(&forged).expect("parses") // ok: unit test fixture
    }

    /// The key-pair check runs once per private key document: a second
    /// `get` with the same document skips it; another document under the
    /// same key id (a forged private half) is checked, every time, since a
    /// failed check is not remembered.
    #[test]
    fn the_key_pair_check_runs_once_per_document() {
        let kek = fixture_kek();
        let forged = forged_twin(&kek);
        assert_eq!(forged.id(), kek.id());
        assert_ne!(forged.fingerprint(), kek.fingerprint());
        let record = record_for(&kek, Strength::S128);
        let mut storage = MockKeyStorage::new();
        storage.expect_keeps_lifecycle().return_const(false);
        storage.expect_get().returning(move |_| Ok(record.clone()));
        let genuine = kek.pkcs8_der().to_vec();
        let mut suite = MockCipherSuite::new();
        suite
            .expect_rsa_check_key_pair()
            .times(3)
            .returning(move |der| {
                if der == genuine.as_slice() {
                    Ok(())
                } else {
                    Err(Error::InvalidKey {
                        reason: "the private key does not match its public key".into(),
                    })
                }
            });
        suite
            .expect_rsa_oaep_unwrap()
            .times(3)
            .returning(|_, _| Ok(zeroize::Zeroizing::new(vec![7; 16])));
        let server = KeyServer::new(suite, storage);
        runtime().block_on(async {
            for _ in 0..3 {
                server.get(&kek).await.expect("the genuine KEK"); // ok: unit test
            }
            for _ in 0..2 {
                let err = server.get(&forged).await.unwrap_err();
                assert!(matches!(err, Error::InvalidKey { .. }), "{err:?}");
            }
        });
        assert_eq!(server.checked.len(), 1);
    }

    /// `with_min_strength` restarts the KEK pool at the new key size: every
    /// pooled key `generate` hands out is of the new size.
    #[test]
    fn a_new_minimum_strength_restarts_the_kek_pool() {
        let k3072 = fixture_kek().pkcs8_der().to_vec();
        let k7680 = Kek::from_pem(include_str!("../../../testing/fixtures/kek-rsa7680.pem"))
            .expect("fixture") // ok: unit test fixture
            .pkcs8_der()
            .to_vec();
        let mut suite = MockCipherSuite::new();
        suite.expect_generate_rsa().returning(move |bits| {
            Ok(zeroize::Zeroizing::new(match bits {
                3072 => k3072.clone(),
                _ => k7680.clone(),
            }))
        });
        suite.expect_fill_random().returning(|_| Ok(()));
        suite
            .expect_rsa_oaep_wrap()
            .returning(|_, _| Ok(vec![1; 960]));
        let mut storage = MockKeyStorage::new();
        storage.expect_keeps_lifecycle().return_const(false);
        storage.expect_put().returning(|_| Ok(()));
        let server = KeyServer::new(suite, storage)
            .with_kek_pool(2, 2)
            .with_min_strength(Strength::S192);
        assert_eq!(server.kek_pool_capacity(), 2);
        let rt = runtime();
        for _ in 0..6 {
            let kek = rt.block_on(server.generate()).expect("generate"); // ok: test
            assert_eq!(kek.bits(), 7680);
        }
    }

    #[test]
    fn get_of_unknown_key_is_not_found() {
        let kek = fixture_kek();
        let mut storage = MockKeyStorage::new();
        storage.expect_keeps_lifecycle().return_const(false);
        storage
            .expect_get()
            .returning(|id| Err(Error::NotFound { key_id: *id }));
        let mut suite = MockCipherSuite::new();
        // The KEK proves itself first (a forged one learns nothing).
        suite
            .expect_rsa_check_key_pair()
            .times(1)
            .returning(|_| Ok(()));
        suite.expect_rsa_oaep_unwrap().times(0);
        let server = KeyServer::new(suite, storage);
        let err = runtime().block_on(server.get(&kek)).unwrap_err();
        assert!(matches!(err, Error::NotFound { key_id } if key_id == kek.id()));
        assert_eq!(err.code(), crate::error::codes::NOT_FOUND);
    }

    #[test]
    fn kek_weaker_than_its_dek_is_refused_before_unwrapping() {
        let kek = fixture_kek(); // RSA-3072: 128-bit strength
        let record = record_for(&kek, Strength::S256);
        let mut storage = MockKeyStorage::new();
        storage.expect_keeps_lifecycle().return_const(false);
        storage.expect_get().returning(move |_| Ok(record.clone()));
        let mut suite = MockCipherSuite::new();
        suite.expect_rsa_check_key_pair().returning(|_| Ok(()));
        suite.expect_rsa_oaep_unwrap().times(0);
        let server = KeyServer::new(suite, storage);
        let err = runtime().block_on(server.get(&kek)).unwrap_err();
        assert!(matches!(err, Error::Policy { .. }), "{err:?}");
        assert_eq!(err.code(), crate::error::codes::POLICY);
    }

    #[test]
    fn unwrapped_key_of_wrong_length_is_a_corrupt_record() {
        let kek = fixture_kek();
        let record = record_for(&kek, Strength::S128);
        let mut storage = MockKeyStorage::new();
        storage.expect_keeps_lifecycle().return_const(false);
        storage.expect_get().returning(move |_| Ok(record.clone()));
        let mut suite = MockCipherSuite::new();
        suite.expect_rsa_check_key_pair().returning(|_| Ok(()));
        suite
            .expect_rsa_oaep_unwrap()
            .returning(|_, _| Ok(zeroize::Zeroizing::new(vec![0; 5])));
        let server = KeyServer::new(suite, storage);
        let err = runtime().block_on(server.get(&kek)).unwrap_err();
        assert!(matches!(err, Error::CorruptRecord { .. }), "{err:?}");
    }

    #[test]
    fn generate_below_the_configured_strength_is_refused_without_work() {
        let mut suite = MockCipherSuite::new();
        suite.expect_generate_rsa().times(0);
        let mut storage = MockKeyStorage::new();
        storage.expect_keeps_lifecycle().return_const(false);
        storage.expect_put().times(0);
        let server = KeyServer::new(suite, storage).with_min_strength(Strength::S192);
        let err = runtime()
            .block_on(server.generate_with_strength(Strength::S128))
            .unwrap_err();
        assert!(matches!(err, Error::Policy { .. }));
    }

    #[test]
    fn a_strength_not_allowed_is_refused_without_work() {
        let mut suite = MockCipherSuite::new();
        suite.expect_generate_rsa().times(0);
        let mut storage = MockKeyStorage::new();
        storage.expect_keeps_lifecycle().return_const(false);
        storage.expect_put().times(0);
        let server = KeyServer::new(suite, storage).with_allowed_strengths(&[Strength::S128]);
        assert_eq!(server.allowed_strengths(), vec![Strength::S128]);
        for strength in [Strength::S192, Strength::S256] {
            let err = runtime()
                .block_on(server.generate_with_strength(strength))
                .unwrap_err();
            assert_eq!(err.code(), 4, "{err}");
            assert!(err.to_string().contains("allowed: 128"), "{err}");
        }
    }

    /// Key generation runs on at most `workers` threads with at most `queue`
    /// waiting; the next request is refused with code 12 at once. A worker
    /// whose request was abandoned stays busy until its key is made: the CPU
    /// spent never exceeds the workers, whatever callers do.
    #[test]
    fn key_generation_is_bounded_and_a_full_queue_is_busy() {
        use std::sync::mpsc;
        use std::sync::Mutex;
        let kek = fixture_kek();
        let der = kek.pkcs8_der().to_vec();
        let (started_tx, started) = mpsc::channel::<()>();
        let (release, release_rx) = mpsc::channel::<()>();
        let (started_tx, release_rx) = (Mutex::new(started_tx), Mutex::new(release_rx));
        let mut suite = MockCipherSuite::new();
        suite.expect_generate_rsa().returning(move |_| {
            started_tx.lock().unwrap().send(()).unwrap();
            release_rx.lock().unwrap().recv().unwrap();
            Ok(zeroize::Zeroizing::new(der.clone()))
        });
        suite.expect_fill_random().returning(|_| Ok(()));
        suite
            .expect_rsa_oaep_wrap()
            .returning(|_, _| Ok(vec![1; 384]));
        let mut storage = MockKeyStorage::new();
        storage.expect_keeps_lifecycle().return_const(false);
        storage.expect_put().returning(|_| Ok(()));
        let server = Arc::new(KeyServer::new(suite, storage).with_generate_limit(1, 0));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            // The one worker is taken; the request that took it is abandoned.
            let first = tokio::spawn({
                let server = Arc::clone(&server);
                async move { server.generate().await.map(|k| k.id()) }
            });
            started.recv().unwrap();
            first.abort();
            assert!(first.await.unwrap_err().is_cancelled());
            // The worker still makes its key: no room, and no queue.
            let err = server.generate().await.unwrap_err();
            assert!(matches!(err, Error::Busy { .. }), "{err:?}");
            assert_eq!(err.code(), 12);
            // Once the abandoned key is made, the worker serves again.
            release.send(()).unwrap();
            while server.generation.idle() == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            let next = tokio::spawn({
                let server = Arc::clone(&server);
                async move { server.generate().await.map(|k| k.id()) }
            });
            loop {
                match started.try_recv() {
                    Ok(()) => break,
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                }
            }
            release.send(()).unwrap();
            assert_eq!(next.await.unwrap().unwrap(), kek.id());
        });
    }

    #[test]
    fn runs_outside_a_tokio_runtime() {
        // Without a Tokio runtime the RSA work runs inline instead of panicking.
        let kek = fixture_kek();
        let mut storage = MockKeyStorage::new();
        storage.expect_keeps_lifecycle().return_const(false);
        storage
            .expect_get()
            .returning(|id| Err(Error::NotFound { key_id: *id }));
        let mut suite = MockCipherSuite::new();
        suite.expect_rsa_check_key_pair().returning(|_| Ok(()));
        let server = KeyServer::new(suite, storage);
        let err = futures_executor_block_on(server.get(&kek)).unwrap_err();
        assert_eq!(err.code(), 1);
    }

    /// A minimal single-future executor (no Tokio context).
    fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
        use std::task::{Context, Poll, Wake, Waker};
        struct Noop;
        impl Wake for Noop {
            fn wake(self: Arc<Self>) {}
        }
        let waker = Waker::from(Arc::new(Noop));
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }
}
