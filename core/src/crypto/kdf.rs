//! HKDF (RFC 5869): the key derivation of the envelope formats (SHA-256)
//! and of HPKE (SHA-256, SHA-384, SHA-512).

use zeroize::Zeroizing;

use crate::Result;

/// The hash function of an HKDF (RFC 5869) call.
///
/// ```
/// assert_eq!(keyserver::HkdfHash::Sha384.len(), 48);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HkdfHash {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl HkdfHash {
    /// The digest (and pseudorandom key) length in bytes: 32, 48 or 64.
    #[allow(clippy::len_without_is_empty)]
    pub const fn len(self) -> usize {
        match self {
            HkdfHash::Sha256 => 32,
            HkdfHash::Sha384 => 48,
            HkdfHash::Sha512 => 64,
        }
    }
}
/// HKDF (RFC 5869) with the hashes of [`HkdfHash`].
///
/// Extract and expand are required; [`hkdf_sha256`](Kdf::hkdf_sha256), the
/// one-call form the envelope uses for every message, is provided on top of
/// them and a library with a one-call HKDF overrides it.
///
/// # Errors
/// [`Error::Crypto`](crate::Error::Crypto) for an output longer than 255
/// times the hash length; a policy error for a hash the library does not
/// have ([`HkdfHash`] may grow).
///
/// # Example
///
/// ```
/// # {
/// use keyserver::crypto::Kdf;
/// use keyserver::backends::RustCrypto;
///
/// // RFC 5869, test case 3 (no salt, no info).
/// let mut okm = [0u8; 42];
/// RustCrypto::new().hkdf_sha256(&[0x0b; 22], b"", b"", &mut okm)?;
/// assert_eq!(okm[..4], [0x8d, 0xa4, 0xe7, 0x75]);
/// # }
/// # Ok::<(), keyserver::Error>(())
/// ```
pub trait Kdf: Send + Sync {
    /// HKDF-Extract (RFC 5869 §2.2) with `hash`: the pseudorandom key of
    /// `ikm` under `salt` (an empty salt is `hash.len()` zero bytes).
    fn hkdf_extract(&self, hash: HkdfHash, salt: &[u8], ikm: &[u8]) -> Result<Zeroizing<Vec<u8>>>;

    /// HKDF-Expand (RFC 5869 §2.3) with `hash`: fills `okm` (at most 255
    /// times `hash.len()` bytes) from the pseudorandom key `prk` and `info`.
    fn hkdf_expand(&self, hash: HkdfHash, prk: &[u8], info: &[u8], okm: &mut [u8]) -> Result<()>;

    /// HKDF-SHA256 (RFC 5869): extract with `salt` from `ikm`, expand with
    /// `info` into `okm` (at most 255 * 32 bytes). Provided on top of
    /// [`hkdf_extract`](Kdf::hkdf_extract) and [`hkdf_expand`](Kdf::hkdf_expand).
    fn hkdf_sha256(&self, ikm: &[u8], salt: &[u8], info: &[u8], okm: &mut [u8]) -> Result<()> {
        let prk = self.hkdf_extract(HkdfHash::Sha256, salt, ikm)?;
        self.hkdf_expand(HkdfHash::Sha256, &prk, info, okm)
    }
}

/// A boxed KDF is a KDF, so `Box<dyn CipherSuite>` is a suite.
impl<T: Kdf + ?Sized> Kdf for Box<T> {
    fn hkdf_extract(&self, hash: HkdfHash, salt: &[u8], ikm: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        (**self).hkdf_extract(hash, salt, ikm)
    }
    fn hkdf_expand(&self, hash: HkdfHash, prk: &[u8], info: &[u8], okm: &mut [u8]) -> Result<()> {
        (**self).hkdf_expand(hash, prk, info, okm)
    }
    fn hkdf_sha256(&self, ikm: &[u8], salt: &[u8], info: &[u8], okm: &mut [u8]) -> Result<()> {
        (**self).hkdf_sha256(ikm, salt, info, okm)
    }
}
