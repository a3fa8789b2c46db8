//! Records sealed under a master key: [`Seal`], what holds the key (an HSM
//! through PKCS#11, the `keyserver-pkcs11` crate), and [`SealedStorage`],
//! the layer around any [`KeyStorage`] that seals every record it writes
//! and unseals every record it reads.
//!
//! Without a seal, a copy of the storage (a stolen disk, a database dump)
//! and a stolen KEK open the data. With one, they do not: every wrapped
//! DEK is encrypted once more, with AES-256-GCM, under a key that never
//! leaves the token, so the copy is also useless without the token (and
//! its PIN). Destroying the master key destroys every record sealed under
//! it at once (crypto-shredding).
//!
//! A sealed record is record version 2 ([`WrappedDek::seal`]): it names the
//! master key it is sealed under by an 8-byte reference, so a store can mix
//! records of several master keys (and unsealed records) while `keyserver
//! reseal` moves it from one to another, and every one of them reads.
//! What a seal sees is only the wrapped DEK, never a DEK or a KEK.
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use keyserver::backends::MemoryStorage;
//! use keyserver::seal::{Seal, SealedStorage};
//! use keyserver::{KeyStorage, WrappedDek};
//!
//! // `seal` is an HSM's master key in production (keyserver-pkcs11).
//! # let seal: Arc<dyn Seal> = Arc::new(keyserver::seal::MemorySeal::new(
//! #     Arc::new(keyserver::backends::RustCrypto::new()), [0x5e; 32]));
//! let store = SealedStorage::new(MemoryStorage::new(), seal);
//! # let id = keyserver::KeyId::from_bytes([3; 32]);
//! let record = WrappedDek::new(id, 3072, keyserver::Strength::S128, 0, vec![3; 384])?;
//! store.put(&record).await?;
//! assert!(store.inner().get(record.key_id()).await?.is_sealed()); // at rest
//! assert_eq!(store.get(record.key_id()).await?, record); // as served
//! # Ok::<(), keyserver::Error>(())
//! # }).unwrap();
//! ```

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::blocking::blocking;
use crate::storage::KeyLock;
use crate::{Error, KeyId, KeyMeta, KeyStorage, Result, WrappedDek};

/// The reference a sealed record gives of its master key: 8 bytes that
/// the seal maps to one of its keys (the PKCS#11 seal: the first 8 bytes
/// of SHA-256 over a label and the key object's `CKA_LABEL` and `CKA_ID`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SealKeyRef(pub [u8; 8]);

impl fmt::Display for SealKeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for SealKeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealKeyRef({self})")
    }
}

/// What holds the master keys: it encrypts and decrypts wrapped DEKs with
/// AES-256-GCM under a key it never gives out.
///
/// Calls may block (a network HSM); [`SealedStorage`] makes them on the
/// blocking thread pool.
///
/// # Errors
/// [`Error::DecryptionFailed`] when a ciphertext does not authenticate;
/// [`Error::Storage`] (backend `"seal"`, code 5) when the token cannot be
/// used (gone, logged out, the key named is not on it).
pub trait Seal: Send + Sync + 'static {
    /// What this seal is, for logs and errors (a token and key label; no
    /// secret).
    fn describe(&self) -> String;

    /// The key new records are sealed under.
    fn current_key(&self) -> SealKeyRef;

    /// Encrypts `plaintext` under `key` with AES-256-GCM and `aad`:
    /// returns a fresh random 96-bit nonce, the ciphertext and the 16-byte
    /// tag, in that order.
    fn encrypt(&self, key: SealKeyRef, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>>;

    /// Opens what [`Seal::encrypt`] made under `key`.
    fn decrypt(&self, key: SealKeyRef, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>>;

    /// Whether the seal can be used now (the token is there and the
    /// session logged in): for `/readyz`.
    fn check(&self) -> Result<()>;
}

/// A [`KeyStorage`] whose records are sealed at rest: every record written
/// through it is sealed under the seal's current master key, and every
/// record read through it is unsealed (an unsealed record, from before the
/// seal was turned on, is served as it is: a store can be sealed record by
/// record while it serves, with `keyserver reseal`).
///
/// Lifecycle metadata (state, owner, times) is not sealed: it holds nothing
/// secret, and the sweeper reads it without the token.
pub struct SealedStorage<S> {
    inner: S,
    seal: Arc<dyn Seal>,
}

impl<S> fmt::Debug for SealedStorage<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedStorage")
            .field("seal", &self.seal.describe())
            .finish_non_exhaustive()
    }
}

