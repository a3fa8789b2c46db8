//! The [`Encryption`] trait: the original key server's `IEncryption`.

use async_trait::async_trait;

use crate::{Dek, Kek, Plaintext, Result};

/// Envelope encryption with split knowledge, locally or remotely.
///
/// Implemented by [`KeyServer`](crate::KeyServer) (and by the client), so code
/// written against `&dyn Encryption` runs unchanged either way.
///
/// # Errors
///
/// See each implementation; the common ones are
/// [`Error::NotFound`](crate::Error::NotFound) for an unknown KEK,
/// [`Error::UnwrapFailed`](crate::Error::UnwrapFailed),
/// [`Error::DecryptionFailed`](crate::Error::DecryptionFailed) for a tampered
/// ciphertext or wrong context.
///
/// # Example
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use keyserver::{Encryption, KeyServer};
/// use keyserver::backends::{MemoryStorage, RustCrypto};
///
/// async fn roundtrip(enc: &dyn Encryption) -> keyserver::Result<()> {
///     let kek = enc.generate().await?;
///     let sealed = enc.encrypt(&kek, b"Stephan Richter").await?;
///     assert_eq!(&enc.decrypt(&kek, &sealed).await?[..], b"Stephan Richter");
///     Ok(())
/// }
/// roundtrip(&KeyServer::new(RustCrypto::new(), MemoryStorage::new())).await
/// # }).unwrap();
/// ```
#[async_trait]
pub trait Encryption: Send + Sync {
    /// Creates a KEK and a DEK, stores the DEK wrapped under the KEK, and
    /// returns the KEK. Nobody else ever sees this KEK.
    async fn generate(&self) -> Result<Kek>;

    /// The DEK stored under this KEK.
    async fn get(&self, kek: &Kek) -> Result<Dek>;

    /// Encrypts `plaintext` under the DEK of `kek`, binding `context`
    /// (associated data that must be given again to decrypt).
    async fn encrypt_with_context(
        &self,
        kek: &Kek,
        plaintext: &[u8],
        context: &[u8],
    ) -> Result<Vec<u8>>;

    /// Decrypts a ciphertext made by `encrypt_with_context` with the same
    /// `context`.
    async fn decrypt_with_context(
        &self,
        kek: &Kek,
        ciphertext: &[u8],
        context: &[u8],
    ) -> Result<Plaintext>;

    /// [`Encryption::encrypt_with_context`] with an empty context.
    async fn encrypt(&self, kek: &Kek, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.encrypt_with_context(kek, plaintext, &[]).await
    }

    /// [`Encryption::decrypt_with_context`] with an empty context.
    async fn decrypt(&self, kek: &Kek, ciphertext: &[u8]) -> Result<Plaintext> {
        self.decrypt_with_context(kek, ciphertext, &[]).await
    }
}
