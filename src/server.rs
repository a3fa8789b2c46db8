//! [`KeyServer`]: the key server composed of a cipher suite and a storage.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::blocking;
use crate::envelope;
use crate::key::{check_kek, check_pairing};
use crate::{
    CipherSuite, Dek, Encryption, Error, Kek, KeyId, KeyStorage, Plaintext, Result, Status,
    Strength, WrappedDek,
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
/// # #[cfg(all(feature = "cipher-rustcrypto", feature = "storage-memory"))]
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
    suite: Arc<C>,
    storage: S,
    strength: Strength,
}

impl<C: CipherSuite, S: KeyStorage> KeyServer<C, S> {
    /// A key server at the default strength (128 bits: RSA-3072 wrapping
    /// AES-128-GCM).
    pub fn new(suite: C, storage: S) -> Self {
        KeyServer {
            suite: Arc::new(suite),
            storage,
            strength: Strength::default(),
        }
    }

    /// Sets the strength new keys are generated at, which is also the lowest
    /// strength this server accepts.
    ///
    /// ```
    /// # #[cfg(all(feature = "cipher-rustcrypto", feature = "storage-memory"))] {
    /// use keyserver::{KeyServer, Strength};
    /// use keyserver::backends::{MemoryStorage, RustCrypto};
    ///
    /// let keys = KeyServer::new(RustCrypto::new(), MemoryStorage::new())
    ///     .with_strength(Strength::S192);
    /// assert_eq!(keys.strength(), Strength::S192);
    /// # }
    /// ```
    pub fn with_strength(mut self, strength: Strength) -> Self {
        self.strength = strength;
        self
    }

    /// The configured strength.
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

    /// The seed workflow: make a KEK pair of `strength`, make a random DEK,
    /// wrap the DEK with the KEK's public half, store only the wrapped DEK
    /// under the KEK's id, and return the private KEK. The KEK is returned
    /// only once the record is stored.
    ///
    /// # Errors
    /// [`Error::Policy`] if `strength` is below the configured strength;
    /// [`Error::Crypto`] if key generation fails; any storage error from the
    /// `put` (then no KEK is handed out).
    pub async fn generate_with_strength(&self, strength: Strength) -> Result<Kek> {
        if strength < self.strength {
            return Err(Error::policy(format!(
                "strength {strength} is below this server's minimum of {}",
                self.strength
            )));
        }
        let bits = strength.rsa_bits();
        let suite = Arc::clone(&self.suite);
        let kek = blocking(move || {
            let der = suite.generate_rsa(bits)?;
            Kek::from_pkcs8_der(&der)
        })
        .await??;
        check_pairing(kek.bits(), strength)?;

        let mut dek = zeroize::Zeroizing::new(vec![0u8; strength.aes_key_len()]);
        self.suite.fill_random(&mut dek)?;
        let wrapped = self.suite.rsa_oaep_wrap(kek.public_key_der(), &dek)?;
        drop(dek);
        // The public half is not kept: only the wrapped DEK is stored.
        let record = WrappedDek::new(kek.id(), kek.bits(), strength, WrappedDek::now(), wrapped)?;
        self.storage.put(&record).await?;
        Ok(kek)
    }

    /// The DEK stored under `kek`, unwrapped with it (server-side unwrap).
    ///
    /// # Errors
    /// [`Error::NotFound`] if no record is stored under `kek.id()`;
    /// [`Error::Policy`] if the KEK is weaker than the DEK or the configured
    /// strength; [`Error::UnwrapFailed`] if it does not open the record;
    /// storage errors as they come.
    pub async fn get(&self, kek: &Kek) -> Result<Dek> {
        let record = self.storage.get(&kek.id()).await?;
        self.unwrap_record(kek, record).await
    }

    /// The stored record under `key_id`, for client-side unwrap.
    ///
    /// # Errors
    /// [`Error::NotFound`] and storage errors.
    pub async fn get_wrapped(&self, key_id: &KeyId) -> Result<WrappedDek> {
        self.storage.get(key_id).await
    }

    async fn unwrap_record(&self, kek: &Kek, record: WrappedDek) -> Result<Dek> {
        let key_id = kek.id();
        check_kek(kek, record.strength(), self.strength)?;
        let suite = Arc::clone(&self.suite);
        let kek = kek.clone();
        let dek = blocking(move || suite.rsa_oaep_unwrap(kek.pkcs8_der(), record.wrapped()))
            .await?
            .map_err(|e| match e {
                Error::DecryptionFailed => Error::UnwrapFailed { key_id },
                other => other,
            })?;
        let dek = Dek::from_zeroizing(dek).map_err(|_| Error::CorruptRecord {
            key_id,
            reason: "unwrapped key has the wrong length",
        })?;
        Ok(dek)
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
        let dek = self.get(kek).await?;
        envelope::seal(&*self.suite, &kek.id(), &dek, context, plaintext)
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
        if header.key_id != kek.id() {
            return Err(Error::KeyMismatch {
                expected: header.key_id,
                given: kek.id(),
            });
        }
        let dek = self.get(kek).await?;
        envelope::open(&*self.suite, &dek, context, ciphertext)
    }

    /// Whether a wrapped DEK is stored under `key_id` (the seed's `key in keys`).
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
            .field("keys", &self.len())
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

#[cfg(test)]
mod tests {
    //! Failure injection with mockall mocks of the suite and the storage.

    use super::*;
    use crate::storage::MockKeyStorage;
    use crate::suite::MockCipherSuite;
    use mockall::predicate::always;

    const KEK_3072: &str = include_str!("../tests/fixtures/kek-rsa3072.pem");

    fn fixture_kek() -> Kek {
        Kek::from_pem(KEK_3072).expect("fixture KEK parses")
    }

    fn record_for(kek: &Kek, strength: Strength) -> WrappedDek {
        WrappedDek::new(kek.id(), kek.bits(), strength, 0, vec![0; kek.bits() / 8])
            .expect("valid record")
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("runtime")
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
        storage
            .expect_get()
            .with(mockall::predicate::eq(kek.id()))
            .times(1)
            .returning(move |_| Ok(record.clone()));
        let mut suite = MockCipherSuite::new();
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
    fn get_of_unknown_key_is_not_found() {
        let kek = fixture_kek();
        let mut storage = MockKeyStorage::new();
        storage
            .expect_get()
            .returning(|id| Err(Error::NotFound { key_id: *id }));
        let mut suite = MockCipherSuite::new();
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
        storage.expect_get().returning(move |_| Ok(record.clone()));
        let mut suite = MockCipherSuite::new();
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
        storage.expect_get().returning(move |_| Ok(record.clone()));
        let mut suite = MockCipherSuite::new();
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
        storage.expect_put().times(0);
        let server = KeyServer::new(suite, storage).with_strength(Strength::S192);
        let err = runtime()
            .block_on(server.generate_with_strength(Strength::S128))
            .unwrap_err();
        assert!(matches!(err, Error::Policy { .. }));
    }

    #[test]
    fn runs_outside_a_tokio_runtime() {
        // Without a Tokio runtime the RSA work runs inline instead of panicking.
        let kek = fixture_kek();
        let mut storage = MockKeyStorage::new();
        storage
            .expect_get()
            .returning(|id| Err(Error::NotFound { key_id: *id }));
        let server = KeyServer::new(MockCipherSuite::new(), storage);
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