impl<S: KeyStorage> SealedStorage<S> {
    /// `inner` with its records sealed by `seal`.
    pub fn new(inner: S, seal: Arc<dyn Seal>) -> Self {
        SealedStorage { inner, seal }
    }

    /// The storage underneath, whose records are sealed.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The seal.
    pub fn seal(&self) -> &Arc<dyn Seal> {
        &self.seal
    }
}

/// `record` sealed by `seal`, on the blocking pool.
pub async fn seal_record(seal: &Arc<dyn Seal>, record: &WrappedDek) -> Result<WrappedDek> {
    let seal = Arc::clone(seal);
    let record = record.clone();
    blocking(move || record.seal(&*seal)).await?
}

/// `record` unsealed by `seal`, on the blocking pool (an unsealed record
/// is returned as it is, at no cost).
pub async fn unseal_record(seal: &Arc<dyn Seal>, record: WrappedDek) -> Result<WrappedDek> {
    if !record.is_sealed() {
        return Ok(record);
    }
    let seal = Arc::clone(seal);
    blocking(move || record.unseal(&*seal)).await?
}

#[async_trait]
impl<S: KeyStorage> KeyStorage for SealedStorage<S> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn put(&self, record: &WrappedDek) -> Result<()> {
        let sealed = seal_record(&self.seal, record).await?;
        self.inner.put(&sealed).await
    }

    async fn get(&self, key_id: &KeyId) -> Result<WrappedDek> {
        let record = self.inner.get(key_id).await?;
        unseal_record(&self.seal, record).await
    }

    async fn contains(&self, key_id: &KeyId) -> Result<bool> {
        self.inner.contains(key_id).await
    }

    fn count(&self) -> u64 {
        self.inner.count()
    }

    async fn delete(&self, key_id: &KeyId) -> Result<bool> {
        self.inner.delete(key_id).await
    }

    async fn list(&self) -> Result<Vec<KeyId>> {
        self.inner.list().await
    }

    fn keeps_lifecycle(&self) -> bool {
        self.inner.keeps_lifecycle()
    }

    async fn get_meta(&self, key_id: &KeyId) -> Result<Option<KeyMeta>> {
        self.inner.get_meta(key_id).await
    }

    async fn get_with_meta(&self, key_id: &KeyId) -> Result<(Option<WrappedDek>, Option<KeyMeta>)> {
        let (record, meta) = self.inner.get_with_meta(key_id).await?;
        let record = match record {
            Some(record) => Some(unseal_record(&self.seal, record).await?),
            None => None,
        };
        Ok((record, meta))
    }

    async fn put_meta(&self, meta: &KeyMeta) -> Result<()> {
        self.inner.put_meta(meta).await
    }

    async fn list_all(&self) -> Result<Vec<KeyId>> {
        self.inner.list_all().await
    }

    async fn lock_key(&self, key_id: &KeyId) -> Result<KeyLock> {
        self.inner.lock_key(key_id).await
    }

    async fn replace(&self, record: &WrappedDek) -> Result<()> {
        let sealed = seal_record(&self.seal, record).await?;
        self.inner.replace(&sealed).await
    }

    async fn try_lead(&self) -> Result<Option<Box<dyn crate::storage::Lease>>> {
        self.inner.try_lead().await
    }

    async fn put_new<'m>(
        &self,
        record: &WrappedDek,
        meta: Option<&'m KeyMeta>,
        max_keys: Option<u64>,
    ) -> Result<()> {
        let sealed = seal_record(&self.seal, record).await?;
        self.inner.put_new(&sealed, meta, max_keys).await
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

    async fn ready(&self) -> Result<()> {
        self.inner.ready().await?;
        let seal = Arc::clone(&self.seal);
        blocking(move || seal.check()).await?
    }
}

