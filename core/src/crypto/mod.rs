//! What a cipher suite supplies, as small capability traits in the manner
//! of rustls's `crypto` module: [`Aead`] (AES-GCM), [`Kdf`] (HKDF),
//! [`SecureRandom`], and key wrapping per KEK algorithm ([`RsaKek`],
//! [`EcKek`], [`HybridKek`]). [`CipherSuite`] names the set a key server
//! needs: the first four always, the optional two when
//! [`CipherSuite::ec`] and [`CipherSuite::hybrid`] hand them out.
//!
//! A suite implements what its library has, and nothing it lacks: there is
//! no "unsupported" default to forget to override. Only where a caller
//! chooses at run time (a `generate` that asks for an EC KEK, a record of
//! a hybrid KEK) does the core turn an absent capability into a typed
//! policy error naming the suite ([`ec_kek`], [`hybrid_kek`]).
//!
//! A suite supplies primitives only; the core owns every format (KEK parsing
//! and [`KeyId`](crate::KeyId), the stored record, the ciphertext envelope).
//! So two suites cannot drift apart: given the same inputs they must produce
//! the same bytes, which the conformance kit (`keyserver::testing`) checks.

mod aead;
mod kdf;
mod kek;

pub use aead::{reserve_wiped, Aead, GcmKey, GCM_MAX_PLAINTEXT, GCM_NONCE_LEN, GCM_TAG_LEN};
pub use kdf::{HkdfHash, Kdf};
pub use kek::{EcKek, HybridKek, MlKem, RsaKek};

use crate::{Error, Result};

/// The error of a primitive a suite does not offer: a typed policy error
/// naming the suite, never a panic.
pub fn unsupported(suite: &str, what: &str) -> Error {
    Error::policy(format!("the {suite} cipher suite does not offer {what}"))
}

/// Random bytes from the operating system's CSPRNG (or a validated
/// module's DRBG seeded from it): every key, salt and nonce comes from
/// here.
pub trait SecureRandom: Send + Sync {
    /// Fills `buf` from the operating system's CSPRNG.
    ///
    /// # Errors
    /// [`Error::Crypto`] if the generator fails.
    fn fill_random(&self, buf: &mut [u8]) -> Result<()>;
}

impl<T: SecureRandom + ?Sized> SecureRandom for Box<T> {
    fn fill_random(&self, buf: &mut [u8]) -> Result<()> {
        (**self).fill_random(buf)
    }
}

/// A cipher suite: the capabilities a key server and its clients need,
/// from one library.
///
/// Required: [`Aead`], [`Kdf`], [`SecureRandom`] and [`RsaKek`], a name,
/// and nothing else. EC and hybrid KEKs are offered by overriding
/// [`ec`](CipherSuite::ec) and [`hybrid`](CipherSuite::hybrid) to return the
/// suite itself, which the compiler allows only if it implements the whole
/// capability.
///
/// The traits are synchronous (crypto is CPU-bound; the server moves the
/// slow RSA operations off the async runtime) and dyn-compatible:
/// `Box<dyn CipherSuite>` is a suite, so the `keyserver` command chooses
/// one at run time and still uses the generic APIs.
///
/// Why there is no `public_key_der` primitive: the public half of a KEK is
/// derived from the PKCS#8 structure by the core ([`Kek::public_key_der`]),
/// so the KeyId is defined in exactly one place and no suite can make a
/// different one.
///
/// Implementations: `RustCrypto` (feature `cipher-rustcrypto`; RSA, EC,
/// hybrid), `OpenSsl` (`cipher-openssl`; RSA, EC) and `AwsLc`
/// (`cipher-awslc`; RSA, EC, hybrid). `examples/metered_suite.rs` writes
/// one outside this crate.
///
/// [`Kek::public_key_der`]: crate::Kek::public_key_der
///
/// # Example
///
/// A suite that offers EC KEKs but not the hybrid ones:
///
/// ```
/// # {
/// use keyserver::crypto::{CipherSuite, EcKek, HybridKek};
/// use keyserver::backends::RustCrypto;
///
/// fn kek_algorithms(suite: &dyn CipherSuite) -> (bool, bool) {
///     (suite.ec().is_some(), suite.hybrid().is_some())
/// }
/// assert_eq!(kek_algorithms(&RustCrypto::new()), (true, true));
///
/// // Without the capability, the core's EC operations say so, typed.
/// let err = keyserver::crypto::hybrid_kek(&NoHybrid).map(drop).unwrap_err();
/// assert_eq!(err.code(), 4);
/// # struct NoHybrid;
/// # impl keyserver::crypto::Aead for NoHybrid {
/// #     fn aes_gcm_seal_in_place(&self, _: &[u8], _: &[u8; 12], _: &[u8], _: &mut [u8])
/// #         -> keyserver::Result<[u8; 16]> { unimplemented!() }
/// #     fn aes_gcm_open_in_place(&self, _: &[u8], _: &[u8; 12], _: &[u8], _: &mut [u8], _: &[u8; 16])
/// #         -> keyserver::Result<()> { unimplemented!() }
/// # }
/// # impl keyserver::crypto::Kdf for NoHybrid {
/// #     fn hkdf_extract(&self, _: keyserver::HkdfHash, _: &[u8], _: &[u8])
/// #         -> keyserver::Result<zeroize::Zeroizing<Vec<u8>>> { unimplemented!() }
/// #     fn hkdf_expand(&self, _: keyserver::HkdfHash, _: &[u8], _: &[u8], _: &mut [u8])
/// #         -> keyserver::Result<()> { unimplemented!() }
/// # }
/// # impl keyserver::crypto::SecureRandom for NoHybrid {
/// #     fn fill_random(&self, _: &mut [u8]) -> keyserver::Result<()> { unimplemented!() }
/// # }
/// # impl keyserver::crypto::RsaKek for NoHybrid {
/// #     fn generate_rsa(&self, _: usize) -> keyserver::Result<zeroize::Zeroizing<Vec<u8>>> { unimplemented!() }
/// #     fn rsa_oaep_wrap(&self, _: &[u8], _: &[u8]) -> keyserver::Result<Vec<u8>> { unimplemented!() }
/// #     fn rsa_check_key_pair(&self, _: &[u8]) -> keyserver::Result<()> { unimplemented!() }
/// #     fn rsa_oaep_unwrap(&self, _: &[u8], _: &[u8]) -> keyserver::Result<zeroize::Zeroizing<Vec<u8>>> { unimplemented!() }
/// # }
/// # impl CipherSuite for NoHybrid {
/// #     fn name(&self) -> &'static str { "no-hybrid" }
/// # }
/// # }
/// ```
pub trait CipherSuite: Aead + Kdf + SecureRandom + RsaKek + Send + Sync + 'static {
    /// A short stable name, such as `"rustcrypto"`.
    fn name(&self) -> &'static str;

    /// This suite's EC KEKs, if it has them: a suite that implements
    /// [`EcKek`] returns `Some(self)`. The default is `None`.
    fn ec(&self) -> Option<&dyn EcKek> {
        None
    }

    /// This suite's hybrid post-quantum KEKs, if it has them: a suite that
    /// implements [`HybridKek`] (and offers [`ec`](CipherSuite::ec), their
    /// classical half) returns `Some(self)`. The default is `None`.
    fn hybrid(&self) -> Option<&dyn HybridKek> {
        None
    }

    /// Whether this suite runs on a FIPS 140-3 validated cryptographic
    /// module in FIPS mode, as the module itself reports it (`status` says
    /// so, and `serve --require-fips` insists on it). It does not claim
    /// that every operation is one of the module's approved services
    /// (SECURITY.md says which are not). The default is `false`: only a
    /// suite that can prove it says `true`.
    fn fips_validated(&self) -> bool {
        false
    }
}

/// A boxed suite is a suite: choose the cipher suite at run time (the
/// `keyserver` command does) and still use the generic APIs.
impl<T: CipherSuite + ?Sized> CipherSuite for Box<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn ec(&self) -> Option<&dyn EcKek> {
        (**self).ec()
    }
    fn hybrid(&self) -> Option<&dyn HybridKek> {
        (**self).hybrid()
    }
    fn fips_validated(&self) -> bool {
        (**self).fips_validated()
    }
}