/// What [`reseal_all`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Keys looked at.
    pub examined: u64,
    /// Records rewritten.
    pub resealed: u64,
    /// Records that were already as wanted.
    pub already: u64,
    /// Keys whose record was gone (destroyed, or a tombstone) when reached.
    pub gone: u64,
}

/// Moves every record of `store` (the storage itself, not a
/// [`SealedStorage`] around it) under `to`'s current master key, or
/// unsealed if `to` is `None`. Sealed records are opened by `from`, or by
/// `to` if `from` is `None` (a seal opens the records of every master key
/// it holds, so moving between two keys of one token needs only `to`).
///
/// Each record is replaced in one step ([`KeyStorage::replace`]), so a
/// crash or a kill leaves every record readable, and running it again
/// resumes: records already as wanted are skipped. It may run while
/// servers use the store: a key destroyed meanwhile stays destroyed.
/// `progress` is called after every 1,000 keys and at the end.
///
/// # Errors
/// The first record that cannot be opened or written, naming the key; what
/// was done before it stays done.
pub async fn reseal_all<S: KeyStorage + ?Sized>(
    store: &S,
    from: Option<&Arc<dyn Seal>>,
    to: Option<&Arc<dyn Seal>>,
    mut progress: impl FnMut(&ResealReport),
) -> Result<ResealReport> {
    let mut report = ResealReport::default();
    let target = to.map(|seal| seal.current_key());
    let opener = from.or(to);
    for id in store.list().await? {
        report.examined += 1;
        let record = match store.get(&id).await {
            Ok(record) => record,
            Err(Error::NotFound { .. }) => {
                report.gone += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        if record.seal_key_ref() == target {
            report.already += 1;
        } else {
            let plain = match (record.is_sealed(), opener) {
                (false, _) => record,
                (true, Some(seal)) => unseal_record(seal, record).await?,
                (true, None) => return Err(record.sealed_error()),
            };
            let next = match to {
                Some(seal) => seal_record(seal, &plain).await?,
                None => plain,
            };
            match store.replace(&next).await {
                Ok(()) => report.resealed += 1,
                Err(Error::NotFound { .. }) => report.gone += 1,
                Err(e) => return Err(e),
            }
        }
        if report.examined % 1000 == 0 {
            progress(&report);
        }
    }
    progress(&report);
    Ok(report)
}

/// A seal whose master keys are AES-256 keys in this process's memory,
/// used through `suite`'s AES-GCM: for the tests and doc examples of code
/// around a seal, which must not need a token. It protects nothing (the
/// key is beside the data), so it is not offered anywhere else.
#[doc(hidden)]
pub struct MemorySeal {
    suite: Arc<dyn crate::CipherSuite>,
    keys: std::sync::Mutex<Vec<(SealKeyRef, Zeroizing<[u8; 32]>)>>,
    current: std::sync::Mutex<SealKeyRef>,
}

impl MemorySeal {
    /// A seal with one key, `key`, current.
    pub fn new(suite: Arc<dyn crate::CipherSuite>, key: [u8; 32]) -> Self {
        let id = Self::ref_of(&key);
        MemorySeal {
            suite,
            keys: std::sync::Mutex::new(vec![(id, Zeroizing::new(key))]),
            current: std::sync::Mutex::new(id),
        }
    }

    fn ref_of(key: &[u8; 32]) -> SealKeyRef {
        use sha2::{Digest, Sha256};
        let hash = Sha256::digest(key);
        let mut id = [0u8; 8];
        id.copy_from_slice(&hash[..8]);
        SealKeyRef(id)
    }

    /// Adds `key` and makes it current.
    pub fn rotate(&self, key: [u8; 32]) -> SealKeyRef {
        let id = Self::ref_of(&key);
        self.lock_keys().push((id, Zeroizing::new(key)));
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = id;
        id
    }

    /// Forgets `key` (its records no longer open).
    pub fn destroy(&self, key: SealKeyRef) {
        self.lock_keys().retain(|(id, _)| *id != key);
    }

    fn lock_keys(&self) -> std::sync::MutexGuard<'_, Vec<(SealKeyRef, Zeroizing<[u8; 32]>)>> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn key(&self, key: SealKeyRef) -> Result<Zeroizing<[u8; 32]>> {
        self.lock_keys()
            .iter()
            .find(|(id, _)| *id == key)
            .map(|(_, k)| k.clone())
            .ok_or_else(|| missing_key(key, "the test seal"))
    }
}

/// The error for a record sealed under a master key the seal does not
/// have (code 5: the store is fine, this server cannot read it).
pub fn missing_key(key: SealKeyRef, seal: &str) -> Error {
    Error::Storage {
        backend: "seal".into(),
        message: format!("master key {key} is not in {seal}"),
        source: None,
    }
}

impl Seal for MemorySeal {
    fn describe(&self) -> String {
        "a test seal in memory".into()
    }

    fn current_key(&self) -> SealKeyRef {
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn encrypt(&self, key: SealKeyRef, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let secret = self.key(key)?;
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|_| Error::Crypto {
            suite: "os",
            operation: "random nonce",
        })?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(
            &self
                .suite
                .aes_gcm_seal(&secret[..], &nonce, aad, plaintext)?,
        );
        Ok(out)
    }

    fn decrypt(&self, key: SealKeyRef, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let secret = self.key(key)?;
        if sealed.len() < 12 + 16 {
            return Err(Error::DecryptionFailed);
        }
        let (nonce, body) = sealed.split_at(12);
        let mut n = [0u8; 12];
        n.copy_from_slice(nonce);
        self.suite.aes_gcm_open(&secret[..], &n, aad, body)
    }

    fn check(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::test_backends::{MemoryStorage, RustCrypto};
    use crate::KeyServer;

    fn memory_seal(byte: u8) -> Arc<MemorySeal> {
        Arc::new(MemorySeal::new(Arc::new(RustCrypto::new()), [byte; 32]))
    }

    fn as_seal(seal: &Arc<MemorySeal>) -> Arc<dyn Seal> {
        Arc::clone(seal) as Arc<dyn Seal>
    }

    #[test]
    fn a_sealed_record_opens_only_as_it_was_sealed() {
        let seal = memory_seal(1);
        let record = WrappedDek::test_record(4);
        let sealed = record.seal(&*seal).unwrap();
        assert!(sealed.is_sealed());
        assert_eq!(sealed.seal_key_ref(), Some(seal.current_key()));
        assert_eq!(sealed.key_id(), record.key_id());
        assert_eq!(sealed.strength(), record.strength());
        assert_ne!(sealed.wrapped(), record.wrapped());
        // Through the byte format and back.
        let bytes = sealed.encode();
        assert_eq!(bytes[4], 2);
        let decoded = WrappedDek::decode(&bytes, record.key_id()).unwrap();
        assert_eq!(decoded.unseal(&*seal).unwrap(), record);
        // Sealing twice gives two nonces, and sealing a sealed record is a
        // no-op.
        assert_ne!(record.seal(&*seal).unwrap().wrapped(), sealed.wrapped());
        assert_eq!(sealed.seal(&*seal).unwrap(), sealed);
        // Every change of the bytes is found: by the checksum, and, with
        // the checksum made again (a deliberate edit), by the seal, the
        // header included (it is the seal's associated data).
        for i in 0..bytes.len() - 32 {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(WrappedDek::decode(&bad, record.key_id()).is_err());
            let body = &bad[..bad.len() - 32];
            let mut forged = body.to_vec();
            forged.extend_from_slice(&<sha2::Sha256 as sha2::Digest>::digest(body));
            if let Ok(edited) = WrappedDek::decode(&forged, record.key_id()) {
                let err = edited.unseal(&*seal).unwrap_err();
                assert!(
                    matches!(err, Error::CorruptRecord { .. } | Error::Storage { .. }),
                    "byte {i}: {err:?}"
                );
            }
        }
        // A KEK cannot use a sealed record: a typed error, code 5.
        let err = sealed.sealed_error();
        assert_eq!(err.code(), 5);
        assert!(err.to_string().contains("sealed under master key"));
    }

    #[tokio::test]
    async fn a_sealed_store_serves_keys_and_is_useless_without_its_master_key() {
        let seal = memory_seal(2);
        let raw = Arc::new(MemoryStorage::new());
        // One key from before the seal was turned on.
        let before = KeyServer::new(RustCrypto::new(), Arc::clone(&raw));
        let old = before.generate().await.unwrap();
        let old_dek = before.get(&old).await.unwrap();
        let sealed = SealedStorage::new(Arc::clone(&raw), as_seal(&seal));
        let server = KeyServer::new(RustCrypto::new(), sealed);
        let kek = server.generate().await.unwrap();
        let dek = server.get(&kek).await.unwrap();
        // At rest the new record is sealed, the old one not yet; both serve.
        assert!(raw.get(&kek.id()).await.unwrap().is_sealed());
        assert!(!raw.get(&old.id()).await.unwrap().is_sealed());
        assert_eq!(
            server.get(&old).await.unwrap().as_bytes(),
            old_dek.as_bytes()
        );
        assert!(!server.get_wrapped(&kek.id()).await.unwrap().is_sealed());
        assert!(crate::KeyService::ready(&server).await.is_ok());
        // The store and the KEK without the master key: nothing.
        let thief = KeyServer::new(RustCrypto::new(), Arc::clone(&raw));
        for err in [
            thief.get(&kek).await.unwrap_err(),
            thief.get_wrapped(&kek.id()).await.unwrap_err(),
        ] {
            assert_eq!(err.code(), 5, "{err}");
            assert!(err.to_string().contains("sealed"), "{err}");
        }
        // Destroying the master key shreds every record sealed under it.
        seal.destroy(seal.current_key());
        let fresh = KeyServer::new(
            RustCrypto::new(),
            SealedStorage::new(Arc::clone(&raw), as_seal(&seal)),
        );
        let err = fresh.get(&kek).await.unwrap_err();
        assert_eq!(err.code(), 5);
        assert!(err.to_string().contains("is not in"), "{err}");
        assert_eq!(dek.as_bytes().len(), 16);
    }

    /// A storage whose `replace` fails after `left` successes: a crash in
    /// the middle of a reseal.
    struct Failing {
        inner: Arc<MemoryStorage>,
        left: AtomicU32,
    }

    #[async_trait]
    impl KeyStorage for Failing {
        fn name(&self) -> &'static str {
            "failing"
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
            self.inner.delete(key_id).await
        }
        async fn list(&self) -> Result<Vec<KeyId>> {
            self.inner.list().await
        }
        async fn replace(&self, record: &WrappedDek) -> Result<()> {
            if self
                .left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_err()
            {
                return Err(Error::Storage {
                    backend: "failing".into(),
                    message: "the disk went away".into(),
                    source: None,
                });
            }
            self.inner.replace(record).await
        }
    }

    #[tokio::test]
    async fn reseal_moves_every_record_resumes_after_a_crash_and_can_unseal() {
        let seal = memory_seal(3);
        let raw = Arc::new(MemoryStorage::new());
        let plain_server = KeyServer::new(RustCrypto::new(), Arc::clone(&raw));
        let mut keks = Vec::new();
        for _ in 0..12 {
            keks.push(plain_server.generate().await.unwrap());
        }
        let deks: Vec<_> = {
            let mut v = Vec::new();
            for kek in &keks {
                v.push(plain_server.get(kek).await.unwrap().as_bytes().to_vec());
            }
            v
        };
        let reads_all = |seal: Arc<dyn Seal>| {
            let raw = Arc::clone(&raw);
            let keks = keks.clone();
            let deks = deks.clone();
            async move {
                let server = KeyServer::new(RustCrypto::new(), SealedStorage::new(raw, seal));
                for (kek, dek) in keks.iter().zip(&deks) {
                    assert_eq!(server.get(kek).await.unwrap().as_bytes(), &dek[..]);
                }
            }
        };
        // From none to key A, killed after 5 records: every record reads.
        let failing = Failing {
            inner: Arc::clone(&raw),
            left: AtomicU32::new(5),
        };
        let err = reseal_all(&failing, None, Some(&as_seal(&seal)), |_| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("disk went away"));
        reads_all(as_seal(&seal)).await;
        // Run again: it resumes, rewriting only what is left.
        let report = reseal_all(&*raw, None, Some(&as_seal(&seal)), |_| {})
            .await
            .unwrap();
        assert_eq!(
            (report.examined, report.resealed, report.already),
            (12, 7, 5)
        );
        for kek in &keks {
            assert_eq!(
                raw.get(&kek.id()).await.unwrap().seal_key_ref(),
                Some(seal.current_key())
            );
        }
        // From key A to key B of the same seal; then A can go.
        let a = seal.current_key();
        let b = seal.rotate([4; 32]);
        let report = reseal_all(&*raw, None, Some(&as_seal(&seal)), |_| {})
            .await
            .unwrap();
        assert_eq!(report.resealed, 12);
        seal.destroy(a);
        reads_all(as_seal(&seal)).await;
        assert!(keks
            .iter()
            .all(|k| futures_ready(raw.get(&k.id())).seal_key_ref() == Some(b)));
        // A destroyed key stays destroyed; back to unsealed.
        assert!(raw.delete(&keks[0].id()).await.unwrap());
        let report = reseal_all(&*raw, Some(&as_seal(&seal)), None, |_| {})
            .await
            .unwrap();
        assert_eq!((report.examined, report.resealed), (11, 11));
        assert!(!raw.contains(&keks[0].id()).await.unwrap());
        for kek in &keks[1..] {
            assert!(!raw.get(&kek.id()).await.unwrap().is_sealed());
        }
        // Without a seal, a sealed store cannot be unsealed: named.
        let sealed_again = memory_seal(9);
        reseal_all(&*raw, None, Some(&as_seal(&sealed_again)), |_| {})
            .await
            .unwrap();
        let err = reseal_all(&*raw, None, None, |_| {}).await.unwrap_err();
        assert!(err.to_string().contains("sealed"), "{err}");
    }

    /// The value of a future that is ready at once (the memory storage's).
    fn futures_ready<T>(f: impl std::future::Future<Output = Result<T>>) -> T {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v.unwrap(),
            std::task::Poll::Pending => panic!("not ready"),
        }
    }

    /// A seal that cannot be used (the token was pulled).
    struct Pulled;

    impl Seal for Pulled {
        fn describe(&self) -> String {
            "a pulled token".into()
        }
        fn current_key(&self) -> SealKeyRef {
            SealKeyRef([7; 8])
        }
        fn encrypt(&self, _: SealKeyRef, _: &[u8], _: &[u8]) -> Result<Vec<u8>> {
            Err(missing_key(SealKeyRef([7; 8]), "a pulled token"))
        }
        fn decrypt(&self, _: SealKeyRef, _: &[u8], _: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
            Err(missing_key(SealKeyRef([7; 8]), "a pulled token"))
        }
        fn check(&self) -> Result<()> {
            Err(Error::Storage {
                backend: "seal".into(),
                message: "the token is not present".into(),
                source: None,
            })
        }
    }

    #[tokio::test]
    async fn without_its_token_a_sealed_server_is_not_ready_and_writes_nothing() {
        let raw = Arc::new(MemoryStorage::new());
        let server = KeyServer::new(
            RustCrypto::new(),
            SealedStorage::new(Arc::clone(&raw), Arc::new(Pulled)),
        );
        let err = crate::KeyService::ready(&server).await.unwrap_err();
        assert!(err.to_string().contains("not present"), "{err}");
        let err = server.generate().await.unwrap_err();
        assert_eq!(err.code(), 5, "{err}");
        assert_eq!(raw.count(), 0, "nothing is written unsealed");
    }
}