/// `suite`'s EC KEKs, or the typed policy error (code 4) that names the
/// suite and says it has none: what the core asks before any EC operation.
///
/// # Errors
/// [`Error::Policy`] if the suite has no EC KEKs.
pub fn ec_kek<C: CipherSuite + ?Sized>(suite: &C) -> Result<&dyn EcKek> {
    suite
        .ec()
        .ok_or_else(|| unsupported(suite.name(), "EC keys"))
}

/// `suite`'s hybrid KEKs (ML-KEM and SHA-3), or the typed policy error
/// (code 4) that names the suite and says it has none.
///
/// # Errors
/// [`Error::Policy`] if the suite has no hybrid KEKs.
pub fn hybrid_kek<C: CipherSuite + ?Sized>(suite: &C) -> Result<&dyn HybridKek> {
    suite
        .hybrid()
        .ok_or_else(|| unsupported(suite.name(), "ML-KEM (hybrid-pq KEKs)"))
}

#[cfg(any(test, feature = "mocks"))]
mockall::mock! {
    /// A mock [`CipherSuite`] (feature `mocks`): every required primitive
    /// and the provided AES-GCM and HKDF forms are expectations; it offers
    /// no EC or hybrid KEKs.
    pub CipherSuite {}

    impl Aead for CipherSuite {
        fn aes_gcm_seal_in_place(
            &self,
            key: &[u8],
            nonce: &[u8; GCM_NONCE_LEN],
            aad: &[u8],
            buf: &mut [u8],
        ) -> Result<[u8; GCM_TAG_LEN]>;
        fn aes_gcm_open_in_place(
            &self,
            key: &[u8],
            nonce: &[u8; GCM_NONCE_LEN],
            aad: &[u8],
            buf: &mut [u8],
            tag: &[u8; GCM_TAG_LEN],
        ) -> Result<()>;
        fn aes_gcm_seal_append(
            &self,
            key: &[u8],
            nonce: &[u8; GCM_NONCE_LEN],
            aad: &[u8],
            plaintext: &[u8],
            out: &mut Vec<u8>,
        ) -> Result<()>;
        fn aes_gcm_open_append(
            &self,
            key: &[u8],
            nonce: &[u8; GCM_NONCE_LEN],
            aad: &[u8],
            ciphertext: &[u8],
            tag: &[u8; GCM_TAG_LEN],
            out: &mut Vec<u8>,
        ) -> Result<()>;
        fn aes_gcm_prepare(&self, key: &[u8]) -> Result<Option<Box<dyn GcmKey>>>;
    }

    impl Kdf for CipherSuite {
        fn hkdf_extract(
            &self,
            hash: HkdfHash,
            salt: &[u8],
            ikm: &[u8],
        ) -> Result<zeroize::Zeroizing<Vec<u8>>>;
        fn hkdf_expand(
            &self,
            hash: HkdfHash,
            prk: &[u8],
            info: &[u8],
            okm: &mut [u8],
        ) -> Result<()>;
        fn hkdf_sha256(&self, ikm: &[u8], salt: &[u8], info: &[u8], okm: &mut [u8]) -> Result<()>;
    }

    impl SecureRandom for CipherSuite {
        fn fill_random(&self, buf: &mut [u8]) -> Result<()>;
    }

    impl RsaKek for CipherSuite {
        fn generate_rsa(&self, bits: usize) -> Result<zeroize::Zeroizing<Vec<u8>>>;
        fn rsa_oaep_wrap(&self, spki_der: &[u8], dek: &[u8]) -> Result<Vec<u8>>;
        fn rsa_check_key_pair(&self, pkcs8_der: &[u8]) -> Result<()>;
        fn rsa_oaep_unwrap(
            &self,
            pkcs8_der: &[u8],
            wrapped: &[u8],
        ) -> Result<zeroize::Zeroizing<Vec<u8>>>;
    }

    impl CipherSuite for CipherSuite {
        fn name(&self) -> &'static str;
        fn fips_validated(&self) -> bool;
    }
}
